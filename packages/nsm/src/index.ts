export { getDevRoot } from './ca.js';
export {
  type AttestationRequest,
  MAX_RANDOM_BYTES,
  NsmClient,
  type NsmClientOptions,
} from './client.js';
export {
  type ServeSimulatorOptions,
  type SimulatorServer,
  type SocketTransportOptions,
  serveSimulator,
  socketTransport,
} from './daemon.js';
export { type DeviceTransportOptions, deviceTransport, NSM_IOCTL_REQUEST } from './device.js';
export {
  NSM_DEVICE_ERRORS,
  NSM_ERROR_CODES,
  type NsmDeviceErrorName,
  NsmError,
  type NsmErrorCode,
  type NsmErrorOptions,
} from './errors.js';
export {
  MAX_FIELD_BYTES,
  MAX_RANDOM_PER_REQUEST,
  MAX_REQUEST_BYTES,
  MAX_RESPONSE_BYTES,
  type NsmDescription,
  type NsmDigest,
  PCR_COUNT,
  type PcrDescription,
} from './protocol.js';
export { NsmSimulator, type NsmSimulatorOptions } from './simulator.js';
export type { Logger, NsmTransport } from './transport.js';
