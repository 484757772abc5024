/**
 * Stable error codes of `@enclave-extras/eif`. Scripts may branch on them; they never change
 * meaning. New codes may be added.
 */
export type EifErrorCode =
  /** The file does not start with the `.eif` magic. */
  | 'ERR_EIF_BAD_MAGIC'
  /** The header's version is not one this package reads (4). */
  | 'ERR_EIF_UNSUPPORTED_VERSION'
  /** The file ends before the header, a section header or a section's data does. */
  | 'ERR_EIF_TRUNCATED'
  /** The CRC32 stored in the header does not match the file's bytes. */
  | 'ERR_EIF_BAD_CRC'
  /** The section table is inconsistent (count, offsets, sizes, overlaps, trailing bytes). */
  | 'ERR_EIF_BAD_SECTION_TABLE'
  /** A section header carries a type this package does not know. */
  | 'ERR_EIF_UNKNOWN_SECTION'
  /** A mandatory section is missing, or sections are in an order nitro-cli does not write. */
  | 'ERR_EIF_BAD_LAYOUT'
  /** The metadata section is not the JSON object nitro-cli writes. */
  | 'ERR_EIF_BAD_METADATA'
  /** The signature section cannot be decoded (CBOR / COSE structure). */
  | 'ERR_EIF_BAD_SIGNATURE_SECTION'
  /** The signature does not verify, or signs a PCR0 other than the image's. */
  | 'ERR_EIF_SIGNATURE_INVALID'
  /** A measurement differs from the value it was required to have (`ee-eif verify --expect-pcr`). */
  | 'ERR_EIF_PCR_MISMATCH'
  /** The EIF is not signed but a signature was required. */
  | 'ERR_EIF_NOT_SIGNED'
  /** A signing key or certificate cannot be used (format, algorithm, key/cert mismatch). */
  | 'ERR_EIF_SIGNING_KEY'
  /** A blob (kernel, cmdline, init, nsm.ko) is missing or unreadable. */
  | 'ERR_EIF_BLOB_MISSING'
  /** The kernel command line is empty or contains a NUL byte. */
  | 'ERR_EIF_BAD_CMDLINE'
  /** The root file system source is invalid (not an OCI layout / docker archive / directory). */
  | 'ERR_EIF_ROOTFS_INVALID'
  /** An entry of the root file system would land outside it (`../`, absolute path, symlink). */
  | 'ERR_EIF_ROOTFS_TRAVERSAL'
  /** An entry type or field cannot be represented in a newc cpio archive. */
  | 'ERR_EIF_ROOTFS_UNSUPPORTED'
  /** A section's data stream failed or produced a different size than announced. */
  | 'ERR_EIF_SECTION_STREAM'
  /** Writing the output (temporary file, rename) failed. */
  | 'ERR_EIF_WRITE'
  /** Reading an input file failed for a reason other than it being missing. */
  | 'ERR_EIF_READ'
  /** Two EIFs that were expected to be identical differ (verify-reproducible). */
  | 'ERR_EIF_NOT_REPRODUCIBLE'
  /** An argument is invalid (type, range, combination). */
  | 'ERR_EIF_INVALID_ARGUMENT'
  /** The operation was cancelled through its AbortSignal. */
  | 'ERR_EIF_ABORTED';

/** Extra, machine-readable context of an {@link EifError}. */
export interface EifErrorDetails {
  /** The file concerned (EIF, blob, rootfs path). */
  path?: string;
  /** The field, section or entry concerned, e.g. `section[3].size` or `rootfs/etc/passwd`. */
  field?: string;
  /** The underlying error. */
  cause?: unknown;
  /** Anything else worth reporting (expected/actual values...). */
  [key: string]: unknown;
}

// One brand per class for every copy of the package in a process (see `EifError[Symbol.hasInstance]`).
const BRAND = Symbol.for('@enclave-extras/eif:EifError');

/**
 * The one error class of `@enclave-extras/eif`. `code` is stable (see {@link EifErrorCode}); the
 * message names the file/field concerned and what to do; `cause` keeps the underlying error.
 */
export class EifError extends Error {
  /**
   * True for a EifError from any copy of this package in the process (its ESM and CommonJS builds
   * loaded side by side, or two installed versions): `instanceof` checks a `Symbol.for` brand
   * that every EifError carries, not the prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  readonly code: EifErrorCode;
  readonly details: EifErrorDetails;

  constructor(code: EifErrorCode, message: string, details: EifErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.name = 'EifError';
    this.code = code;
    const { cause: _cause, ...rest } = details;
    this.details = rest;
  }
}

/** True for an {@link EifError}, optionally with the given code. */
export function isEifError(err: unknown, code?: EifErrorCode): err is EifError {
  return err instanceof EifError && (code === undefined || err.code === code);
}
