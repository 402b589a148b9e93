/**
 * The one error type of this library: every failure of `getToken` and every answer of the
 * broker itself in `fetch` is a {@link TokenBrokerError}.
 *
 * The broker answers errors as RFC 6749 §5.2 JSON (`error`, `error_description`, and its own
 * `hint` and `idp_status`); those fields are carried over unchanged. Failures that happen before
 * an answer (broker unreachable, timeout, an answer that is not the broker's JSON, the plugin
 * token could not be minted) get a code of this library, listed in
 * {@link TokenBrokerLocalErrorCode}.
 *
 * @packageDocumentation
 */

/**
 * Codes this library uses when there is no RFC 6749 answer from the broker.
 *
 * - `broker_unreachable`: no HTTP answer (connection refused, DNS, TLS, timeout).
 * - `invalid_broker_response`: an answer that is not the broker's (not its JSON, or a token
 *   answer without `access_token`): usually a wrong `tokenBroker.baseUrl` / discovery entry.
 * - `credentials_not_usable`: Backstage could not mint a plugin token for the broker on behalf
 *   of the given credentials (e.g. `none` credentials of an unauthenticated request).
 *
 * @public
 */
export type TokenBrokerLocalErrorCode =
  | 'broker_unreachable'
  | 'invalid_broker_response'
  | 'credentials_not_usable';

/** @public */
export interface TokenBrokerErrorOptions {
  error: string;
  description: string;
  hint?: string;
  status?: number;
  idpStatus?: number;
  target: string;
  cause?: unknown;
}

/**
 * A failed token request or a refusal by the broker.
 *
 * @public
 */
export class TokenBrokerError extends Error {
  /** The OAuth `error` code of the broker (e.g. `invalid_request`, `access_denied`,
   * `temporarily_unavailable`), or a {@link TokenBrokerLocalErrorCode}. */
  readonly error: string;
  /** The broker's `error_description`; never contains a token. */
  readonly description: string;
  /** The broker's `hint`: the likely fix, when it knows one. */
  readonly hint?: string;
  /** The HTTP status of the broker's answer; undefined when there was no answer. */
  readonly status?: number;
  /** Keycloak's HTTP status when the refusal came from Keycloak (`idp_status`). */
  readonly idpStatus?: number;
  /** The target the request was for. */
  readonly target: string;

  constructor(options: TokenBrokerErrorOptions) {
    const where = options.status === undefined ? '' : ` (HTTP ${options.status})`;
    super(
      `token-broker refused target '${options.target}'${where}: ${options.error}: ${options.description}`,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'TokenBrokerError';
    this.error = options.error;
    this.description = options.description;
    this.hint = options.hint;
    this.status = options.status;
    this.idpStatus = options.idpStatus;
    this.target = options.target;
  }

  /** True when a later retry may succeed (the broker or Keycloak was unavailable). */
  get retryable(): boolean {
    return (
      this.error === 'broker_unreachable' ||
      this.error === 'temporarily_unavailable' ||
      this.status === 503 ||
      this.status === 504
    );
  }
}

/** Reads the broker's RFC 6749 JSON error body; `undefined` when it is not one. */
export function parseBrokerError(
  body: string,
  status: number,
  target: string,
): TokenBrokerError | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const o = parsed as Record<string, unknown>;
  if (typeof o.error !== 'string') return undefined;
  return new TokenBrokerError({
    error: o.error,
    description:
      typeof o.error_description === 'string' ? o.error_description : 'no description given',
    hint: typeof o.hint === 'string' ? o.hint : undefined,
    status,
    idpStatus: typeof o.idp_status === 'number' ? o.idp_status : undefined,
    target,
  });
}
