// Lint: ESLint's recommended rules and typescript-eslint's strict set (syntax only, no type
// information: fast, and `tsc --noEmit` already type-checks).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/'] },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    files: ['**/*.mjs'],
    languageOptions: { globals: { console: 'readonly', process: 'readonly' } },
  },
  {
    rules: {
      'no-console': 'error',
    },
  },
);
