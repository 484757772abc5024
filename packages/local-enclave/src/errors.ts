/**
 * Stable error codes of `@enclave-extras/local-enclave`. Scripts may branch on them; they never
 * change meaning. New codes may be added.
 */
export type LocalEnclaveErrorCode =
  /** No enclave kernel (bzImage) was found: give one, or build it (see the message). */
  | 'ERR_LOCAL_ENCLAVE_KERNEL_MISSING'
  /** The package's static init (dist/init) is missing: build the package on Linux x86_64 with gcc. */
  | 'ERR_LOCAL_ENCLAVE_INIT_MISSING'
  /** No QEMU with the `nitro-enclave` machine was found, or the one given lacks it. */
  | 'ERR_LOCAL_ENCLAVE_QEMU_MISSING'
  /** The vhost-user-vsock backend (@enclave-extras/vhost-vsock) cannot be loaded or started. */
  | 'ERR_LOCAL_ENCLAVE_BACKEND'
  /** The EIF cannot be read, or is not an EIF. */
  | 'ERR_LOCAL_ENCLAVE_EIF'
  /** The enclave did not boot: QEMU exited, or no heartbeat came in time (console tail attached). */
  | 'ERR_LOCAL_ENCLAVE_BOOT_FAILED'
  /** No running enclave has this ID. */
  | 'ERR_LOCAL_ENCLAVE_NOT_FOUND'
  /** The enclave CID is taken by another running local enclave. */
  | 'ERR_LOCAL_ENCLAVE_CID_IN_USE'
  /** The run directory (enclave state files) cannot be read or written. */
  | 'ERR_LOCAL_ENCLAVE_STATE'
  /** An argument is invalid (type, range, combination). */
  | 'ERR_LOCAL_ENCLAVE_INVALID_ARGUMENT'
  /** The operation was cancelled through its AbortSignal. */
  | 'ERR_LOCAL_ENCLAVE_ABORTED';

/** Extra, machine-readable context of a {@link LocalEnclaveError}. */
export interface LocalEnclaveErrorDetails {
  /** The file concerned (EIF, kernel, QEMU, state file). */
  path?: string;
  /** The option or field concerned, e.g. `memoryMiB`. */
  field?: string;
  /** The enclave concerned. */
  enclaveId?: string;
  /** The last lines of the enclave console (boot failures). */
  consoleTail?: string;
  /** The underlying error. */
  cause?: unknown;
  [key: string]: unknown;
}

// One brand per class for every copy of the package in a process (see `LocalEnclaveError[Symbol.hasInstance]`).
const BRAND = Symbol.for('@enclave-extras/local-enclave:LocalEnclaveError');

/**
 * The one error class of `@enclave-extras/local-enclave`. `code` is stable (see
 * {@link LocalEnclaveErrorCode}); the message names what failed and what to do; `cause` is kept.
 */
export class LocalEnclaveError extends Error {
  /**
   * True for a LocalEnclaveError from any copy of this package in the process (its ESM and CommonJS builds
   * loaded side by side, or two installed versions): `instanceof` checks a `Symbol.for` brand
   * that every LocalEnclaveError carries, not the prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  readonly code: LocalEnclaveErrorCode;
  readonly details: LocalEnclaveErrorDetails;

  constructor(
    code: LocalEnclaveErrorCode,
    message: string,
    details: LocalEnclaveErrorDetails = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.name = 'LocalEnclaveError';
    this.code = code;
    const { cause: _cause, ...rest } = details;
    this.details = rest;
  }
}

/** True for a {@link LocalEnclaveError}, optionally with the given code. */
export function isLocalEnclaveError(
  err: unknown,
  code?: LocalEnclaveErrorCode,
): err is LocalEnclaveError {
  return err instanceof LocalEnclaveError && (code === undefined || err.code === code);
}

/** A pino-compatible logger (`logger.info({ enclaveId }, 'message')`); the default is silent. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const noop = (): void => {};
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };
