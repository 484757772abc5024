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

/** The one error class of `@enclave-extras/vhost-vsock`; `code` is stable. */
export class VhostVsockError extends Error {
  readonly code: VhostVsockErrorCode;
  constructor(code: VhostVsockErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VhostVsockError';
    this.code = code;
  }
}
