/**
 * token-broker for Backstage backend plugins: one injected service
 * ({@link tokenBrokerServiceRef}) that gets per-user downstream tokens from token-broker
 * (RFC 8693 token exchange at Keycloak) or calls a target through the broker's proxy mode.
 *
 * @packageDocumentation
 */

export { tokenBrokerServiceRef, tokenBrokerServiceFactory, readTokenBrokerConfig } from './service';
export {
  DefaultTokenBrokerService,
  type DefaultTokenBrokerServiceOptions,
  type GetTokenOptions,
  type TokenBrokerFetchOptions,
  type TokenBrokerReuseOptions,
  type TokenBrokerService,
  type TokenBrokerToken,
} from './client';
export {
  TokenBrokerError,
  type TokenBrokerErrorOptions,
  type TokenBrokerLocalErrorCode,
} from './errors';
