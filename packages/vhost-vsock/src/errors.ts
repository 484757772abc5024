/** Stable codes of {@link VhostVsockError}. */
export type VhostVsockErrorCode =
  | 'ERR_VHOST_VSOCK_INVALID_ARG'
  | 'ERR_VHOST_VSOCK_LISTEN'
  | 'ERR_VHOST_VSOCK_PROTOCOL'
  | 'ERR_VHOST_VSOCK_MEMORY'
  | 'ERR_VHOST_VSOCK_SYSCALL'
  | 'ERR_VHOST_VSOCK_PORT_IN_USE'
  | 'ERR_VHOST_VSOCK_CLOSED'
  | 'ABORT_ERR';

const BRAND = Symbol.for('@enclave-extras/vhost-vsock:VhostVsockError');

/**
 * The one error class of `@enclave-extras/vhost-vsock`; `code` is stable. `instanceof` holds across
 * the ESM and CommonJS builds loaded in one process (a `Symbol.for` brand).
 */
export class VhostVsockError extends Error {
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }
  readonly code: VhostVsockErrorCode;
  constructor(code: VhostVsockErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.name = 'VhostVsockError';
    this.code = code;
  }
}
