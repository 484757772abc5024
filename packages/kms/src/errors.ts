/** Stable error codes of @enclave-extras/kms (socket failures keep their errno code instead). */
export const KMS_ERROR_CODES = [
  'ERR_KMS_CMS_MALFORMED',
  'ERR_KMS_CMS_TRUNCATED',
  'ERR_KMS_CMS_UNSUPPORTED_ALGORITHM',
  'ERR_KMS_CMS_WRONG_RECIPIENT',
  'ERR_KMS_CMS_BAD_PADDING',
  'ERR_KMS_INVALID_ARGUMENT',
  'ERR_KMS_ATTESTATION',
  'ERR_KMS_RESPONSE',
  'ERR_KMS_DIAL',
  'ERR_KMS_POLICY',
  'ERR_KMS_SEALED_MALFORMED',
  'ERR_KMS_SEALED_PCR_MISMATCH',
  'ERR_KMS_CREDENTIALS',
  'ERR_KMS_LOCAL_CONFIG',
  'ERR_KMS_LOCAL_STORE',
] as const;

export type KmsErrorCode = (typeof KMS_ERROR_CODES)[number];

export interface KmsErrorOptions {
  cause?: unknown;
  /** For socket errors: the failing system call (`connect`, `listen`, ...). */
  syscall?: string;
  /** For socket errors: the address as printed by the project (`vm(3):8000`, `127.0.0.1:443`). */
  address?: string;
}

// One brand per class for every copy of the package in a process (see `KmsError[Symbol.hasInstance]`).
const BRAND = Symbol.for('@enclave-extras/kms:KmsError');

/** The one error class of @enclave-extras/kms. `code` is stable; match on it, not on the message. */
export class KmsError extends Error {
  /**
   * True for a KmsError from any copy of this package in the process (its ESM and CommonJS builds
   * loaded side by side, or two installed versions): `instanceof` checks a `Symbol.for` brand
   * that every KmsError carries, not the prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  override readonly name = 'KmsError';
  /** `ERR_KMS_...`, or an errno code (`ECONNREFUSED` ...) for socket failures. */
  readonly code: KmsErrorCode | (string & {});
  readonly syscall?: string;
  readonly address?: string;

  constructor(code: KmsErrorCode | (string & {}), message: string, options: KmsErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    if (options.syscall !== undefined) this.syscall = options.syscall;
    if (options.address !== undefined) this.address = options.address;
  }
}

/** @internal */
export function kmsError(code: KmsErrorCode, message: string, cause?: unknown): KmsError {
  return new KmsError(code, message, cause === undefined ? {} : { cause });
}
