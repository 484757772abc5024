/** Every stable error code of @enclave-extras/attestation. */
export const ATTESTATION_ERROR_CODES = [
  'ERR_ATTESTATION_BAD_INPUT',
  'ERR_ATTESTATION_MALFORMED_CBOR',
  'ERR_ATTESTATION_BAD_STRUCTURE',
  'ERR_ATTESTATION_FIELD_SIZE',
  'ERR_ATTESTATION_UNSUPPORTED_ALG',
  'ERR_ATTESTATION_BAD_SIGNATURE',
  'ERR_ATTESTATION_UNTRUSTED_ROOT',
  'ERR_ATTESTATION_CERT_EXPIRED',
  'ERR_ATTESTATION_CERT_NOT_YET_VALID',
  'ERR_ATTESTATION_CHAIN_INVALID',
  'ERR_ATTESTATION_PCR_MISMATCH',
  'ERR_ATTESTATION_NONCE_MISMATCH',
  'ERR_ATTESTATION_USER_DATA_MISMATCH',
  'ERR_ATTESTATION_PUBLIC_KEY_MISMATCH',
  'ERR_ATTESTATION_STALE',
  'ERR_ATTESTATION_DEBUG_ENCLAVE',
  'ERR_ATTESTATION_SIGNER',
  'ERR_ATTESTATION_INTERNAL',
] as const;

export type AttestationErrorCode = (typeof ATTESTATION_ERROR_CODES)[number];

export interface AttestationErrorOptions {
  /** The original error (cbor/DER/crypto), kept for debugging. */
  cause?: unknown;
  /** The document field or certificate the failure is about (`payload.pcrs[3]`, `cabundle[2]` ...). */
  field?: string;
}

// One brand per class for every copy of the package in a process (see `AttestationError[Symbol.hasInstance]`).
const BRAND = Symbol.for('@enclave-extras/attestation:AttestationError');

/** The one error class of @enclave-extras/attestation. `code` is stable, `field` names the failing part. */
export class AttestationError extends Error {
  /**
   * True for a AttestationError from any copy of this package in the process (its ESM and CommonJS builds
   * loaded side by side, or two installed versions): `instanceof` checks a `Symbol.for` brand
   * that every AttestationError carries, not the prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  override readonly name = 'AttestationError';
  readonly code: AttestationErrorCode;
  readonly field?: string;

  constructor(code: AttestationErrorCode, message: string, options: AttestationErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    if (options.field !== undefined) this.field = options.field;
  }
}

/** Wraps any thrown value as an AttestationError unless it already is one. */
export function wrapError(
  err: unknown,
  code: AttestationErrorCode,
  message: string,
  field?: string,
): AttestationError {
  if (err instanceof AttestationError) return err;
  const detail = err instanceof Error ? `: ${err.message}` : '';
  return new AttestationError(code, `${message}${detail}`, { cause: err, field });
}
