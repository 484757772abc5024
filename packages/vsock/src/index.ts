export { formatVsockAddress, parseVsockAddress, type VsockAddress } from './address.js';
export {
  connect,
  createConnection,
  type DialedSocket,
  type DialRequest,
  type HttpConnectCallback,
  localCid,
  type UndiciConnectCallback,
  type VsockConnectOptions,
  type VsockDialer,
  type VsockDialerOptions,
  vsockDialer,
} from './connect.js';
export {
  CID_ANY,
  CID_HOST,
  CID_HYPERVISOR,
  CID_LOCAL,
  CID_PARENT,
  PORT_ANY,
} from './constants.js';
export {
  createEmulatedTransport,
  type EmulatedTransportOptions,
  emulatedSocketPath,
  emulatedVmSocketPath,
} from './emulated.js';
export { VsockError, type VsockErrorDetails } from './errors.js';
export { defaultTransport, VSOCK_DIR_ENV } from './select.js';
export {
  type CreateServerOptions,
  createServer,
  type VsockListenOptions,
  VsockServer,
  type VsockServerEvents,
} from './server.js';
export { type TransportKind, VsockSocket } from './socket.js';
export type { VsockTransport } from './transport.js';

import { kernelTransport as kernel } from './kernel.js';
import type { VsockTransport } from './transport.js';

/** The AF_VSOCK transport of the running kernel (the default without ENCLAVE_EXTRAS_VSOCK_DIR). */
export const kernelTransport: VsockTransport = kernel;
