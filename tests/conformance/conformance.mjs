// TEST-ONLY: the conformance table of the dev IdP against a real Keycloak (README "Against a
// real Keycloak", docs/dev-idp.md "Conformance"). One scenario table, run against both servers,
// compared field by field: HTTP status, `error`, `error_description`, and in issued tokens `aud`,
// `azp`, `sub`, `scope`, `typ`, lifetime (`exp - iat`), plus the response's `issued_token_type`,
// `token_type`, `expires_in`, `scope` and whether a refresh token came back.
//
// Node.js >= 20, built-ins only. Normally run through `scripts/conformance`, which starts both
// servers first; on its own it expects:
//   Keycloak main  http://127.0.0.1:7180/realms/dev   (scripts/keycloak start)
//   Keycloak v1    http://127.0.0.1:7280/realms/dev   (the V1 instance, for impersonation)
//   dev IdP        http://127.0.0.1:7080/realms/dev   (token-broker dev)
//   dev IdP v1     http://127.0.0.1:7380/realms/dev   (token-broker-devidp --v1: the V1 scenarios)
//   dev IdP short  http://127.0.0.1:7381/realms/dev   (token-broker-devidp --access-token-lifespan 1:
//                  the expired subject token)
//   broker JWKS    http://127.0.0.1:7070/.well-known/jwks.json, publishing the public half of
//                  --assertion-key (the identity provider of the JWT authorization grant)
//
// Usage: node tests/conformance/conformance.mjs --assertion-key FILE [--only REGEX]
//        [--server NAME | --pair A,B] [--ignore FIELD] [--results FILE] [--known FILE] [--markdown]
//        [--list]
// Servers: keycloak (default pair keycloak,dev-idp), dev-idp, keycloak-steps (realm `steps` built
// by tests/conformance/setup-steps.sh from docs/keycloak-setup.md).
// Prints `SCENARIO agree|differ: <what differs>` per scenario and last `conformance: N/M agree`;
// exits 1 when a difference is not in the known list (tests/conformance/known-differences.json).

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

const TE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const RT = 'urn:ietf:params:oauth:token-type:refresh_token';
const IDT = 'urn:ietf:params:oauth:token-type:id_token';
const BROKER = ['token-broker', 'token-broker-dev-secret'];
const BROKER_JWKS = 'http://127.0.0.1:7070/.well-known/jwks.json';
const ASSERTION_ISSUER = 'http://127.0.0.1:7070';
const KEYCLOAK_ADMIN = ['admin', 'admin'];

// ---------------------------------------------------------------------------------------------
// The servers.

const SERVERS = {
  keycloak: { name: 'keycloak', base: 'http://127.0.0.1:7180', realm: 'dev', v1Base: 'http://127.0.0.1:7280', admin: true },
  // The dev IdP of `token-broker dev` has V1 off (as Keycloak main): like Keycloak, the V1
  // scenarios go to a second server, `token-broker-devidp --v1`; a third one, whose tokens live
  // 1 s, stands in for Keycloak's temporary short-lived client.
  'dev-idp': { name: 'dev-idp', base: 'http://127.0.0.1:7080', realm: 'dev', v1Base: 'http://127.0.0.1:7380', shortLivedBase: 'http://127.0.0.1:7381', admin: false },
  // The realm built by following docs/keycloak-setup.md (tests/conformance/setup-steps.sh).
  'keycloak-steps': { name: 'keycloak-steps', base: 'http://127.0.0.1:7180', realm: 'steps', v1Base: 'http://127.0.0.1:7280', admin: true },
};

/** A scenario cannot be set up on this server (not a wire answer). */
class SetupGap extends Error {}

// ---------------------------------------------------------------------------------------------
// Helpers.

const b64u = (buf) => Buffer.from(buf).toString('base64url');

function decodeJwt(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return null;
  }
}

/** RFC 6749 §2.3.1: id and secret form-urlencoded, then Basic. */
function basic(id, secret) {
  const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
  return 'Basic ' + Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64');
}

function signEs256(claims, { key, kid }) {
  const header = { alg: 'ES256', typ: 'JWT', kid };
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}`;
  const sig = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64u(sig)}`;
}

const now = () => Math.floor(Date.now() / 1000);
const sortScope = (s) => s.split(' ').filter(Boolean).sort().join(' ');

/** Seconds-valued fields may be off by the second boundary the two answers straddled. */
const TOLERANT = new Set(['expires_in', 'token.lifetime']);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What a token-endpoint answer is compared on. */
function observe(status, body) {
  const o = { status };
  const b = body && typeof body === 'object' ? body : {};
  for (const k of ['error', 'error_description', 'token_type', 'issued_token_type', 'expires_in', 'scope']) {
    if (b[k] !== undefined) o[k] = b[k];
  }
  // Keycloak lists scopes in an order that depends on the installation (the same realm file gave
  // "profile email" on one server and "email profile" on another): compare them as sets.
  if (typeof o.scope === 'string') o.scope = sortScope(o.scope);
  if (b.id_token !== undefined) o.id_token = true;
  if (b.access_token !== undefined) o.refresh_token = b.refresh_token !== undefined;
  const claims = decodeJwt(b.access_token);
  if (claims) {
    const aud = claims.aud === undefined ? null : [].concat(claims.aud).sort();
    o.token = {
      aud,
      azp: claims.azp ?? null,
      sub: claims.sub ?? null,
      scope: typeof claims.scope === 'string' ? sortScope(claims.scope) : null,
      typ: claims.typ ?? null,
      lifetime: typeof claims.exp === 'number' && typeof claims.iat === 'number' ? claims.exp - claims.iat : null,
    };
  }
  return o;
}

/** Field-by-field comparison: the list of differing field paths. */
function diff(a, b, prefix = '') {
  const out = [];
  const keys = new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})]);
  for (const k of [...keys].sort()) {
    const va = a?.[k];
    const vb = b?.[k];
    const p = prefix ? `${prefix}.${k}` : k;
    if (va && vb && typeof va === 'object' && typeof vb === 'object' && !Array.isArray(va) && !Array.isArray(vb)) {
      out.push(...diff(va, vb, p));
    } else if (TOLERANT.has(p) && typeof va === 'number' && typeof vb === 'number' && Math.abs(va - vb) <= 2) {
      continue;
    } else if (JSON.stringify(va) !== JSON.stringify(vb)) {
      out.push({ field: p, a: va, b: vb });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Per-server context handed to the scenarios.

function context(server, opts) {
  // V1 scenarios always use realm dev of the V1 server.
  const realmUrl = (v1) => (v1 ? `${server.v1Base}/realms/dev` : `${server.base}/realms/${server.realm}`);
  const ctx = {
    server,
    issuer: (v1 = false) => realmUrl(v1),
    tokenUrl: (v1 = false) => `${realmUrl(v1)}/protocol/openid-connect/token`,
    /** POST to the token endpoint; `auth`: ['basic', id, secret] | ['post', id, secret?] | null. */
    async post(params, { auth = ['basic', ...BROKER], v1 = false, realm } = {}) {
      const form = new URLSearchParams();
      const pairs = Array.isArray(params) ? params : Object.entries(params);
      for (const [k, v] of pairs) if (v !== undefined) form.append(k, v);
      const headers = { 'content-type': 'application/x-www-form-urlencoded' };
      if (auth?.[0] === 'basic') headers.authorization = basic(auth[1], auth[2]);
      if (auth?.[0] === 'post') {
        form.append('client_id', auth[1]);
        if (auth[2] !== undefined) form.append('client_secret', auth[2]);
      }
      const url = realm
        ? `${v1 ? server.v1Base : server.base}/realms/${realm}/protocol/openid-connect/token`
        : ctx.tokenUrl(v1);
      const res = await fetch(url, { method: 'POST', headers, body: form });
      const text = await res.text();
      let body = null;
      try {
        body = JSON.parse(text);
      } catch {
        body = text ? { raw: text.slice(0, 200) } : null;
      }
      return { status: res.status, body };
    },
    /** A user's access token from the password grant (direct access grants). */
    async userToken({ client = 'dev-frontend', user = 'alice', password, v1 = false } = {}) {
      const r = await ctx.post(
        { grant_type: 'password', username: user, password: password ?? user },
        { auth: ['post', client], v1 },
      );
      if (r.status !== 200 || !r.body?.access_token) {
        throw new SetupGap(`password grant for ${user} via ${client} failed: ${r.status} ${JSON.stringify(r.body)}`);
      }
      return r.body.access_token;
    },
    exchange(subjectToken, extra = {}, opts2 = {}) {
      return ctx.post(
        { grant_type: TE, subject_token: subjectToken, subject_token_type: AT, ...extra },
        opts2,
      );
    },
    /** The broker's assertion as src/broker/assertion.rs builds it (RFC 7523 §3). */
    assertion(overrides = {}, { signer = opts.signer } = {}) {
      const t = now();
      const claims = {
        iss: ASSERTION_ISSUER,
        sub: 'user:default/alice',
        aud: ctx.issuer(),
        iat: t,
        nbf: t,
        exp: t + 120,
        jti: crypto.randomUUID(),
        ...overrides,
      };
      for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
      return signEs256(claims, signer);
    },
    jwtGrant(assertion, extra = {}, opts2 = {}) {
      return ctx.post({ grant_type: JWT_BEARER, assertion, ...extra }, opts2);
    },
    /** Keycloak admin REST (only on Keycloak). */
    async admin(method, p, body, { v1 = false } = {}) {
      if (!server.admin) throw new SetupGap('the dev IdP has no admin API');
      const base = v1 ? server.v1Base : server.base;
      const tok = await fetch(`${base}/realms/master/protocol/openid-connect/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'password', client_id: 'admin-cli', username: KEYCLOAK_ADMIN[0], password: KEYCLOAK_ADMIN[1] }),
      }).then((r) => r.json());
      const res = await fetch(`${base}/admin/realms/${v1 ? 'dev' : server.realm}${p}`, {
        method,
        headers: { authorization: `Bearer ${tok.access_token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (!res.ok) throw new Error(`admin ${method} ${p}: ${res.status} ${await res.text()}`);
      const text = await res.text();
      return text ? JSON.parse(text) : null;
    },
  };
  return ctx;
}

// ---------------------------------------------------------------------------------------------
// The scenario table: one source of truth for both servers.

const SCENARIOS = [
  // --- the subject token itself (password grant at the frontend client)
  {
    id: 'password_grant_frontend',
    title: 'alice logs in at dev-frontend (the subject token of every exchange)',
    run: async (c) => c.post({ grant_type: 'password', username: 'alice', password: 'alice' }, { auth: ['post', 'dev-frontend'] }),
  },
  {
    id: 'password_grant_no_audience_client',
    title: 'alice logs in at dev-frontend-no-audience (aud lacks the broker)',
    run: async (c) => c.post({ grant_type: 'password', username: 'alice', password: 'alice' }, { auth: ['post', 'dev-frontend-no-audience'] }),
  },
  {
    id: 'password_grant_wrong_password',
    title: 'password grant with a wrong password',
    run: async (c) => c.post({ grant_type: 'password', username: 'alice', password: 'nope' }, { auth: ['post', 'dev-frontend'] }),
  },

  // --- standard token exchange V2: success
  {
    id: 'v2_success_kagenti',
    title: 'V2 exchange, audience kagenti-api, client_secret_basic',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api' }),
  },
  {
    id: 'v2_success_sonataflow_post',
    title: 'V2 exchange, audience sonataflow, client_secret_post',
    run: async (c) => c.exchange(await c.userToken({ user: 'bob' }), { audience: 'sonataflow' }, { auth: ['post', ...BROKER] }),
  },
  {
    id: 'v2_success_no_audience_param',
    title: 'V2 exchange without audience (every audience of the requester)',
    run: async (c) => c.exchange(await c.userToken()),
  },
  {
    id: 'v2_success_two_audiences',
    title: 'V2 exchange with audience kagenti-api and sonataflow',
    run: async (c) => c.exchange(await c.userToken(), [['audience', 'kagenti-api'], ['audience', 'sonataflow']]),
  },
  {
    id: 'v2_success_openid_scope',
    title: 'V2 exchange with scope=openid (an id_token comes along)',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api', scope: 'openid' }),
  },

  // --- V2 refusals
  {
    id: 'v2_audience_not_available',
    title: 'audience is a client, but not an audience of the requester',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'dev-frontend' }),
  },
  {
    id: 'v2_audience_not_found',
    title: 'audience is not a client of the realm',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'no-such-client' }),
  },
  {
    id: 'v2_requester_not_in_subject_aud',
    title: "subject token without the broker in aud (dev-frontend-no-audience)",
    run: async (c) => c.exchange(await c.userToken({ client: 'dev-frontend-no-audience' }), { audience: 'kagenti-api' }),
  },
  {
    id: 'v2_subject_expired',
    title: 'expired subject token',
    run: async (c, _o, opts) => {
      if (!c.server.admin) {
        // The dev IdP whose tokens live 1 s: log in, let the token expire, exchange it there.
        const s = context({ ...c.server, base: c.server.shortLivedBase }, opts);
        const token = await s.userToken();
        const exp = decodeJwt(token).exp;
        while (now() <= exp) await sleep(250);
        await sleep(1100);
        return s.exchange(token, { audience: 'kagenti-api' });
      }
      // A temporary public client whose tokens live 1 s (the realm keeps no trace of it).
      const rep = {
        clientId: 'conformance-short-lived',
        publicClient: true,
        standardFlowEnabled: false,
        directAccessGrantsEnabled: true,
        attributes: { 'access.token.lifespan': '1' },
        protocolMappers: [{
          name: 'audience token-broker', protocol: 'openid-connect', protocolMapper: 'oidc-audience-mapper',
          config: { 'included.client.audience': 'token-broker', 'access.token.claim': 'true' },
        }],
      };
      const existing = await c.admin('GET', '/clients?clientId=conformance-short-lived');
      for (const e of existing) await c.admin('DELETE', `/clients/${e.id}`);
      await c.admin('POST', '/clients', rep);
      let token;
      try {
        token = await c.userToken({ client: 'conformance-short-lived' });
      } finally {
        for (const e of await c.admin('GET', '/clients?clientId=conformance-short-lived')) {
          await c.admin('DELETE', `/clients/${e.id}`);
        }
      }
      const exp = decodeJwt(token).exp;
      while (now() <= exp) await sleep(250);
      await sleep(1100);
      return c.exchange(token, { audience: 'kagenti-api' });
    },
  },
  {
    id: 'v2_subject_tampered',
    title: 'subject token with a changed payload (signature no longer matches)',
    run: async (c) => {
      const [h, p, s] = (await c.userToken()).split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url'));
      claims.sub = 'a90b98dd-1599-4676-bb78-445193e73b63';
      return c.exchange(`${h}.${b64u(JSON.stringify(claims))}.${s}`, { audience: 'kagenti-api' });
    },
  },
  {
    id: 'v2_subject_wrong_realm',
    title: "subject token of another realm (Keycloak: realm master; dev IdP: Keycloak's realm dev)",
    run: async (c, other) => {
      let token;
      if (c.server.admin) {
        const r = await c.post({ grant_type: 'password', username: KEYCLOAK_ADMIN[0], password: KEYCLOAK_ADMIN[1] }, { auth: ['post', 'admin-cli'], realm: 'master' });
        token = r.body?.access_token;
      } else {
        token = await other.userToken();
      }
      if (!token) throw new SetupGap('no token of another realm');
      return c.exchange(token, { audience: 'kagenti-api' });
    },
  },
  {
    id: 'v2_subject_foreign_issuer',
    title: "subject token of the other server (same realm name, another issuer and key)",
    run: async (c, other) => c.exchange(await other.userToken(), { audience: 'kagenti-api' }),
  },
  {
    id: 'v2_subject_garbage',
    title: 'subject token that is not a JWT',
    run: async (c) => c.exchange('not-a-jwt', { audience: 'kagenti-api' }),
  },
  {
    id: 'v2_wrong_secret_basic',
    title: 'wrong client secret, client_secret_basic',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api' }, { auth: ['basic', 'token-broker', 'wrong'] }),
  },
  {
    id: 'v2_wrong_secret_post',
    title: 'wrong client secret, client_secret_post',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api' }, { auth: ['post', 'token-broker', 'wrong'] }),
  },
  {
    id: 'v2_unknown_client',
    title: 'unknown client',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api' }, { auth: ['basic', 'no-such-client', 'x'] }),
  },
  {
    id: 'v2_no_client',
    title: 'no client authentication at all',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api' }, { auth: null }),
  },
  {
    id: 'v2_public_requester',
    title: 'public client (dev-frontend) as requester',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api' }, { auth: ['post', 'dev-frontend'] }),
  },
  {
    id: 'v2_exchange_disabled_for_client',
    title: 'confidential client without standard token exchange (kagenti-api) as requester',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'sonataflow' }, { auth: ['basic', 'kagenti-api', 'kagenti-api-dev-secret'] }),
  },
  {
    id: 'v2_scope_not_allowed',
    title: 'scope that is no client scope of the requester',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api', scope: 'kagenti-admin' }),
  },
  {
    id: 'v2_scope_builtin_optional',
    title: "scope=phone (one of Keycloak's built-in optional client scopes)",
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api', scope: 'phone' }),
  },
  {
    id: 'v2_requested_refresh_token',
    title: 'requested_token_type refresh_token (not enabled for the client)',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api', requested_token_type: RT }),
  },
  {
    id: 'v2_requested_id_token',
    title: 'requested_token_type id_token',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api', requested_token_type: IDT }),
  },
  {
    id: 'v2_requested_saml2',
    title: 'requested_token_type saml2',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api', requested_token_type: 'urn:ietf:params:oauth:token-type:saml2' }),
  },
  {
    id: 'v2_subject_token_type_jwt',
    title: 'subject_token_type jwt (V2 takes access tokens only)',
    run: async (c) => c.exchange(await c.userToken(), { audience: 'kagenti-api', subject_token_type: 'urn:ietf:params:oauth:token-type:jwt' }),
  },
  {
    id: 'v2_missing_subject_token',
    title: 'no subject_token',
    run: async (c) => c.post({ grant_type: TE, subject_token_type: AT, audience: 'kagenti-api' }),
  },
  {
    id: 'v2_duplicated_parameter',
    title: 'subject_token sent twice',
    run: async (c) => {
      const t = await c.userToken();
      return c.post([['grant_type', TE], ['subject_token', t], ['subject_token', t], ['subject_token_type', AT]]);
    },
  },
  {
    id: 'v2_requested_subject_without_v1',
    title: 'requested_subject (impersonation) on the V1-less server',
    run: async (c) => c.post({ grant_type: TE, requested_subject: 'alice', audience: 'kagenti-api', requested_token_type: AT }),
  },
  {
    id: 'v2_subject_service_account_token',
    title: "the broker's own client-credentials token as subject",
    run: async (c) => {
      const cc = await c.post({ grant_type: 'client_credentials' });
      return c.exchange(cc.body?.access_token, { audience: 'kagenti-api' });
    },
  },

  // --- grant type and client credentials
  {
    id: 'missing_grant_type',
    title: 'no grant_type',
    run: async (c) => c.post({ audience: 'kagenti-api' }),
  },
  {
    id: 'unsupported_grant_type',
    title: 'grant_type that does not exist',
    run: async (c) => c.post({ grant_type: 'urn:example:nope' }),
  },
  {
    id: 'client_credentials',
    title: "client credentials of the broker's client",
    run: async (c) => c.post({ grant_type: 'client_credentials' }),
  },
  {
    id: 'client_credentials_post',
    title: 'client credentials, client_secret_post',
    run: async (c) => c.post({ grant_type: 'client_credentials' }, { auth: ['post', ...BROKER] }),
  },
  {
    id: 'client_credentials_no_service_account',
    title: 'client credentials of a client without service accounts (kagenti-api)',
    run: async (c) => c.post({ grant_type: 'client_credentials' }, { auth: ['basic', 'kagenti-api', 'kagenti-api-dev-secret'] }),
  },
  {
    id: 'client_credentials_public',
    title: 'client credentials of a public client',
    run: async (c) => c.post({ grant_type: 'client_credentials' }, { auth: ['post', 'dev-frontend'] }),
  },
  {
    id: 'client_credentials_bad_scope',
    title: 'client credentials with an unknown scope',
    run: async (c) => c.post({ grant_type: 'client_credentials', scope: 'kagenti-admin' }),
  },

  // --- JWT authorization grant (RFC 7523)
  {
    id: 'jwt_grant_success',
    title: "the broker's assertion for user:default/alice",
    run: async (c) => c.jwtGrant(c.assertion()),
  },
  {
    id: 'jwt_grant_token_endpoint_audience',
    title: 'assertion aud = the token endpoint URL',
    run: async (c) => c.jwtGrant(c.assertion({ aud: c.tokenUrl() })),
  },
  {
    id: 'jwt_grant_unknown_issuer',
    title: 'assertion from an issuer no identity provider trusts',
    run: async (c) => c.jwtGrant(c.assertion({ iss: 'http://127.0.0.1:7999' })),
  },
  {
    id: 'jwt_grant_bad_signature',
    title: 'assertion signed by another key (same kid)',
    run: async (c, _o, opts) => c.jwtGrant(c.assertion({}, { signer: { key: opts.otherKey, kid: opts.signer.kid } })),
  },
  {
    id: 'jwt_grant_expired',
    title: 'expired assertion',
    run: async (c) => {
      const t = now();
      return c.jwtGrant(c.assertion({ iat: t - 300, nbf: t - 300, exp: t - 60 }));
    },
  },
  {
    id: 'jwt_grant_wrong_audience',
    title: 'assertion aud = another URL',
    run: async (c) => c.jwtGrant(c.assertion({ aud: 'http://127.0.0.1:7999/realms/dev' })),
  },
  {
    id: 'jwt_grant_unlinked_user',
    title: 'assertion sub linked to no user (user:default/carol)',
    run: async (c) => c.jwtGrant(c.assertion({ sub: 'user:default/carol' })),
  },
  {
    id: 'jwt_grant_lifetime_over_max',
    title: 'assertion exp 10 min ahead (maximum 5 min)',
    run: async (c) => c.jwtGrant(c.assertion({ exp: now() + 600 })),
  },
  {
    id: 'jwt_grant_lifetime_over_max_no_iat',
    title: 'assertion without iat, exp 10 min ahead',
    run: async (c) => c.jwtGrant(c.assertion({ iat: undefined, exp: now() + 600 })),
  },
  {
    id: 'jwt_grant_issued_too_long_ago',
    title: 'assertion issued 6 min ago, still valid for 1 min',
    run: async (c) => {
      const t = now();
      return c.jwtGrant(c.assertion({ iat: t - 360, nbf: t - 360, exp: t + 60 }));
    },
  },
  {
    id: 'jwt_grant_not_yet_valid',
    title: 'assertion with nbf 1 min ahead',
    run: async (c) => c.jwtGrant(c.assertion({ nbf: now() + 60 })),
  },
  {
    id: 'jwt_grant_scope_openid',
    title: 'assertion redeemed with scope=openid',
    run: async (c) => c.jwtGrant(c.assertion(), { scope: 'openid' }),
  },
  {
    id: 'jwt_grant_multiple_audiences',
    title: 'assertion aud = [the realm issuer, another URL]',
    run: async (c) => c.jwtGrant(c.assertion({ aud: [c.issuer(), 'http://127.0.0.1:7999/realms/dev'] })),
  },
  {
    id: 'jwt_grant_no_exp',
    title: 'assertion without exp',
    run: async (c) => c.jwtGrant(c.assertion({ exp: undefined })),
  },
  {
    id: 'jwt_grant_issued_in_future',
    title: 'assertion with iat 1 min ahead (nbf now)',
    run: async (c) => c.jwtGrant(c.assertion({ iat: now() + 60 })),
  },
  {
    id: 'jwt_grant_unsigned',
    title: 'assertion with alg none',
    run: async (c) => {
      const parts = c.assertion().split('.');
      return c.jwtGrant(`${b64u(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${parts[1]}.`);
    },
  },
  {
    id: 'jwt_grant_replayed',
    title: 'the same assertion twice (jti is single-use)',
    run: async (c) => {
      const a = c.assertion();
      const first = await c.jwtGrant(a);
      if (first.status !== 200) throw new SetupGap(`first use failed: ${first.status} ${JSON.stringify(first.body)}`);
      return c.jwtGrant(a);
    },
  },
  {
    id: 'jwt_grant_no_jti',
    title: 'assertion without jti',
    run: async (c) => c.jwtGrant(c.assertion({ jti: undefined })),
  },
  {
    id: 'jwt_grant_not_a_jwt',
    title: 'assertion that is not a JWT',
    run: async (c) => c.jwtGrant('not-a-jwt'),
  },
  {
    id: 'jwt_grant_missing_assertion',
    title: 'no assertion',
    run: async (c) => c.post({ grant_type: JWT_BEARER }),
  },
  {
    id: 'jwt_grant_public_client',
    title: 'public client redeems an assertion',
    run: async (c) => c.jwtGrant(c.assertion(), {}, { auth: ['post', 'dev-frontend'] }),
  },
  {
    id: 'jwt_grant_client_not_enabled',
    title: 'client without the JWT Authorization Grant capability (kagenti-api)',
    run: async (c) => c.jwtGrant(c.assertion(), {}, { auth: ['basic', 'kagenti-api', 'kagenti-api-dev-secret'] }),
  },

  // --- legacy token exchange V1: naked impersonation (Keycloak: the v1 instance)
  {
    id: 'v1_impersonation_success',
    title: 'V1 naked impersonation of alice for kagenti-api (access token)',
    run: async (c) => c.post({ grant_type: TE, requested_subject: 'alice', audience: 'kagenti-api', requested_token_type: AT }, { v1: true }),
  },
  {
    id: 'v1_impersonation_default_type',
    title: 'V1 naked impersonation without requested_token_type (refresh token by default)',
    run: async (c) => c.post({ grant_type: TE, requested_subject: 'bob', audience: 'sonataflow' }, { v1: true }),
  },
  {
    id: 'v1_impersonation_unknown_user',
    title: 'V1 impersonation of a user that does not exist',
    run: async (c) => c.post({ grant_type: TE, requested_subject: 'carol', audience: 'kagenti-api', requested_token_type: AT }, { v1: true }),
  },
  {
    id: 'v1_impersonation_target_not_permitted',
    title: "V1 impersonation to a client whose token-exchange permission lacks the broker",
    run: async (c) => c.post({ grant_type: TE, requested_subject: 'alice', audience: 'dev-frontend', requested_token_type: AT }, { v1: true }),
  },
  {
    id: 'v1_impersonation_client_not_permitted',
    title: 'V1 impersonation by a client without the impersonate permission (kagenti-api)',
    run: async (c) => c.post({ grant_type: TE, requested_subject: 'alice', audience: 'sonataflow', requested_token_type: AT }, { v1: true, auth: ['basic', 'kagenti-api', 'kagenti-api-dev-secret'] }),
  },
  {
    id: 'v1_server_v2_success',
    title: 'V2 exchange on the server that has V1 on as well',
    run: async (c) => c.exchange(await c.userToken({ v1: true }), { audience: 'kagenti-api' }, { v1: true }),
  },
  {
    id: 'v1_server_exchange_disabled_for_client',
    title: 'client without standard token exchange, on the server with V1 on',
    run: async (c) => c.exchange(await c.userToken({ v1: true }), { audience: 'sonataflow' }, { v1: true, auth: ['basic', 'kagenti-api', 'kagenti-api-dev-secret'] }),
  },
  {
    id: 'v1_server_public_requester',
    title: 'public client as requester, on the server with V1 on',
    run: async (c) => c.exchange(await c.userToken({ v1: true }), { audience: 'kagenti-api' }, { v1: true, auth: ['post', 'dev-frontend'] }),
  },
];

// ---------------------------------------------------------------------------------------------
// Runner.

function parseArgs(argv) {
  const a = { only: null, server: null, pair: ['keycloak', 'dev-idp'], ignore: [], results: null, known: path.join(here, 'known-differences.json'), markdown: false, assertionKey: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const next = () => argv[++i];
    if (k === '--only') a.only = new RegExp(next());
    else if (k === '--server') a.server = next();
    else if (k === '--pair') a.pair = next().split(',');
    else if (k === '--ignore') a.ignore.push(next());
    else if (k === '--results') a.results = next();
    else if (k === '--known') a.known = next();
    else if (k === '--markdown') a.markdown = true;
    else if (k === '--assertion-key') a.assertionKey = next();
    else if (k === '--list') a.list = true;
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

async function signerFor(keyFile) {
  if (!keyFile) throw new Error('--assertion-key FILE is required (the PKCS#8 key the broker at 127.0.0.1:7070 publishes)');
  const key = crypto.createPrivateKey(fs.readFileSync(keyFile, 'utf8'));
  const pub = crypto.createPublicKey(key).export({ format: 'jwk' });
  const jwks = await fetch(BROKER_JWKS).then((r) => r.json()).catch(() => null);
  const match = jwks?.keys?.find((k) => k.x === pub.x && k.y === pub.y);
  if (!match) {
    throw new Error(`${BROKER_JWKS} does not publish the key of ${keyFile}: start token-broker dev with assertion.keyFile = that file`);
  }
  return { key, kid: match.kid };
}

async function runOne(scenario, server, other, opts) {
  try {
    const r = await scenario.run(context(server, opts), context(other, opts), opts);
    return { observed: observe(r.status, r.body), raw: r.body };
  } catch (e) {
    if (e instanceof SetupGap) return { observed: { setup: e.message } };
    return { observed: { setup: `error: ${e.message}` } };
  }
}

function fmt(v) {
  return v === undefined ? '(absent)' : JSON.stringify(v);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.list) {
    for (const s of SCENARIOS) console.log(`${s.id}\t${s.title}`);
    return 0;
  }
  const known = args.known === 'none' ? [] : JSON.parse(fs.readFileSync(args.known, 'utf8'));
  const signer = await signerFor(args.assertionKey);
  const otherKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const opts = { signer, otherKey };
  const scenarios = SCENARIOS.filter((s) => !args.only || args.only.test(s.id));
  const names = args.server ? [args.server] : args.pair;
  for (const n of names) if (!SERVERS[n]) throw new Error(`unknown server ${n} (${Object.keys(SERVERS).join(', ')})`);
  const results = [];
  let agree = 0;
  let unexplained = 0;
  for (const s of scenarios) {
    const row = { id: s.id, title: s.title };
    for (const n of names) {
      // The "other server" of the cross-issuer scenarios: the other one of the pair.
      const other = SERVERS[n === names[0] ? (names[1] ?? 'dev-idp') : names[0]];
      row[n] = await runOne(s, SERVERS[n], other, opts);
    }
    results.push(row);
    if (names.length < 2) {
      console.log(`${s.id} ${JSON.stringify(row[names[0]].observed)}`);
      continue;
    }
    const d = diff(row[names[0]].observed, row[names[1]].observed).filter((x) => !args.ignore.includes(x.field));
    row.differences = d.map((x) => x.field);
    if (d.length === 0) {
      agree++;
      console.log(`${s.id} agree`);
      continue;
    }
    const entry = known.find((k) => k.scenario === s.id);
    const covered = (f) => entry && (entry.fields.includes('*') || entry.fields.some((k) => f === k || f.startsWith(`${k}.`)));
    const open = d.filter((x) => !covered(x.field));
    row.known = entry?.reason ?? null;
    row.unexplained = open.map((x) => x.field);
    if (open.length) unexplained++;
    const what = d.map((x) => `${x.field}: ${names[0]}=${fmt(x.a)} ${names[1]}=${fmt(x.b)}`).join('; ');
    const tag = open.length ? ' [NOT IN THE KNOWN LIST]' : ' [known]';
    console.log(`${s.id} differ: ${what}${tag}`);
  }
  if (args.results) fs.writeFileSync(args.results, JSON.stringify(results, null, 2));
  if (args.markdown) printMarkdown(results, names);
  if (names.length === 2) {
    console.log(`conformance: ${agree}/${scenarios.length} agree`);
    if (unexplained) {
      console.log(`${unexplained} scenario(s) differ outside tests/conformance/known-differences.json`);
      return 1;
    }
  }
  return 0;
}

function printMarkdown(results, names) {
  const short = (v) => (typeof v === 'string' ? v.replace('urn:ietf:params:oauth:token-type:', '…:') : v);
  const cell = (o) => {
    if (!o) return '';
    if (o.setup) return `(cannot be set up: ${o.setup})`;
    const parts = [`**${o.status}**`];
    if (o.error !== undefined) parts.push(`\`${o.error}\``);
    if (o.error_description !== undefined) parts.push(`"${o.error_description}"`);
    for (const k of ['token_type', 'issued_token_type', 'expires_in', 'scope', 'refresh_token', 'id_token']) {
      if (o[k] !== undefined) parts.push(`${k}=${short(o[k])}`);
    }
    if (o.token) {
      const t = o.token;
      parts.push(`token: aud=${JSON.stringify(t.aud)} azp=${t.azp} sub=${(t.sub ?? '').slice(0, 8)}… scope="${t.scope}" typ=${t.typ} lifetime=${t.lifetime}`);
    }
    return parts.join(' ').replace(/\|/g, '\\|');
  };
  console.log(`\n| scenario | ${names.join(' | ')} | verdict |\n|---|${names.map(() => '---|').join('')}---|`);
  for (const r of results) {
    const verdict = !r.differences ? '' : r.differences.length === 0 ? 'agree' : `**differ**: ${r.differences.join(', ')}`;
    console.log(`| \`${r.id}\` ${r.title} | ${names.map((n) => cell(r[n]?.observed)).join(' | ')} | ${verdict} |`);
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`conformance: ${e.message}`);
    process.exit(2);
  },
);
