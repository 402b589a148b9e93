#!/usr/bin/env node
// TEST-ONLY harness for token-broker's Backstage interop tests. Never deploy this.
//
// A minimal *real* Backstage backend (the published @backstage/* packages pinned in
// package.json) on 127.0.0.1 that:
//   - mints real tokens through Backstage's own APIs (plugin `minter`, unauthenticated routes),
//   - answers with Backstage's own verdict on a token (plugin `verdict`, real httpAuth),
//   - serves the real JWKS endpoints ({base}/api/auth/.well-known/jwks.json and
//     {base}/api/<plugin>/.backstage/auth/v1/jwks.json).
//
// Usage: node backend.js [port]        (or BACKSTAGE_HARNESS_PORT; default 7007)
// Prints `HARNESS <json>` (the fixed external-access secrets) and then `READY <baseUrl>` on
// stdout once listening. Exits when stdin reaches EOF if BACKSTAGE_HARNESS_EXIT_ON_STDIN_EOF=1
// (so a test process that dies without cleaning up does not leave it running).
//
// Routes (base = http://127.0.0.1:<port>):
//   GET /api/minter/user-token?user=<name|entityRef>[&ent=a,b][&ago=<s>]  -> {"token"}
//   GET /api/minter/limited-user-token?user=..[&ago=<s>]                  -> {"token"}
//   GET /api/minter/plugin-token?target=<pluginId>[&ago=<s>]             -> {"token"}
//   GET /api/minter/obo-token?user=..&target=<pluginId>[&ago=<s>]        -> {"token"}
//   GET /api/minter/info                                                 -> fixed config facts
//   GET /api/verdict/whoami            Backstage's verdict (default route: user or service)
//   GET /api/verdict/whoami-limited    same, with allowLimitedAccess (limited user tokens ok)
//     -> 200 {"type":"user","userEntityRef","actor"?,"expiresAt"?}
//        200 {"type":"service","subject","accessRestrictions"?,"expiresAt"?}
//        or Backstage's own error status and body (401/403/500).
//
// `ago=<s>` mints the token with Backstage's issuing clock (Date.now, which the issuers use for
// iat/exp) moved back by <s> seconds, so `ago=7200` gives a really Backstage-signed token that
// expired an hour ago. Verification (jose) uses `new Date()` and is never shifted; requests are
// serialized while the clock is moved.
'use strict';

const { createBackend } = require('@backstage/backend-defaults');
const {
  coreServices,
  createBackendModule,
  createBackendPlugin,
  createServiceFactory,
} = require('@backstage/backend-plugin-api');
const {
  authProvidersExtensionPoint,
  createProxyAuthProviderFactory,
  createProxyAuthenticator,
} = require('@backstage/plugin-auth-node');
const { ConfigReader } = require('@backstage/config');
const express = require('express');

// Backstage resolves its paths from the package.json upwards of the working directory.
process.chdir(__dirname);

const port = Number(process.argv[2] || process.env.BACKSTAGE_HARNESS_PORT || 7007);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`backend.js: bad port ${process.argv[2] || process.env.BACKSTAGE_HARNESS_PORT}`);
  process.exit(2);
}
const baseUrl = `http://127.0.0.1:${port}`;

// Fixed test values. The Rust side (tests/it/backstage_support.rs) has the same constants.
const FACTS = {
  baseUrl,
  staticToken: 'harness-static-token-1',
  staticSubject: 'harness-static',
  restrictedToken: 'harness-restricted-1',
  restrictedSubject: 'harness-restricted',
  restrictedVerdictToken: 'harness-restricted-verdict-1',
  restrictedVerdictSubject: 'harness-restricted-verdict',
  // base64url of "harness-legacy-secret-0123456789" (32 bytes); HS256 key = decoded bytes.
  legacySecret: Buffer.from('harness-legacy-secret-0123456789').toString('base64url'),
  legacySubject: 'harness-legacy',
  // backend.auth.keys[0].secret: base64url of "harness-keys-secret-0123456789ab"; subject is
  // Backstage's fixed `external:backstage-plugin`.
  keysSecret: Buffer.from('harness-keys-secret-0123456789ab').toString('base64url'),
  keysSubject: 'external:backstage-plugin',
};

const config = {
  app: { baseUrl },
  backend: {
    baseUrl,
    listen: { host: '127.0.0.1', port },
    database: { client: 'better-sqlite3', connection: ':memory:' },
    auth: {
      externalAccess: [
        {
          type: 'static',
          options: { token: FACTS.staticToken, subject: FACTS.staticSubject },
        },
        {
          type: 'static',
          options: { token: FACTS.restrictedToken, subject: FACTS.restrictedSubject },
          accessRestrictions: [{ plugin: 'catalog' }],
        },
        {
          type: 'static',
          options: {
            token: FACTS.restrictedVerdictToken,
            subject: FACTS.restrictedVerdictSubject,
          },
          accessRestrictions: [
            {
              plugin: 'verdict',
              permission: 'harness.thing.read',
              permissionAttribute: { action: 'read' },
            },
          ],
        },
        {
          type: 'legacy',
          options: { secret: FACTS.legacySecret, subject: FACTS.legacySubject },
        },
      ],
      keys: [{ secret: FACTS.keysSecret }],
    },
  },
  auth: {
    keyStore: { provider: 'memory' },
    providers: { harness: {} },
  },
};

// ---- Issuing clock shift (see `ago` above) ---------------------------------------------------
const realDateNow = Date.now;
let queue = Promise.resolve();
/** Runs fn exclusively (no other harness request runs meanwhile), with Date.now moved back. */
function exclusive(agoSeconds, fn) {
  const run = async () => {
    if (agoSeconds) {
      const shift = agoSeconds * 1000;
      Date.now = () => realDateNow() - shift;
    }
    try {
      return await fn();
    } finally {
      Date.now = realDateNow;
    }
  };
  const result = queue.then(run, run);
  queue = result.catch(() => undefined);
  return result;
}

// ---- A proxy auth provider that signs in anyone, through the real ctx.issueToken ------------
let resolveIssuer;
const issuerReady = new Promise(resolve => {
  resolveIssuer = resolve;
});

function userRef(user) {
  if (!user) throw badRequest('missing query parameter user');
  return user.includes(':') ? user : `user:default/${user}`;
}

async function issueUserToken(user, ent) {
  const resolverContext = await issuerReady;
  const sub = userRef(user);
  const claims = { sub };
  if (ent) claims.ent = ent.split(',').filter(Boolean);
  const { token } = await resolverContext.issueToken({ claims });
  return token;
}

const harnessAuthProvider = createBackendModule({
  pluginId: 'auth',
  moduleId: 'harness-provider',
  register(reg) {
    reg.registerInit({
      deps: { providers: authProvidersExtensionPoint },
      async init({ providers }) {
        providers.registerProvider({
          providerId: 'harness',
          factory: ctx => {
            resolveIssuer(ctx.resolverContext);
            return createProxyAuthProviderFactory({
              // Also reachable over HTTP: GET /api/auth/harness/refresh?user=<name>
              authenticator: createProxyAuthenticator({
                defaultProfileTransform: async () => ({ profile: {} }),
                initialize: () => undefined,
                async authenticate({ req }) {
                  return { result: { user: String(req.query.user || '') } };
                },
              }),
              signInResolver: async ({ result }, rctx) =>
                rctx.issueToken({ claims: { sub: userRef(result.user) } }),
            })(ctx);
          },
        });
      },
    });
  },
});

// ---- plugin `minter` -------------------------------------------------------------------------
function badRequest(message) {
  const e = new Error(message);
  e.name = 'InputError';
  return e;
}

function ago(req) {
  const v = req.query.ago;
  if (v === undefined) return 0;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 2 * 3600) {
    throw badRequest('ago must be a number of seconds in [0, 7200]');
  }
  return n;
}

function route(handler) {
  return async (req, res, next) => {
    try {
      res.json(await handler(req));
    } catch (e) {
      next(e);
    }
  };
}

const minterPlugin = createBackendPlugin({
  pluginId: 'minter',
  register(env) {
    env.registerInit({
      deps: { auth: coreServices.auth, httpRouter: coreServices.httpRouter },
      async init({ auth, httpRouter }) {
        const router = express.Router();
        const userCredentials = async user => auth.authenticate(await issueUserToken(user));

        router.get('/info', route(async () => FACTS));
        router.get(
          '/user-token',
          route(req =>
            exclusive(ago(req), async () => ({
              token: await issueUserToken(req.query.user, req.query.ent),
            })),
          ),
        );
        router.get(
          '/limited-user-token',
          route(req => {
            const shift = ago(req);
            return exclusive(shift, async () => {
              const token = await issueUserToken(req.query.user);
              // Backstage's own createLimitedUserToken (via auth.getLimitedUserToken) builds
              // it from the user token's `uip`. A fresh token goes through the real
              // auth.authenticate first; an already expired one cannot, so it is wrapped in
              // credentials of the same internal shape (getLimitedUserToken does not verify).
              const creds = shift
                ? {
                    $$type: '@backstage/BackstageCredentials',
                    version: 'v1',
                    principal: { type: 'user', userEntityRef: userRef(req.query.user) },
                    token,
                  }
                : await auth.authenticate(token);
              return { token: (await auth.getLimitedUserToken(creds)).token };
            });
          }),
        );
        router.get(
          '/plugin-token',
          route(req => {
            const targetPluginId = String(req.query.target || '');
            if (!targetPluginId) throw badRequest('missing query parameter target');
            return exclusive(ago(req), async () => {
              const { token } = await auth.getPluginRequestToken({
                onBehalfOf: await auth.getOwnServiceCredentials(),
                targetPluginId,
              });
              return { token };
            });
          }),
        );
        router.get(
          '/obo-token',
          route(async req => {
            const targetPluginId = String(req.query.target || '');
            if (!targetPluginId) throw badRequest('missing query parameter target');
            const shift = ago(req);
            // The user credentials are fresh; only the plugin token is issued in the past.
            const onBehalfOf = await exclusive(0, () => userCredentials(req.query.user));
            return exclusive(shift, async () => {
              const { token } = await auth.getPluginRequestToken({ onBehalfOf, targetPluginId });
              return { token };
            });
          }),
        );
        httpRouter.use(router);
        httpRouter.addAuthPolicy({ path: '/', allow: 'unauthenticated' });
      },
    });
  },
});

// ---- plugin `verdict` ------------------------------------------------------------------------
function principalJson(credentials) {
  const p = credentials.principal;
  const out = { type: p.type };
  if (p.type === 'user') {
    out.userEntityRef = p.userEntityRef;
    if (p.actor) out.actor = { type: p.actor.type, subject: p.actor.subject };
  } else if (p.type === 'service') {
    out.subject = p.subject;
    if (p.accessRestrictions) out.accessRestrictions = p.accessRestrictions;
  }
  if (credentials.expiresAt) out.expiresAt = credentials.expiresAt.toISOString();
  return out;
}

const verdictPlugin = createBackendPlugin({
  pluginId: 'verdict',
  register(env) {
    env.registerInit({
      deps: { httpAuth: coreServices.httpAuth, httpRouter: coreServices.httpRouter },
      async init({ httpAuth, httpRouter }) {
        const router = express.Router();
        // The barrier is opened so that the handler itself asks httpAuth, with the same
        // `allow` as Backstage's default policy (user or service); errors go to Backstage's
        // own error middleware, so status and body are Backstage's.
        router.get(
          '/whoami',
          route(req =>
            exclusive(0, async () =>
              principalJson(await httpAuth.credentials(req, { allow: ['user', 'service'] })),
            ),
          ),
        );
        router.get(
          '/whoami-limited',
          route(req =>
            exclusive(0, async () =>
              principalJson(
                await httpAuth.credentials(req, {
                  allow: ['user', 'service'],
                  allowLimitedAccess: true,
                }),
              ),
            ),
          ),
        );
        httpRouter.use(router);
        httpRouter.addAuthPolicy({ path: '/', allow: 'unauthenticated' });
      },
    });
  },
});

// ---- the backend -----------------------------------------------------------------------------
async function main() {
  if (process.env.BACKSTAGE_HARNESS_EXIT_ON_STDIN_EOF === '1') {
    process.stdin.on('end', () => process.exit(0));
    process.stdin.on('error', () => process.exit(0));
    process.stdin.resume();
  }
  const backend = createBackend();
  backend.add(
    createServiceFactory({
      service: coreServices.rootConfig,
      deps: {},
      factory: () => new ConfigReader(config, 'token-broker-harness'),
    }),
  );
  backend.add(require('@backstage/plugin-auth-backend'));
  backend.add(harnessAuthProvider);
  backend.add(minterPlugin);
  backend.add(verdictPlugin);
  await backend.start();
  await issuerReady;
  process.stdout.write(`HARNESS ${JSON.stringify(FACTS)}\n`);
  process.stdout.write(`READY ${baseUrl}\n`);
}

main().catch(e => {
  console.error(`backend.js: start failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
