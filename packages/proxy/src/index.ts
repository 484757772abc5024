// The config loader and schemas (zod, yaml) are the `@enclave-extras/proxy/config` entry: a
// process that only forwards (the route API) does not load them. Their output types stay here.
export type {
  ConfigIssue,
  DnsServiceConfig,
  EgressGatewayConfig,
  EgressGatewayServerConfig,
  RouteConfig,
} from './config.js';
export {
  buildDnsError,
  buildDnsResponse,
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  type DnsAnswer,
  type DnsQuestion,
  DnsRcode,
  type DnsRecord,
  dnsMessageId,
  parseDnsQuery,
  parseDnsResponse,
} from './dns-message.js';
export {
  createDnsService,
  type DnsService,
  type DnsServiceOptions,
  type DnsServiceStats,
} from './dns-service.js';
export {
  describeEndpoint,
  type Endpoint,
  formatEndpoint,
  parseEndpoint,
  type TcpEndpoint,
  type UnixEndpoint,
  VMADDR_CID_ANY,
  type VsockEndpoint,
} from './endpoint.js';
export { ProxyError, type ProxyErrorCode, type ProxyErrorOptions } from './errors.js';
export {
  createEgressGateway,
  createEgressGatewayServer,
  createTransparentGateway,
  type Dialer,
  type DialTarget,
  type EgressGatewayOptions,
  type EgressGatewayServerOptions,
  type HttpConnectDialerOptions,
  httpConnectDialer,
  openParentTunnel,
  type ParentTunnelOptions,
  type TransparentGatewayOptions,
  type TransparentTarget,
} from './gateway.js';
export {
  DEFAULT_FD_RESERVE,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS_PER_PEER_VSOCK,
  type FdStatus,
} from './limits.js';
export { type Logger, silentLogger } from './logger.js';
export {
  MetricsRegistry,
  RouteMetrics,
  type RouteMetricsSnapshot,
  renderPrometheus,
} from './metrics.js';
export {
  normalizeHost,
  Policy,
  type PolicyConfig,
  type PolicyDecision,
  type PolicyOptions,
  type PolicyRefusalCode,
  type PolicyRule,
  type PolicyRuleObject,
  type PortSet,
} from './policy.js';
export { strictPort } from './port.js';
export {
  createResolver,
  createSystemLookup,
  DEFAULT_DNS_TIMEOUT_MS,
  DEFAULT_MAX_LOOKUPS_PER_PEER,
  type DnsLimits,
  getaddrinfoLookup,
  type LookupFunction,
  type LookupOptions,
  type LookupResult,
  parseHostsFile,
  type ResolvedAddress,
  type ResolveOptions,
  type Resolver,
  type ResolverOptions,
  type SystemLookupOptions,
  systemLookup,
} from './resolver.js';
export {
  type CloseOptions,
  createRoute,
  type DialContext,
  type DialRetries,
  Route,
  type RouteDialer,
  type RouteLimits,
  type RouteOptions,
} from './route.js';
export {
  type ApplyResult,
  createProxyRuntime,
  ProxyRuntime,
  type ProxyRuntimeOptions,
  type RouteStatus,
  type RuntimeConfig,
} from './runtime.js';
export {
  type DialOptions,
  dialEndpoint,
  dialTcp,
  type ProxySocket,
  type VsockApi,
  type VsockOptions,
  type VsockServerLike,
} from './transport.js';
