export {
  type AppExit,
  exitStatus,
  FORWARDED_SIGNALS,
  type ProxyEnvOptions,
  proxyEnv,
  type RunAppOptions,
  runApp,
} from './child.js';
export { type EnclaveConfig, enclaveConfigSchema, enclaveNetworkSchema } from './config.js';
export { RuntimeError, type RuntimeErrorCode, type RuntimeErrorOptions } from './errors.js';
export {
  type HostsEntry,
  type HostsFileOptions,
  type HostsFileResult,
  renderHostsFile,
  updateHostsFile,
} from './hosts.js';
export {
  isLoopbackV4,
  type LoopbackOptions,
  type LoopbackResult,
  setupLoopback,
} from './network.js';
export {
  loopbackAliases,
  type PrepareEnclaveOptions,
  prepareEnclaveNetwork,
  type RunEnclaveOptions,
  runEnclave,
} from './run.js';
