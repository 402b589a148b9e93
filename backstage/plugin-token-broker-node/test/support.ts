/**
 * Test-only: the real parts the library is tested against.
 *
 * - A real Backstage backend in this process, built from the `@backstage/*` packages pinned in
 *   tests/backstage (the interop harness; `scripts/backstage-harness install`): the auth
 *   backend with a sign-in-anyone provider (real user tokens, real JWKS), and a test plugin
 *   `nodelib` that injects `tokenBrokerServiceRef` like a real plugin would.
 * - The real broker binary (`token-broker dev`: broker + dev IdP + dev echo upstream) with a
 *   copy of config/dev.yaml on free ports for the broker, trusting that backend.
 *
 * The dev IdP (127.0.0.1:7080) and the dev echo upstream (127.0.0.1:7090) are fixed ports of
 * `token-broker dev` (docs/dev-contract.md).
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import type {
  AuthService,
  BackstageCredentials,
  HttpAuthService,
  LoggerService,
} from '@backstage/backend-plugin-api';
import type { Request, Response, Router } from 'express';

import { tokenBrokerServiceRef, TokenBrokerError, type TokenBrokerService } from '../src';

export const REPO = resolve(__dirname, '..', '..', '..', '..');
const HARNESS = join(REPO, 'tests', 'backstage');
/** Loads a package of the interop harness (tests/backstage/node_modules). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const harness: (id: string) => any = createRequire(join(HARNESS, 'package.json'));

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => ok(port));
    });
  });
}

async function waitFor(what: string, ms: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise(r => setTimeout(r, 100));
  }
}

// ---- the broker -------------------------------------------------------------------------------

export interface Broker {
  url: string;
  adminUrl: string;
  stop(): Promise<void>;
}

function brokerBinary(): string {
  const bin =
    process.env.TOKEN_BROKER_BIN ??
    join(process.env.CARGO_TARGET_DIR ?? join(REPO, 'target'), 'debug', 'token-broker');
  if (!existsSync(bin)) {
    throw new Error(`${bin} not found: build it first (cargo build), or set TOKEN_BROKER_BIN`);
  }
  return bin;
}

/** Extra targets of the tests, appended to config/dev.yaml's. */
export function extraTargets(deadUpstream: string): string {
  return `
  # Test-only: an upstream where nothing listens (proxy-mode 502 upstream_unavailable).
  dead-upstream:
    audience: kagenti-api
    fallback: service_account
    upstream: ${deadUpstream}
  # Test-only: the dev IdP knows no such client, so Keycloak refuses the exchange.
  unknown-audience:
    audience: no-such-client
    fallback: service_account
`;
}

export interface BrokerOptions {
  /** `serve` with the same configuration instead of `dev`: needs a running `dev` (its IdP). */
  serve?: boolean;
  /** Replaces the broker's client secret at the dev IdP (a wrong one: Keycloak says 401). */
  clientSecret?: string;
}

export async function startBroker(backstageUrl: string, opts: BrokerOptions = {}): Promise<Broker> {
  const [port, admin, dead] = await Promise.all([freePort(), freePort(), freePort()]);
  const url = `http://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'tb-nodelib-'));
  const yaml = readFileSync(join(REPO, 'config', 'dev.yaml'), 'utf8')
    .replace('listen: 127.0.0.1:7070', `listen: 127.0.0.1:${port}`)
    .replace('listen: 127.0.0.1:7071', `listen: 127.0.0.1:${admin}`)
    .replace('issuer: http://127.0.0.1:7070', `issuer: ${url}`)
    .replace('\ntargets:\n', `\ntargets:\n${extraTargets(`http://127.0.0.1:${dead}`)}`)
    .replace(
      'clientSecret: token-broker-dev-secret',
      `clientSecret: ${opts.clientSecret ?? 'token-broker-dev-secret'}`,
    )
    // `dev --backstage URL` sets this itself; `serve` reads it from the file.
    .replace('\nbackend:\n', opts.serve ? `\nbackend:\n  baseUrl: ${backstageUrl}\n` : '\nbackend:\n');
  const config = join(dir, 'broker.yaml');
  writeFileSync(config, yaml);

  const child: ChildProcess = spawn(
    brokerBinary(),
    opts.serve
      ? ['serve', '--config', config]
      : ['dev', '--config', config, '--backstage', backstageUrl],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } },
  );
  let output = '';
  const keep = (b: Buffer) => {
    output = (output + b.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited: number | null | undefined;
  const gone = new Promise<void>(r =>
    child.once('exit', code => {
      exited = code;
      r();
    }),
  );
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  const adminUrl = `http://127.0.0.1:${admin}`;
  try {
    await waitFor('the broker (/readyz)', 30_000, async () => {
      if (exited !== undefined) throw new Error('exited');
      return (await fetch(`${adminUrl}/readyz`)).ok;
    });
  } catch {
    kill();
    throw new Error(
      `token-broker ${opts.serve ? 'serve' : 'dev'} did not become ready (exit ${String(exited)}); ports 7080/7090 taken by another 'token-broker dev'? Output:\n${output}`,
    );
  }
  return {
    url,
    adminUrl,
    async stop() {
      process.removeListener('exit', kill);
      child.kill('SIGTERM');
      await Promise.race([gone, new Promise(r => setTimeout(r, 5000))]);
      kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---- the Backstage backend --------------------------------------------------------------------

/** What the test plugin was given by Backstage. */
export interface Injected {
  tokenBroker: TokenBrokerService;
  auth: AuthService;
  httpAuth: HttpAuthService;
  logger: LoggerService;
}

export interface Backstage {
  url: string;
  /** The test plugin's services, as Backstage injected them. */
  plugin: Injected;
  /** A real Backstage user token for `user:default/<name>`. */
  userToken(name: string): Promise<string>;
  /** The credentials Backstage gives a request carrying that user's token. */
  userCredentials(name: string): Promise<BackstageCredentials>;
  stop(): Promise<void>;
}

function errorJson(e: unknown): Record<string, unknown> {
  if (e instanceof TokenBrokerError) {
    return {
      typed: true,
      error: e.error,
      description: e.description,
      hint: e.hint,
      status: e.status,
      idpStatus: e.idpStatus,
    };
  }
  return { typed: false, message: String(e) };
}

/**
 * Starts the backend on `port`. `tokenBroker` is the app-config section the library reads;
 * `discoveryTarget`, when set, registers the broker in discovery as plugin `token-broker`.
 */
export async function startBackstage(
  port: number,
  tokenBroker: Record<string, unknown>,
  discoveryTarget?: string,
): Promise<Backstage> {
  const { createBackend } = harness('@backstage/backend-defaults');
  const { coreServices, createBackendModule, createBackendPlugin, createServiceFactory } =
    harness('@backstage/backend-plugin-api');
  const authNode = harness('@backstage/plugin-auth-node');
  const { ConfigReader } = harness('@backstage/config');
  const express = harness('express');

  // Backstage's root logger reads LOG_LEVEL; its info lines would drown the test report.
  process.env.LOG_LEVEL ??= 'warn';
  const url = `http://127.0.0.1:${port}`;
  const config: Record<string, unknown> = {
    app: { baseUrl: url },
    backend: {
      baseUrl: url,
      listen: { host: '127.0.0.1', port },
      database: { client: 'better-sqlite3', connection: ':memory:' },
    },
    auth: { keyStore: { provider: 'memory' }, providers: { harness: {} } },
    tokenBroker,
  };
  if (discoveryTarget) {
    config.discovery = { endpoints: [{ target: discoveryTarget, plugins: ['token-broker'] }] };
  }

  // A sign-in-anyone provider whose tokens are issued by the real auth backend.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let resolveIssuer: (ctx: any) => void = () => undefined;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const issuer = new Promise<any>(r => {
    resolveIssuer = r;
  });
  const provider = createBackendModule({
    pluginId: 'auth',
    moduleId: 'nodelib-test-provider',
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    register(reg: any) {
      reg.registerInit({
        deps: { providers: authNode.authProvidersExtensionPoint },
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        async init({ providers }: any) {
          providers.registerProvider({
            providerId: 'harness',
            // eslint-disable-next-line @typescript-eslint/no-explicit-any
            factory: (ctx: any) => {
              resolveIssuer(ctx.resolverContext);
              return authNode.createProxyAuthProviderFactory({
                authenticator: authNode.createProxyAuthenticator({
                  defaultProfileTransform: async () => ({ profile: {} }),
                  initialize: () => undefined,
                  authenticate: async () => ({ result: {} }),
                }),
                signInResolver: async () => {
                  throw new Error('sign-in is not used by these tests');
                },
              })(ctx);
            },
          });
        },
      });
    },
  });

  let injected: Injected | undefined;
  const testPlugin = createBackendPlugin({
    pluginId: 'nodelib',
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    register(env: any) {
      env.registerInit({
        deps: {
          tokenBroker: tokenBrokerServiceRef,
          auth: coreServices.auth,
          httpAuth: coreServices.httpAuth,
          httpRouter: coreServices.httpRouter,
          logger: coreServices.logger,
        },
        async init(deps: Injected & { httpRouter: { use(r: Router): void } }) {
          injected = deps;
          const router: Router = express.Router();
          // What a plugin's route does: the token of the request's user.
          router.get('/token', async (req: Request, res: Response) => {
            try {
              const credentials = await deps.httpAuth.credentials(req, { allow: ['user'] });
              const t = await deps.tokenBroker.getToken({
                target: String(req.query.target),
                credentials,
              });
              res.json({ ...t, expiresAt: t.expiresAt.toISOString() });
            } catch (e) {
              res.status(299).json(errorJson(e));
            }
          });
          deps.httpRouter.use(router);
        },
      });
    },
  });

  const backend = createBackend();
  backend.add(
    createServiceFactory({
      service: coreServices.rootConfig,
      deps: {},
      factory: () => new ConfigReader(config, 'nodelib-test'),
    }),
  );
  backend.add(harness('@backstage/plugin-auth-backend'));
  backend.add(provider);
  backend.add(testPlugin);
  await backend.start();
  const ctx = await issuer;
  const plugin = injected;
  if (!plugin) throw new Error('the test plugin was not initialised');

  const userToken = async (name: string): Promise<string> =>
    (await ctx.issueToken({ claims: { sub: `user:default/${name}` } })).token;
  return {
    url,
    plugin,
    userToken,
    userCredentials: async name => plugin.auth.authenticate(await userToken(name)),
    stop: () => backend.stop(),
  };
}

/** The claims of a JWT (not verified: the tests compare them, the broker verified). */
export function claims(jwt: string): Record<string, unknown> {
  const part = jwt.split('.')[1];
  if (!part) throw new Error('not a JWT');
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** Alice's (or another dev user's) Keycloak access token from the dev IdP (password grant). */
export async function keycloakToken(user: string): Promise<string> {
  const res = await fetch('http://127.0.0.1:7080/realms/dev/protocol/openid-connect/token', {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'password',
      client_id: 'dev-frontend',
      username: user,
      password: user,
    }),
  });
  const body = (await res.json()) as { access_token?: string };
  if (!res.ok || !body.access_token) throw new Error(`dev IdP login of ${user}: ${res.status}`);
  return body.access_token;
}
