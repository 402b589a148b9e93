/**
 * The default implementation of {@link TokenBrokerService}: the wire protocol of token-broker
 * as a Backstage backend plugin sees it.
 *
 * Owns: minting the plugin token for the broker on behalf of the caller's credentials, the
 * RFC 8693 token request (`POST {base}/v1/token`), proxy-mode calls (`{base}/v1/proxy/{target}/…`),
 * the mapping of every failure to {@link TokenBrokerError}, and the in-process reuse (reuse.ts).
 * Never logs or puts a token in an error.
 *
 * @packageDocumentation
 */

import type {
  AuthService,
  BackstageCredentials,
  LoggerService,
} from '@backstage/backend-plugin-api';

import { TokenBrokerError, parseBrokerError } from './errors';
import { ReuseMap, reuseKey } from './reuse';

/** RFC 8693 §2.1. */
const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const IDENTITY_HEADER = 'x-token-broker-identity';
const CACHE_HEADER = 'x-token-broker-cache';
/** The broker's answers are small; anything bigger is not the broker. */
const MAX_ANSWER_BYTES = 256 * 1024;

/** @public */
export interface GetTokenOptions {
  /** The broker's target name (its `targets.<name>`), e.g. `kagenti`. */
  target: string;
  /**
   * Whose token: the incoming request's credentials (`httpAuth.credentials(req)`) for the
   * user's own token, or `auth.getOwnServiceCredentials()` for the plugin itself.
   */
  credentials: BackstageCredentials;
  /** Scopes to ask for (a subset of the target's); a string is sent as is. */
  scope?: string | string[];
  /** The user's Keycloak access token, when the plugin has it (sent in the user-token header). */
  keycloakToken?: string;
}

/** @public */
export interface TokenBrokerToken {
  /** The downstream access token. Never log it. */
  token: string;
  /** When the token expires (from the broker's `expires_in`). */
  expiresAt: Date;
  /** `user`: the user's own token; `service`: the broker's service-account token. */
  identity: 'user' | 'service';
  /** Where it came from: the broker's cache (`hit`, `miss`, `coalesced`) or this process's
   * short reuse (`reused`). */
  cache: 'hit' | 'miss' | 'coalesced' | 'reused';
  /** `issued_token_type` (RFC 8693 §2.2.1). */
  issuedTokenType?: string;
  /** `scope` of the answer, when the broker sent one. */
  scope?: string;
}

/** @public */
export interface TokenBrokerFetchOptions {
  /** Whose token the broker sends upstream (see {@link GetTokenOptions.credentials}). */
  credentials: BackstageCredentials;
  /** The user's Keycloak access token, when the plugin has it. */
  keycloakToken?: string;
}

/**
 * Per-user downstream tokens from token-broker, and calls through its proxy mode.
 *
 * @public
 */
export interface TokenBrokerService {
  /** A token for `target` on behalf of `credentials`; throws {@link TokenBrokerError}. */
  getToken(options: GetTokenOptions): Promise<TokenBrokerToken>;
  /**
   * Calls `{broker}/v1/proxy/{target}/{path}`: the broker adds the downstream token, so the
   * plugin never holds it. The upstream's answer is returned as is (any status, body
   * streamed, server-sent events as they arrive). The broker's own refusals (401, 403, 404,
   * 502 `upstream_unavailable`, …) throw {@link TokenBrokerError}.
   */
  fetch(
    target: string,
    path: string,
    init: RequestInit | undefined,
    options: TokenBrokerFetchOptions,
  ): Promise<Response>;
}

/** @public */
export interface TokenBrokerReuseOptions {
  /** Default true. */
  enabled?: boolean;
  /** A token is reused until this many seconds before its `expiresAt`. Default 30. */
  marginSeconds?: number;
  /** At most this many tokens are kept. Default 1000. */
  maxEntries?: number;
}

/** @public */
export interface DefaultTokenBrokerServiceOptions {
  auth: AuthService;
  logger: LoggerService;
  /** The broker's base URL (no trailing slash needed), or a function giving it per call. */
  baseUrl: string | (() => Promise<string>);
  /** The broker's Backstage plugin id (its `backstage.pluginId`). Default `token-broker`. */
  pluginId?: string;
  /** The broker's user-token header (its `userToken.header`). Default
   * `X-Forwarded-Access-Token`. */
  userTokenHeader?: string;
  /** Timeout of one token request in milliseconds. Default 10000. */
  requestTimeoutMs?: number;
  reuse?: TokenBrokerReuseOptions;
}

function normalizeScope(scope: string | string[] | undefined): string | undefined {
  if (scope === undefined) return undefined;
  const s = (Array.isArray(scope) ? scope.join(' ') : scope).trim();
  return s === '' ? undefined : s;
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    const code =
      cause && typeof cause === 'object' && 'code' in cause
        ? String((cause as { code: unknown }).code)
        : undefined;
    return code ? `${e.message} (${code})` : e.message;
  }
  return String(e);
}

/** Reads at most `MAX_ANSWER_BYTES` of a body as text; undefined when it is longer. */
async function readSmall(res: Response): Promise<string | undefined> {
  const len = Number(res.headers.get('content-length') ?? '0');
  if (len > MAX_ANSWER_BYTES) {
    await res.body?.cancel().catch(() => undefined);
    return undefined;
  }
  const text = await res.text();
  return Buffer.byteLength(text) > MAX_ANSWER_BYTES ? undefined : text;
}

/**
 * The default {@link TokenBrokerService}; the service factory builds one from configuration.
 *
 * @public
 */
export class DefaultTokenBrokerService implements TokenBrokerService {
  private readonly auth: AuthService;
  private readonly logger: LoggerService;
  private readonly resolveBaseUrl: () => Promise<string>;
  private readonly pluginId: string;
  private readonly userTokenHeader: string;
  private readonly requestTimeoutMs: number;
  private readonly reuseEnabled: boolean;
  private readonly marginMs: number;
  private readonly reuse: ReuseMap<TokenBrokerToken>;
  private readonly inFlight = new Map<string, Promise<TokenBrokerToken>>();

  constructor(options: DefaultTokenBrokerServiceOptions) {
    this.auth = options.auth;
    this.logger = options.logger;
    const base = options.baseUrl;
    this.resolveBaseUrl = typeof base === 'string' ? async () => base : base;
    this.pluginId = options.pluginId ?? 'token-broker';
    this.userTokenHeader = options.userTokenHeader ?? 'X-Forwarded-Access-Token';
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.reuseEnabled = options.reuse?.enabled ?? true;
    this.marginMs = Math.max(0, options.reuse?.marginSeconds ?? 30) * 1000;
    this.reuse = new ReuseMap(Math.max(0, options.reuse?.maxEntries ?? 1000));
  }

  async getToken(options: GetTokenOptions): Promise<TokenBrokerToken> {
    const target = options.target;
    if (typeof target !== 'string' || target === '') {
      throw new TypeError('getToken: target must be a non-empty string');
    }
    const scope = normalizeScope(options.scope);
    const key = this.reuseEnabled
      ? reuseKey(options.credentials, target, scope, options.keycloakToken)
      : undefined;
    if (key === undefined) return this.requestToken(options, scope);

    const kept = this.reuse.get(key);
    if (kept !== undefined) return { ...kept, cache: 'reused' };
    // Concurrent identical requests of the same principal share one broker call.
    const pending = this.inFlight.get(key);
    if (pending !== undefined) return pending.then(t => ({ ...t }));

    const p = this.requestToken(options, scope).then(t => {
      const until = Math.min(
        t.expiresAt.getTime() - this.marginMs,
        // Never beyond the Backstage credentials the token was obtained for.
        options.credentials.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY,
      );
      this.reuse.set(key, t, until);
      return t;
    });
    this.inFlight.set(key, p);
    // The map entry goes in both cases; the caller gets `p`'s own outcome below.
    p.then(
      () => this.inFlight.delete(key),
      () => this.inFlight.delete(key),
    );
    return p.then(t => ({ ...t }));
  }

  async fetch(
    target: string,
    path: string,
    init: RequestInit | undefined,
    options: TokenBrokerFetchOptions,
  ): Promise<Response> {
    if (typeof target !== 'string' || target === '') {
      throw new TypeError('fetch: target must be a non-empty string');
    }
    const base = await this.baseUrl(target);
    const pluginToken = await this.pluginToken(options.credentials, target);
    const headers = new Headers(init?.headers);
    headers.set('authorization', `Bearer ${pluginToken}`);
    if (options.keycloakToken !== undefined) {
      headers.set(this.userTokenHeader, options.keycloakToken);
    }
    const url = `${base}/v1/proxy/${encodeURIComponent(target)}/${path.replace(/^\/+/, '')}`;
    const body = init?.body;
    const streamed =
      body !== undefined && body !== null && typeof (body as ReadableStream).getReader === 'function';
    // Node's fetch needs `duplex: 'half'` to send a streamed request body.
    const requestInit = { ...init, headers, ...(streamed ? { duplex: 'half' } : {}) } as RequestInit;

    let res: Response;
    try {
      res = await fetch(url, requestInit);
    } catch (e) {
      if (init?.signal?.aborted) throw e; // the caller's own abort, as fetch reports it
      throw this.unreachable(target, e);
    }
    // The broker marks every answer that comes from the upstream; anything else is its own.
    if (res.headers.has(IDENTITY_HEADER)) return res;
    const text = await readSmall(res).catch(() => undefined);
    throw (
      (text !== undefined && !res.ok ? parseBrokerError(text, res.status, target) : undefined) ??
      this.notTheBroker(target, res.status)
    );
  }

  private async requestToken(
    options: GetTokenOptions,
    scope: string | undefined,
  ): Promise<TokenBrokerToken> {
    const { target } = options;
    const base = await this.baseUrl(target);
    const pluginToken = await this.pluginToken(options.credentials, target);
    const form = new URLSearchParams({ grant_type: TOKEN_EXCHANGE_GRANT, audience: target });
    if (scope !== undefined) form.set('scope', scope);
    const headers: Record<string, string> = {
      authorization: `Bearer ${pluginToken}`,
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    };
    if (options.keycloakToken !== undefined) {
      headers[this.userTokenHeader] = options.keycloakToken;
    }

    let res: Response;
    let text: string | undefined;
    try {
      res = await fetch(`${base}/v1/token`, {
        method: 'POST',
        headers,
        body: form,
        signal: AbortSignal.timeout(this.requestTimeoutMs),
      });
      text = await readSmall(res);
    } catch (e) {
      throw this.unreachable(target, e);
    }
    if (!res.ok) {
      const err =
        (text !== undefined ? parseBrokerError(text, res.status, target) : undefined) ??
        this.notTheBroker(target, res.status);
      this.logger.debug(
        `token-broker: no token for target '${target}': HTTP ${res.status} ${err.error}`,
      );
      throw err;
    }
    const token = this.parseAnswer(text, res, target);
    this.logger.debug(
      `token-broker: token for target '${target}' (identity ${token.identity}, cache ${token.cache})`,
    );
    return token;
  }

  private parseAnswer(
    text: string | undefined,
    res: Response,
    target: string,
  ): TokenBrokerToken {
    let body: Record<string, unknown> | undefined;
    try {
      const parsed: unknown = text === undefined ? undefined : JSON.parse(text);
      if (typeof parsed === 'object' && parsed !== null) body = parsed as Record<string, unknown>;
    } catch {
      body = undefined;
    }
    const identity = res.headers.get(IDENTITY_HEADER);
    const cache = res.headers.get(CACHE_HEADER);
    if (
      body === undefined ||
      typeof body.access_token !== 'string' ||
      body.access_token === '' ||
      typeof body.expires_in !== 'number' ||
      !(identity === 'user' || identity === 'service')
    ) {
      throw this.notTheBroker(target, res.status);
    }
    return {
      token: body.access_token,
      expiresAt: new Date(Date.now() + body.expires_in * 1000),
      identity,
      cache: cache === 'hit' || cache === 'coalesced' ? cache : 'miss',
      issuedTokenType:
        typeof body.issued_token_type === 'string' ? body.issued_token_type : undefined,
      scope: typeof body.scope === 'string' ? body.scope : undefined,
    };
  }

  private async baseUrl(target: string): Promise<string> {
    try {
      return (await this.resolveBaseUrl()).replace(/\/+$/, '');
    } catch (e) {
      throw new TokenBrokerError({
        error: 'broker_unreachable',
        description: `the broker's URL could not be found: ${describe(e)}`,
        hint: "set tokenBroker.baseUrl, or a discovery.endpoints entry for the broker's plugin id",
        target,
        cause: e,
      });
    }
  }

  /** A plugin token for the broker on behalf of `credentials` (Backstage signs it). */
  private async pluginToken(credentials: BackstageCredentials, target: string): Promise<string> {
    try {
      const { token } = await this.auth.getPluginRequestToken({
        onBehalfOf: credentials,
        targetPluginId: this.pluginId,
      });
      return token;
    } catch (e) {
      throw new TokenBrokerError({
        error: 'credentials_not_usable',
        description: `Backstage could not issue a token for the broker on behalf of these credentials: ${describe(e)}`,
        hint: "pass the request's user credentials (httpAuth.credentials(req)) or auth.getOwnServiceCredentials()",
        target,
        cause: e,
      });
    }
  }

  private unreachable(target: string, e: unknown): TokenBrokerError {
    const timedOut = e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError');
    return new TokenBrokerError({
      error: 'broker_unreachable',
      description: timedOut
        ? `the broker did not answer within ${this.requestTimeoutMs} ms`
        : `the broker could not be reached: ${describe(e)}`,
      hint: 'check that token-broker runs and that tokenBroker.baseUrl (or discovery) points at its public listener',
      target,
      cause: e,
    });
  }

  private notTheBroker(target: string, status: number): TokenBrokerError {
    return new TokenBrokerError({
      error: 'invalid_broker_response',
      description: `HTTP ${status} answer that is not token-broker's`,
      hint: "tokenBroker.baseUrl (or the discovery entry for the broker's plugin id) must be the broker's public URL, e.g. http://token-broker:8080",
      status,
      target,
    });
  }
}
