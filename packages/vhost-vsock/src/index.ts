export {
  createVhostVsockBackend,
  type VhostVsockBackend,
  type VhostVsockBackendOptions,
} from './backend.js';
export { VhostVsockError, type VhostVsockErrorCode } from './errors.js';
export { type Logger, silentLogger } from './logger.js';
export type { VhostVsockStats } from './vsock.js';
