/**
 * The Backstage service: {@link tokenBrokerServiceRef} and its default factory, which reads
 * the `tokenBroker` configuration keys and finds the broker's URL.
 *
 * @packageDocumentation
 */

import {
  coreServices,
  createServiceFactory,
  createServiceRef,
  type AuthService,
  type DiscoveryService,
  type LoggerService,
  type RootConfigService,
} from '@backstage/backend-plugin-api';

import {
  DefaultTokenBrokerService,
  type DefaultTokenBrokerServiceOptions,
  type TokenBrokerService,
} from './client';

/**
 * Reads the `tokenBroker` keys of app-config.yaml (README "Configuration").
 *
 * @public
 */
export function readTokenBrokerConfig(
  config: RootConfigService,
  discovery: DiscoveryService,
): Omit<DefaultTokenBrokerServiceOptions, 'auth' | 'logger'> {
  const c = config.getOptionalConfig('tokenBroker');
  const pluginId = c?.getOptionalString('pluginId') ?? 'token-broker';
  const explicit = c?.getOptionalString('baseUrl');
  let baseUrl: DefaultTokenBrokerServiceOptions['baseUrl'];
  if (explicit !== undefined) {
    let url: URL;
    try {
      url = new URL(explicit);
    } catch {
      throw new Error(`tokenBroker.baseUrl is not a URL: '${explicit}'`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new Error(`tokenBroker.baseUrl must be an http or https URL, got '${explicit}'`);
    }
    baseUrl = explicit.replace(/\/+$/, '');
  } else {
    // The broker registered in discovery under its plugin id (discovery.endpoints).
    baseUrl = () => discovery.getBaseUrl(pluginId);
  }
  const reuse = c?.getOptionalConfig('reuse');
  return {
    baseUrl,
    pluginId,
    userTokenHeader: c?.getOptionalString('userTokenHeader'),
    requestTimeoutMs: c?.getOptionalNumber('requestTimeoutMs'),
    reuse: {
      enabled: reuse?.getOptionalBoolean('enabled'),
      marginSeconds: reuse?.getOptionalNumber('marginSeconds'),
      maxEntries: reuse?.getOptionalNumber('maxEntries'),
    },
  };
}

const deps = {
  auth: coreServices.auth,
  config: coreServices.rootConfig,
  discovery: coreServices.discovery,
  logger: coreServices.logger,
};

function create({
  auth,
  config,
  discovery,
  logger,
}: {
  auth: AuthService;
  config: RootConfigService;
  discovery: DiscoveryService;
  logger: LoggerService;
}): TokenBrokerService {
  return new DefaultTokenBrokerService({
    auth,
    logger,
    ...readTokenBrokerConfig(config, discovery),
  });
}

/**
 * The service plugins inject next to `coreServices.auth` and `coreServices.httpAuth`:
 * `deps: { tokenBroker: tokenBrokerServiceRef }`. Plugin-scoped: each plugin gets its own
 * client, which mints plugin tokens with that plugin's identity, and its own reuse.
 *
 * @public
 */
export const tokenBrokerServiceRef = createServiceRef<TokenBrokerService>({
  id: 'token-broker.client',
  scope: 'plugin',
  defaultFactory: async service => createServiceFactory({ service, deps, factory: create }),
});

/**
 * The default factory of {@link tokenBrokerServiceRef}, for backends that list their service
 * factories explicitly (`backend.add(tokenBrokerServiceFactory)`); without it the service ref's
 * default factory, which is the same, is used.
 *
 * @public
 */
export const tokenBrokerServiceFactory = createServiceFactory({
  service: tokenBrokerServiceRef,
  deps,
  factory: create,
});
