/** What `npm pack` would publish: the built files, README, LICENSE (and package.json). */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const PKG = join(__dirname, '..', '..');

test('npm pack contains only dist/*.js, dist/*.d.ts, README.md, LICENSE, package.json', () => {
  assert.ok(existsSync(join(PKG, 'dist', 'index.js')), 'build first: npm run build');
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: PKG,
    encoding: 'utf8',
  });
  const [packed] = JSON.parse(out) as [{ files: { path: string }[] }];
  const files = packed.files.map(f => f.path).sort();
  const unexpected = files.filter(
    f =>
      !/^dist\/[a-z0-9-]+\.(js|d\.ts)$/.test(f) &&
      !['README.md', 'LICENSE', 'package.json'].includes(f),
  );
  assert.deepEqual(unexpected, []);
  for (const must of ['dist/index.js', 'dist/index.d.ts', 'README.md', 'LICENSE', 'package.json']) {
    assert.ok(files.includes(must), `${must} missing from ${files.join(', ')}`);
  }
});
