/** Stable error codes of @enclave-extras/runtime. System errors keep their errno code (EPERM, ENOENT ...). */
export type RuntimeErrorCode =
  | 'ERR_RUNTIME_NET_SETUP'
  | 'ERR_RUNTIME_HOSTS'
  | 'ERR_RUNTIME_APP_START'
  | 'ERR_RUNTIME_REAPER_UNAVAILABLE'
  | 'ERR_RUNTIME_EGRESS_SETUP'
  | 'ERR_RUNTIME_ORIGINAL_DST'
  | 'ERR_RUNTIME_DNS_SETUP'
  | 'ERR_RUNTIME_CLOCK_UNAVAILABLE'
  | 'ERR_RUNTIME_CLOCK_SET'
  | 'ERR_RUNTIME_CLOCK_UNREACHABLE'
  | 'ERR_RUNTIME_CLOCK_TIMEOUT'
  | 'ERR_RUNTIME_CLOCK_PROTOCOL'
  | 'ERR_RUNTIME_LOGS_PROTOCOL'
  | 'ERR_RUNTIME_LISTEN';

export interface RuntimeErrorOptions {
  cause?: unknown;
  /** The failing system call or command (`prctl`, `ip addr add ...`, `iptables -t nat ...`). */
  syscall?: string;
  /** The address or path involved (`127.0.0.2`, `/etc/hosts`, `10.0.0.5:5432`). */
  address?: string;
  /** Extra structured detail (errno ...). */
  details?: Record<string, unknown>;
}

// One brand per class for every copy of the package in a process (see `RuntimeError[Symbol.hasInstance]`).
const BRAND = Symbol.for('@enclave-extras/runtime:RuntimeError');

/** The one error class of @enclave-extras/runtime. `code` is stable; `cause` keeps the original error. */
export class RuntimeError extends Error {
  /**
   * True for a RuntimeError from any copy of this package in the process (its ESM and CommonJS
   * builds loaded side by side, or two installed versions): `instanceof` checks a `Symbol.for`
   * brand that every RuntimeError carries, not the prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  override readonly name = 'RuntimeError';
  readonly code: RuntimeErrorCode | (string & {});
  readonly syscall?: string;
  readonly address?: string;
  readonly details?: Record<string, unknown>;

  constructor(
    code: RuntimeErrorCode | (string & {}),
    message: string,
    options: RuntimeErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    if (options.syscall !== undefined) this.syscall = options.syscall;
    if (options.address !== undefined) this.address = options.address;
    if (options.details !== undefined) this.details = options.details;
  }
}

/** The code of any thrown value (errno code for system errors), for logs. */
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
