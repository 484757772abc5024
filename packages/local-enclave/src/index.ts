export type { VsockBackend, VsockBackendFactory, VsockBackendOptions } from './backend.js';
export {
  initPath,
  KERNEL_ENV,
  KERNEL_TOOL_ENV,
  type KernelOptions,
  type LocalBlobs,
  localBlobs,
  NITRO_CLI_CMDLINE_X86_64,
  resolveKernel,
  writeBlobsDir,
} from './blobs.js';
export {
  HEARTBEAT_BYTE,
  HEARTBEAT_PORT,
  type LocalEnclave,
  newEnclaveId,
  type StartEnclaveOptions,
  startEnclave,
} from './enclave.js';
export {
  isLocalEnclaveError,
  LocalEnclaveError,
  type LocalEnclaveErrorCode,
  type LocalEnclaveErrorDetails,
  type Logger,
} from './errors.js';
export { type Accel, NSM_VM_TOOL_ENV, QEMU_ENV, type QemuOptions, resolveQemu } from './qemu.js';
export {
  describeEnclaves,
  type EnclaveDescribeInfo,
  type EnclaveRunInfo,
  type EnclaveTerminateInfo,
  enclaveState,
  followConsole,
  type RunEnclaveOptions,
  runEnclave,
  terminateAllEnclaves,
  terminateEnclave,
} from './runner.js';
export { defaultRunDir, type EnclaveState, RUN_DIR_ENV } from './state.js';
