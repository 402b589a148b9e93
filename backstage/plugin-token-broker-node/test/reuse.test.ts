/** The reuse key and map alone (no real parts needed). */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { BackstageCredentials } from '@backstage/backend-plugin-api';

import { ReuseMap, reuseKey } from '../src/reuse';

function creds(principal: unknown): BackstageCredentials {
  return { $$type: '@backstage/BackstageCredentials', principal };
}
const alice = creds({ type: 'user', userEntityRef: 'user:default/alice' });
const bob = creds({ type: 'user', userEntityRef: 'user:default/bob' });
const svc = creds({ type: 'service', subject: 'plugin:catalog' });

test('keys differ per user, principal kind, target, scope and Keycloak token', () => {
  const keys = [
    reuseKey(alice, 'kagenti', undefined, undefined),
    reuseKey(bob, 'kagenti', undefined, undefined),
    reuseKey(creds({ type: 'service', subject: 'user:default/alice' }), 'kagenti', undefined, undefined),
    reuseKey(svc, 'kagenti', undefined, undefined),
    reuseKey(alice, 'sonataflow', undefined, undefined),
    reuseKey(alice, 'kagenti', 'read', undefined),
    reuseKey(alice, 'kagenti', undefined, 'kc-token-1'),
    reuseKey(alice, 'kagenti', undefined, 'kc-token-2'),
  ];
  assert.equal(new Set(keys).size, keys.length);
  assert.equal(reuseKey(alice, 'kagenti', undefined, undefined), keys[0]);
});

test('no key for credentials that name nobody', () => {
  assert.equal(reuseKey(creds({ type: 'none' }), 'kagenti', undefined, undefined), undefined);
  assert.equal(reuseKey(creds({ type: 'user' }), 'kagenti', undefined, undefined), undefined);
  assert.equal(reuseKey(creds(undefined), 'kagenti', undefined, undefined), undefined);
});

test('keys hold no token or entity ref in clear', () => {
  const k = reuseKey(alice, 'kagenti', undefined, 'secret-keycloak-token') ?? '';
  assert.doesNotMatch(k, /alice|secret|kagenti/);
});

test('entries end at their deadline and the map stays bounded', () => {
  let now = 1000;
  const m = new ReuseMap<string>(2, () => now);
  m.set('a', 'A', 2000);
  m.set('b', 'B', 3000);
  assert.equal(m.get('a'), 'A');
  now = 2000;
  assert.equal(m.get('a'), undefined, 'expired at its deadline');
  m.set('c', 'C', 5000);
  m.set('d', 'D', 5000);
  assert.equal(m.size, 2);
  assert.equal(m.get('b'), undefined, 'oldest evicted');
  assert.equal(m.get('d'), 'D');
  m.set('e', 'E', now); // already over: not kept
  assert.equal(m.get('e'), undefined);
});
