/**
 * The library against the real parts (support.ts): a real Backstage backend whose test plugin
 * injects `tokenBrokerServiceRef`, the real broker binary and the dev IdP.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { DefaultTokenBrokerService, TokenBrokerError } from '../src';
import {
  claims,
  freePort,
  keycloakToken,
  startBackstage,
  startBroker,
  type Backstage,
  type Broker,
} from './support';

const unhandled: unknown[] = [];
const onUnhandled = (e: unknown) => unhandled.push(e);
process.on('unhandledRejection', onUnhandled);
process.on('uncaughtException', onUnhandled);

let broker: Broker;
let bs: Backstage;

before(async () => {
  const port = await freePort();
  broker = await startBroker(`http://127.0.0.1:${port}`);
  // No tokenBroker.baseUrl: the broker is found through discovery as plugin `token-broker`.
  bs = await startBackstage(port, {}, broker.url);
});

after(async () => {
  await bs?.stop();
  await broker?.stop();
});

function aud(jwt: string): string[] {
  const a = claims(jwt).aud;
  return Array.isArray(a) ? (a as string[]) : [String(a)];
}

/** Awaits `p`, which must reject with a TokenBrokerError; returns it. */
async function refused(p: Promise<unknown>): Promise<TokenBrokerError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof TokenBrokerError, `not a TokenBrokerError: ${String(e)}`);
    return e;
  }
  assert.fail('expected a TokenBrokerError');
}

/** A GET of the test plugin's /token route with a user's Backstage token, like a browser's. */
async function routeToken(user: string, target: string) {
  const res = await fetch(`${bs.url}/api/nodelib/token?target=${target}`, {
    headers: { authorization: `Bearer ${await bs.userToken(user)}` },
  });
  const body = (await res.json()) as Record<string, string>;
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

describe('getToken', () => {
  test('as alice (the request of a plugin route): her kagenti-api token, identity user', async () => {
    const t = await routeToken('alice', 'kagenti');
    assert.equal(t.identity, 'user');
    assert.equal(claims(t.token).preferred_username, 'alice');
    assert.ok(aud(t.token).includes('kagenti-api'), String(aud(t.token)));
    assert.ok(Date.parse(t.expiresAt) > Date.now() + 60_000, t.expiresAt);
    assert.ok(['hit', 'miss', 'coalesced', 'reused'].includes(t.cache), t.cache);
  });

  test("with alice's Keycloak token: the broker's V2 exchange of that token", async () => {
    const kc = await keycloakToken('alice');
    const t = await bs.plugin.tokenBroker.getToken({
      target: 'kagenti',
      credentials: await bs.userCredentials('alice'),
      keycloakToken: kc,
    });
    assert.equal(t.identity, 'user');
    const c = claims(t.token);
    assert.equal(c.preferred_username, 'alice');
    // An exchange keeps the subject of the token it exchanged.
    assert.equal(c.sub, claims(kc).sub);
    assert.ok(aud(t.token).includes('kagenti-api'));
  });

  test('as the plugin itself: the service account where the target allows it', async () => {
    const t = await bs.plugin.tokenBroker.getToken({
      target: 'kagenti',
      credentials: await bs.plugin.auth.getOwnServiceCredentials(),
    });
    assert.equal(t.identity, 'service');
    assert.equal(claims(t.token).preferred_username, 'service-account-token-broker');
    assert.ok(aud(t.token).includes('kagenti-api'));
  });

  test('as the plugin itself where the target does not allow it: typed 401 with the hint', async () => {
    const e = await refused(
      bs.plugin.tokenBroker.getToken({
        target: 'sonataflow',
        credentials: await bs.plugin.auth.getOwnServiceCredentials(),
      }),
    );
    assert.equal(e.status, 401);
    assert.equal(e.error, 'invalid_request');
    assert.match(e.description, /sonataflow/);
    assert.match(e.hint ?? '', /user's Keycloak access token/);
    assert.equal(e.target, 'sonataflow');
    assert.equal(e.retryable, false);
    assert.doesNotMatch(e.message, /eyJ/, 'no token in the message');
  });

  test("bob never gets alice's token: interleaved, through the route and with reuse", async () => {
    const users = ['alice', 'bob', 'alice', 'bob', 'bob', 'alice', 'alice', 'bob'];
    // Through the plugin route, all at once (the broker coalesces, the library reuses).
    const viaRoute = await Promise.all(users.map(u => routeToken(u, 'kagenti')));
    // In process, with fresh credentials each time, also all at once.
    const direct = await Promise.all(
      users.map(async u =>
        bs.plugin.tokenBroker.getToken({
          target: 'kagenti',
          credentials: await bs.userCredentials(u),
        }),
      ),
    );
    for (const [i, u] of users.entries()) {
      assert.equal(claims(viaRoute[i].token).preferred_username, u, `route call ${i}`);
      assert.equal(claims(direct[i].token).preferred_username, u, `direct call ${i}`);
    }
    const aliceTokens = new Set(direct.filter((_, i) => users[i] === 'alice').map(t => t.token));
    const bobTokens = new Set(direct.filter((_, i) => users[i] === 'bob').map(t => t.token));
    for (const t of aliceTokens) assert.ok(!bobTokens.has(t));
    // Sequential: the second call of each user is served from the in-process reuse, with the
    // same token as the first; the other user's call in between changes nothing.
    const a1 = await bs.plugin.tokenBroker.getToken({
      target: 'kagenti',
      credentials: await bs.userCredentials('alice'),
    });
    const b1 = await bs.plugin.tokenBroker.getToken({
      target: 'kagenti',
      credentials: await bs.userCredentials('bob'),
    });
    const a2 = await bs.plugin.tokenBroker.getToken({
      target: 'kagenti',
      credentials: await bs.userCredentials('alice'),
    });
    const b2 = await bs.plugin.tokenBroker.getToken({
      target: 'kagenti',
      credentials: await bs.userCredentials('bob'),
    });
    assert.equal(a2.cache, 'reused');
    assert.equal(b2.cache, 'reused');
    assert.equal(a2.token, a1.token);
    assert.equal(b2.token, b1.token);
    assert.notEqual(a1.token, b1.token);
    assert.equal(claims(b2.token).preferred_username, 'bob');
    // The plugin as itself never gets a user's reused token either.
    const svc = await bs.plugin.tokenBroker.getToken({
      target: 'kagenti',
      credentials: await bs.plugin.auth.getOwnServiceCredentials(),
    });
    assert.equal(svc.identity, 'service');
    assert.ok(svc.token !== a1.token && svc.token !== b1.token);
  });

  test('reuse is per target, and ends before expiresAt', async () => {
    const credentials = await bs.userCredentials('alice');
    const noReuse = new DefaultTokenBrokerService({
      auth: bs.plugin.auth,
      logger: bs.plugin.logger,
      baseUrl: broker.url,
      // The dev IdP's tokens live 300 s: a margin above that ends reuse at once.
      reuse: { marginSeconds: 301 },
    });
    await noReuse.getToken({ target: 'kagenti', credentials });
    assert.notEqual((await noReuse.getToken({ target: 'kagenti', credentials })).cache, 'reused');

    const reusing = new DefaultTokenBrokerService({
      auth: bs.plugin.auth,
      logger: bs.plugin.logger,
      baseUrl: broker.url,
    });
    const k = await reusing.getToken({ target: 'kagenti', credentials });
    // Same user, another target (no user mapping there: the service-account fallback).
    const other = await reusing.getToken({ target: 'dead-upstream', credentials });
    assert.notEqual(other.cache, 'reused', 'another target is another entry');
    assert.equal(other.identity, 'service');
    const again = await reusing.getToken({ target: 'kagenti', credentials });
    assert.equal(again.cache, 'reused');
    assert.equal(again.token, k.token);
    assert.equal(again.identity, 'user');
  });
});

describe('fetch (proxy mode)', () => {
  test('reaches the dev echo upstream with the downstream token, not the Backstage one', async () => {
    const res = await bs.plugin.tokenBroker.fetch(
      'kagenti',
      '/agents/list?limit=2',
      { headers: { accept: 'application/json', 'x-not-forwarded': '1' } },
      { credentials: await bs.userCredentials('alice') },
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-token-broker-identity'), 'user');
    const echo = (await res.json()) as {
      method: string;
      path: string;
      query: string;
      headers: Record<string, string>;
    };
    assert.equal(echo.method, 'GET');
    assert.equal(echo.path, '/agents/list');
    assert.equal(echo.query, 'limit=2');
    const auth = echo.headers.authorization ?? '';
    assert.match(auth, /^Bearer /);
    const c = claims(auth.slice('Bearer '.length));
    assert.equal(c.preferred_username, 'alice');
    assert.equal(c.iss, 'http://127.0.0.1:7080/realms/dev');
    assert.ok(aud(auth.slice(7)).includes('kagenti-api'));
    assert.equal(echo.headers['x-not-forwarded'], undefined);
  });

  test('a streamed request body is sent (Node needs duplex: half for it)', async () => {
    const chunks = ['{"a":', '1}'];
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        const c = chunks.shift();
        if (c === undefined) controller.close();
        else controller.enqueue(new TextEncoder().encode(c));
      },
    });
    const res = await bs.plugin.tokenBroker.fetch(
      'kagenti',
      'upload',
      { method: 'POST', body, headers: { 'content-type': 'application/json' } },
      { credentials: await bs.userCredentials('alice') },
    );
    assert.equal(res.status, 200);
    const echo = (await res.json()) as { method: string; path: string };
    assert.deepEqual([echo.method, echo.path], ['POST', '/upload']);
  });

  test('an SSE stream arrives event by event', async () => {
    const t0 = Date.now();
    const res = await bs.plugin.tokenBroker.fetch(
      'kagenti',
      'stream',
      { headers: { accept: 'text/event-stream' } },
      { credentials: await bs.userCredentials('bob') },
    );
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.ok(res.body);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const seen: { event: string; at: number }[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      let i;
      while ((i = text.indexOf('\n\n')) >= 0) {
        seen.push({ event: text.slice(0, i).trim(), at: Date.now() - t0 });
        text = text.slice(i + 2);
      }
    }
    assert.deepEqual(
      seen.map(s => s.event),
      ['data: 1', 'data: 2', 'data: 3'],
    );
    // The upstream writes them 300 ms apart: buffered, they would arrive together.
    assert.ok(seen[1].at - seen[0].at >= 200, JSON.stringify(seen));
    assert.ok(seen[2].at - seen[1].at >= 200, JSON.stringify(seen));
  });

  test("the broker's own refusals are typed errors; upstream answers are not", async () => {
    const svc = await bs.plugin.auth.getOwnServiceCredentials();
    let e = await refused(bs.plugin.tokenBroker.fetch('sonataflow', 'x', undefined, { credentials: svc }));
    assert.equal(e.status, 401);
    assert.match(e.hint ?? '', /user's Keycloak access token/);
    e = await refused(bs.plugin.tokenBroker.fetch('dead-upstream', 'x', undefined, { credentials: svc }));
    assert.equal(e.status, 502);
    assert.equal(e.error, 'upstream_unavailable');
    e = await refused(bs.plugin.tokenBroker.fetch('no-such-target', 'x', undefined, { credentials: svc }));
    assert.equal(e.status, 404);
    // A path the broker refuses (matrix parameters are off by default, docs/proxy.md).
    e = await refused(bs.plugin.tokenBroker.fetch('kagenti', 'a;b/c', undefined, { credentials: svc }));
    assert.equal(e.status, 400);
    assert.equal(e.error, 'invalid_request');
    // An upstream's own error status is the caller's to handle: returned, not thrown.
    const res = await bs.plugin.tokenBroker.fetch('kagenti', 'x', { method: 'DELETE' }, { credentials: svc });
    assert.equal(res.headers.get('x-token-broker-identity'), 'service');
  });
});

describe('errors', () => {
  test('broker down: broker_unreachable, retryable, no status', async () => {
    const tb = new DefaultTokenBrokerService({
      auth: bs.plugin.auth,
      logger: bs.plugin.logger,
      baseUrl: `http://127.0.0.1:${await freePort()}`,
    });
    const credentials = await bs.userCredentials('alice');
    let e = await refused(tb.getToken({ target: 'kagenti', credentials }));
    assert.equal(e.error, 'broker_unreachable');
    assert.equal(e.status, undefined);
    assert.equal(e.retryable, true);
    assert.match(e.hint ?? '', /tokenBroker\.baseUrl/);
    e = await refused(tb.fetch('kagenti', 'x', undefined, { credentials }));
    assert.equal(e.error, 'broker_unreachable');
  });

  test("502 from Keycloak's refusal: typed, with idp_status and the broker's hint", async () => {
    // A second broker (serve) at the same dev IdP whose client secret is wrong: Keycloak
    // answers 401 invalid_client, which the broker reports as 502.
    const wrong = await startBroker(bs.url, { serve: true, clientSecret: 'not-the-secret' });
    try {
      const tb = new DefaultTokenBrokerService({
        auth: bs.plugin.auth,
        logger: bs.plugin.logger,
        baseUrl: wrong.url,
      });
      const e = await refused(
        tb.getToken({ target: 'kagenti', credentials: await bs.plugin.auth.getOwnServiceCredentials() }),
      );
      assert.equal(e.status, 502, e.message);
      assert.equal(e.idpStatus, 401);
      assert.match(e.hint ?? '', /keycloak\.clientSecret/);
    } finally {
      await wrong.stop();
    }
  });

  test("400 from Keycloak with the broker's hint (the user's token, an unknown audience)", async () => {
    const e = await refused(
      bs.plugin.tokenBroker.getToken({
        target: 'unknown-audience',
        credentials: await bs.userCredentials('alice'),
        keycloakToken: await keycloakToken('alice'),
      }),
    );
    assert.equal(e.status, 400, e.message);
    assert.equal(e.idpStatus, 400);
    assert.match(e.hint ?? '', /targets\.<name>\.audience/);
  });

  test("401 for a plugin token the broker does not accept (wrong plugin id)", async () => {
    const tb = new DefaultTokenBrokerService({
      auth: bs.plugin.auth,
      logger: bs.plugin.logger,
      baseUrl: broker.url,
      pluginId: 'not-the-broker',
    });
    const e = await refused(
      tb.getToken({ target: 'kagenti', credentials: await bs.userCredentials('alice') }),
    );
    assert.equal(e.status, 401);
    assert.equal(e.error, 'invalid_client');
  });

  test('a URL that is not the broker: invalid_broker_response', async () => {
    const tb = new DefaultTokenBrokerService({
      auth: bs.plugin.auth,
      logger: bs.plugin.logger,
      baseUrl: `${bs.url}/api/nodelib`,
    });
    const credentials = await bs.userCredentials('alice');
    const e = await refused(tb.getToken({ target: 'kagenti', credentials }));
    // Backstage's own 401 JSON (the plugin token is not for `nodelib`), not an RFC 6749 one.
    assert.equal(e.error, 'invalid_broker_response');
    assert.equal(e.status, 401);
    const f = await refused(tb.fetch('kagenti', 'x', undefined, { credentials }));
    assert.equal(f.error, 'invalid_broker_response');
  });

  test('credentials that name nobody: credentials_not_usable', async () => {
    const none = await bs.plugin.auth.getNoneCredentials();
    const e = await refused(bs.plugin.tokenBroker.getToken({ target: 'kagenti', credentials: none }));
    assert.equal(e.error, 'credentials_not_usable');
  });

  test('no unhandled rejection or exception in this process', async () => {
    // Let pending microtasks and timers of the calls above run first.
    await new Promise(r => setTimeout(r, 100));
    assert.deepEqual(unhandled, []);
  });
});
