/** Stable error codes of @enclave-extras/volumes. */
export const VOLUME_ERROR_CODES = [
  'ERR_VOLUME_CONFIG',
  'ERR_VOLUME_MOUNT_POINT_MISSING',
  'ERR_VOLUME_ALREADY_MOUNTED',
  'ERR_VOLUME_LOCKED',
  'ERR_VOLUME_SERVER_UNREACHABLE',
  'ERR_VOLUME_MOUNT_FAILED',
  'ERR_VOLUME_KEY_REFUSED',
  'ERR_VOLUME_WRONG_KEY',
  'ERR_VOLUME_CORRUPT',
  'ERR_VOLUME_INCOMPLETE',
  'ERR_VOLUME_NO_SPACE',
  'ERR_VOLUME_UNSUPPORTED',
  'ERR_VOLUME_UNMOUNT_FAILED',
  'ERR_VOLUME_ABORTED',
] as const;

export type VolumeErrorCode = (typeof VOLUME_ERROR_CODES)[number];

export interface VolumeErrorOptions {
  cause?: unknown;
  /** The volume's name in the config. */
  volume?: string;
  /** The path or address involved (mount point, image file, `127.0.0.1:2049`). */
  path?: string;
  /** The failing system call (mount, umount2, ioctl ...) and its errno code. */
  syscall?: string;
  errno?: string;
}

// One brand per class for every copy of the package in a process (see `VolumeError[Symbol.hasInstance]`).
const BRAND = Symbol.for('@enclave-extras/volumes:VolumeError');

/** The one error class of @enclave-extras/volumes. `code` is stable; `cause` keeps the original error. */
export class VolumeError extends Error {
  /**
   * True for a VolumeError from any copy of this package in the process (ESM and CommonJS builds
   * side by side, or two installed versions): `instanceof` checks a `Symbol.for` brand.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  override readonly name = 'VolumeError';
  readonly code: VolumeErrorCode;
  readonly volume?: string;
  readonly path?: string;
  readonly syscall?: string;
  readonly errno?: string;

  constructor(code: VolumeErrorCode, message: string, options: VolumeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    if (options.volume !== undefined) this.volume = options.volume;
    if (options.path !== undefined) this.path = options.path;
    if (options.syscall !== undefined) this.syscall = options.syscall;
    if (options.errno !== undefined) this.errno = options.errno;
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
