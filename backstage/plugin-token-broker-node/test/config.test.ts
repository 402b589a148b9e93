/** readTokenBrokerConfig: where the broker's URL comes from, and the keys it reads. */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { test } from 'node:test';

import type { DiscoveryService, RootConfigService } from '@backstage/backend-plugin-api';

import { readTokenBrokerConfig } from '../src';
import { REPO } from './support';

const { ConfigReader } = createRequire(join(REPO, 'tests', 'backstage', 'package.json'))(
  '@backstage/config',
) as { ConfigReader: new (data: unknown) => RootConfigService };

const asked: string[] = [];
const discovery: DiscoveryService = {
  async getBaseUrl(pluginId: string) {
    asked.push(pluginId);
    return `http://discovered/${pluginId}/`;
  },
  async getExternalBaseUrl(pluginId: string) {
    return `http://external/${pluginId}`;
  },
};

async function base(o: ReturnType<typeof readTokenBrokerConfig>): Promise<string> {
  return typeof o.baseUrl === 'string' ? o.baseUrl : o.baseUrl();
}

test('tokenBroker.baseUrl wins over discovery', async () => {
  asked.length = 0;
  const o = readTokenBrokerConfig(
    new ConfigReader({ tokenBroker: { baseUrl: 'http://broker:8080/' } }),
    discovery,
  );
  assert.equal(await base(o), 'http://broker:8080');
  assert.deepEqual(asked, []);
});

test('without it: discovery for plugin token-broker, or tokenBroker.pluginId', async () => {
  asked.length = 0;
  assert.equal(await base(readTokenBrokerConfig(new ConfigReader({}), discovery)), 'http://discovered/token-broker/');
  const o = readTokenBrokerConfig(
    new ConfigReader({ tokenBroker: { pluginId: 'tb', userTokenHeader: 'X-Kc', requestTimeoutMs: 500, reuse: { enabled: false, marginSeconds: 5, maxEntries: 7 } } }),
    discovery,
  );
  assert.equal(await base(o), 'http://discovered/tb/');
  assert.deepEqual(asked, ['token-broker', 'tb']);
  assert.equal(o.pluginId, 'tb');
  assert.equal(o.userTokenHeader, 'X-Kc');
  assert.equal(o.requestTimeoutMs, 500);
  assert.deepEqual(o.reuse, { enabled: false, marginSeconds: 5, maxEntries: 7 });
});

test('a baseUrl that is not an http(s) URL is refused at start', () => {
  for (const bad of ['broker:8080', 'not a url', 'ftp://broker']) {
    assert.throws(
      () => readTokenBrokerConfig(new ConfigReader({ tokenBroker: { baseUrl: bad } }), discovery),
      /tokenBroker\.baseUrl/,
    );
  }
});
