/** NSM device error names (the `ErrorCode` enum of aws-nitro-enclaves-nsm-api), in wire order. */
export const NSM_DEVICE_ERRORS = [
  'Success',
  'InvalidArgument',
  'InvalidIndex',
  'InvalidResponse',
  'ReadOnlyIndex',
  'InvalidOperation',
  'BufferTooSmall',
  'InputTooLarge',
  'InternalError',
] as const;

/** One of the error names the NSM answers with (`{"Error": "<name>"}`). */
export type NsmDeviceErrorName = (typeof NSM_DEVICE_ERRORS)[number];

/** Every stable `ERR_NSM_*` code of @enclave-extras/nsm. */
export const NSM_ERROR_CODES = [
  // answered by the NSM (device or simulator)
  'ERR_NSM_INVALID_ARGUMENT',
  'ERR_NSM_INVALID_INDEX',
  'ERR_NSM_INVALID_RESPONSE',
  'ERR_NSM_READ_ONLY_INDEX',
  'ERR_NSM_INVALID_OPERATION',
  'ERR_NSM_BUFFER_TOO_SMALL',
  'ERR_NSM_INPUT_TOO_LARGE',
  'ERR_NSM_INTERNAL_ERROR',
  // raised by this package
  'ERR_NSM_NO_DEVICE',
  'ERR_NSM_PERMISSION',
  'ERR_NSM_FFI_UNAVAILABLE',
  'ERR_NSM_IO',
  'ERR_NSM_CLOSED',
  'ERR_NSM_UNEXPECTED_RESPONSE',
  'ERR_NSM_PROTOCOL',
  'ERR_NSM_SIMULATOR',
] as const;

export type NsmErrorCode = (typeof NSM_ERROR_CODES)[number];

const DEVICE_CODE: Record<Exclude<NsmDeviceErrorName, 'Success'>, NsmErrorCode> = {
  InvalidArgument: 'ERR_NSM_INVALID_ARGUMENT',
  InvalidIndex: 'ERR_NSM_INVALID_INDEX',
  InvalidResponse: 'ERR_NSM_INVALID_RESPONSE',
  ReadOnlyIndex: 'ERR_NSM_READ_ONLY_INDEX',
  InvalidOperation: 'ERR_NSM_INVALID_OPERATION',
  BufferTooSmall: 'ERR_NSM_BUFFER_TOO_SMALL',
  InputTooLarge: 'ERR_NSM_INPUT_TOO_LARGE',
  InternalError: 'ERR_NSM_INTERNAL_ERROR',
};

const DEVICE_HINT: Record<Exclude<NsmDeviceErrorName, 'Success'>, string> = {
  InvalidArgument: 'check the request fields',
  InvalidIndex: 'PCR indexes are 0..31 (LockPCRs range 0..32)',
  InvalidResponse: 'the NSM could not build its response; retry',
  ReadOnlyIndex: 'the PCR is locked: it can no longer be extended or locked again',
  InvalidOperation: 'the NSM did not understand the request (malformed CBOR or unknown request)',
  BufferTooSmall: 'the response did not fit the buffer',
  InputTooLarge: 'shorten the input (user_data, nonce and public_key are at most 1024 bytes)',
  InternalError: 'the NSM failed internally; retry',
};

export interface NsmErrorOptions {
  cause?: unknown;
  /** The raw NSM error name when the device/simulator answered `{"Error": name}`. */
  nsmError?: NsmDeviceErrorName;
  /** The request or field the error is about (`describePcr(40)`, `userData`, ...). */
  field?: string;
  /** For socket and file errors: the failing system call. */
  syscall?: string;
  /** For socket and file errors: the path/address (`unix:/tmp/nsm.sock`, `/dev/nsm`). */
  address?: string;
  /** For system errors: the numeric errno. */
  errno?: number;
}

// One brand per class for every copy of the package in a process (see `NsmError[Symbol.hasInstance]`).
const BRAND = Symbol.for('@enclave-extras/nsm:NsmError');

/**
 * The one error class of @enclave-extras/nsm. `code` is a stable `ERR_NSM_*` string, or for socket
 * errors of the simulator daemon transport the errno code (`ECONNREFUSED`, `ENOENT` ...).
 */
export class NsmError extends Error {
  /**
   * True for a NsmError from any copy of this package in the process (its ESM and CommonJS builds
   * loaded side by side, or two installed versions): `instanceof` checks a `Symbol.for` brand
   * that every NsmError carries, not the prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  override readonly name = 'NsmError';
  readonly code: NsmErrorCode | string;
  readonly nsmError?: NsmDeviceErrorName;
  readonly field?: string;
  readonly syscall?: string;
  readonly address?: string;
  readonly errno?: number;

  constructor(code: NsmErrorCode | string, message: string, options: NsmErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    if (options.nsmError !== undefined) this.nsmError = options.nsmError;
    if (options.field !== undefined) this.field = options.field;
    if (options.syscall !== undefined) this.syscall = options.syscall;
    if (options.address !== undefined) this.address = options.address;
    if (options.errno !== undefined) this.errno = options.errno;
  }
}

/** The NsmError for a device answer `{"Error": name}` to `request`. */
export function deviceError(name: string, request: string): NsmError {
  if (name in DEVICE_CODE) {
    const n = name as Exclude<NsmDeviceErrorName, 'Success'>;
    return new NsmError(DEVICE_CODE[n], `${request}: the NSM answered ${n}: ${DEVICE_HINT[n]}`, {
      nsmError: n,
      field: request,
    });
  }
  return new NsmError(
    'ERR_NSM_UNEXPECTED_RESPONSE',
    `${request}: the NSM answered an unknown error ${JSON.stringify(name)}`,
    { field: request },
  );
}

/** Maps a device error name to its code (for the simulator and tests). */
export function deviceErrorCode(name: Exclude<NsmDeviceErrorName, 'Success'>): NsmErrorCode {
  return DEVICE_CODE[name];
}

/** Wraps a system error (from fs/net) keeping its errno code, syscall and address. */
export function systemError(err: unknown, message: string, address: string): NsmError {
  if (err instanceof NsmError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = typeof e?.code === 'string' ? e.code : 'ERR_NSM_IO';
  return new NsmError(code, `${message}: ${e?.message ?? String(err)}`, {
    cause: err,
    syscall: e?.syscall,
    address,
    errno: typeof e?.errno === 'number' ? e.errno : undefined,
  });
}
