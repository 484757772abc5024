export {
  type AppExit,
  exitStatus,
  FORWARDED_SIGNALS,
  type ProxyEnvOptions,
  proxyEnv,
  type RunAppOptions,
  runApp,
} from './child.js';
export {
  type ClockConfig,
  clockConfigSchema,
  DEFAULT_TIME_PORT,
  type TimeServiceConfig,
  timeServiceSchema,
} from './clock/config.js';
export { bestEstimate, type OffsetEstimate, sampleOffset, type TimeSample } from './clock/math.js';
export { type SystemClock, systemClock } from './clock/native.js';
export { createTimeServer, type TimeServer, type TimeServerOptions } from './clock/server.js';
export {
  ClockSync,
  type ClockSyncOptions,
  type Measurement,
  type MeasureOptions,
  measureOffset,
  type SyncResult,
  startClockSync,
} from './clock/sync.js';
export {
  type EnclaveConfig,
  enclaveConfigSchema,
  enclaveDnsSchema,
  enclaveNetworkSchema,
  transparentEgressSchema,
} from './config.js';
export {
  type DnsStub,
  type DnsStubOptions,
  type DnsStubStats,
  type ResolvConfResult,
  startDnsStub,
  writeResolvConf,
} from './dns-stub.js';
export {
  type ExemptDestination,
  installRedirectRules,
  type RedirectRules,
  type RedirectRulesOptions,
} from './egress-rules.js';
export { RuntimeError, type RuntimeErrorCode, type RuntimeErrorOptions } from './errors.js';
export {
  type HostsEntry,
  type HostsFileOptions,
  type HostsFileResult,
  renderHostsFile,
  updateHostsFile,
} from './hosts.js';
export {
  DEFAULT_LOGS_PORT,
  type LogServiceConfig,
  type LogsConfig,
  logServiceSchema,
  logsConfigSchema,
} from './logs/config.js';
export {
  LogForwarder,
  type LogForwarderOptions,
  type LogForwarderStats,
  startLogForwarder,
} from './logs/forwarder.js';
export {
  type DroppedRun,
  type LogFrame,
  LogFrameDecoder,
  type LogStream,
} from './logs/protocol.js';
export {
  createLogServer,
  type EnclaveMetrics,
  formatLogFrame,
  type LogServer,
  type LogServerOptions,
} from './logs/server.js';
export {
  isLoopbackV4,
  type LoopbackOptions,
  type LoopbackResult,
  setupLoopback,
} from './network.js';
export { type OriginalDestination, originalDestination } from './original-dst.js';
export { mergePrometheus, type PrometheusSource } from './prometheus.js';
export {
  loopbackAliases,
  type PrepareEnclaveOptions,
  prepareEnclaveNetwork,
  type RunEnclaveOptions,
  runEnclave,
} from './run.js';
export {
  exemptDestinations,
  startTransparentEgress,
  type TransparentEgress,
  type TransparentEgressOptions,
} from './transparent.js';
