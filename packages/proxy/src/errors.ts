/** Stable error codes of @enclave-extras/proxy. Socket errors keep their errno code (ECONNREFUSED ...). */
export type ProxyErrorCode =
  | 'ERR_PROXY_BAD_ENDPOINT'
  | 'ERR_PROXY_BAD_OPTION'
  | 'ERR_PROXY_BAD_POLICY'
  | 'ERR_PROXY_POLICY_DENIED'
  | 'ERR_PROXY_UNSPECIFIED_ADDRESS'
  | 'ERR_PROXY_DNS'
  | 'ERR_PROXY_DNS_TIMEOUT'
  | 'ERR_PROXY_DNS_LIMIT'
  | 'ERR_PROXY_DIAL_FAILED'
  | 'ERR_PROXY_DIAL_TIMEOUT'
  | 'ERR_PROXY_MAX_CONNECTIONS'
  | 'ERR_PROXY_MAX_CONNECTIONS_PER_PEER'
  | 'ERR_PROXY_FD_HEADROOM'
  | 'ERR_PROXY_LISTEN_FAILED'
  | 'ERR_PROXY_GATEWAY_PROTOCOL'
  | 'ERR_PROXY_VSOCK_UNAVAILABLE'
  | 'ERR_PROXY_ABORTED'
  | 'ERR_PROXY_CLOSED'
  | 'ERR_CONFIG_INVALID'
  | 'ERR_CONFIG_READ';

export interface ProxyErrorOptions {
  cause?: unknown;
  /** The failing system call for socket errors (connect, listen, getaddrinfo ...). */
  syscall?: string;
  /** The address involved, printed like `127.0.0.1:443`, `[::1]:443`, `vm(16):5000`, `unix:/path`. */
  address?: string;
  /** Extra structured detail (config issues, policy rule ...). */
  details?: Record<string, unknown>;
}

// One brand per class for every copy of the package in a process (see `ProxyError[Symbol.hasInstance]`).
const BRAND = Symbol.for('@enclave-extras/proxy:ProxyError');

/** The one error class of @enclave-extras/proxy. `code` is stable; `cause` keeps the original error. */
export class ProxyError extends Error {
  /**
   * True for a ProxyError from any copy of this package in the process (its ESM and CommonJS builds
   * loaded side by side, or two installed versions): `instanceof` checks a `Symbol.for` brand
   * that every ProxyError carries, not the prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  override readonly name = 'ProxyError';
  readonly code: ProxyErrorCode | (string & {});
  readonly syscall?: string;
  readonly address?: string;
  readonly details?: Record<string, unknown>;

  constructor(
    code: ProxyErrorCode | (string & {}),
    message: string,
    options: ProxyErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    if (options.syscall !== undefined) this.syscall = options.syscall;
    if (options.address !== undefined) this.address = options.address;
    if (options.details !== undefined) this.details = options.details;
  }
}

/** Extracts the code of any thrown value (errno code for socket errors), for counters and logs. */
export function errorCode(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err) {
    const c = (err as { code?: unknown }).code;
    if (typeof c === 'string' && c.length > 0) return c;
  }
  return 'ERR_UNKNOWN';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Wraps a socket error into a ProxyError keeping its errno code, syscall and the address. */
export function socketError(err: unknown, address: string, what: string): ProxyError {
  if (err instanceof ProxyError) return err;
  const code = errorCode(err);
  const syscall =
    err && typeof err === 'object' && 'syscall' in err
      ? String((err as { syscall?: unknown }).syscall)
      : undefined;
  return new ProxyError(
    code === 'ERR_UNKNOWN' ? 'ERR_PROXY_DIAL_FAILED' : code,
    `${what} ${address} failed: ${errorMessage(err)}`,
    { cause: err, address, ...(syscall ? { syscall } : {}) },
  );
}
