import { getSystemErrorMap } from 'node:util';

/** Fields a {@link VsockError} may carry besides its code and message. */
export interface VsockErrorDetails {
  /** Negative errno as Node reports it (e.g. -111 for ECONNREFUSED), when a syscall failed. */
  errno?: number;
  /** The failing system call (`connect`, `bind`, `read`, ...). */
  syscall?: string;
  /** The vsock address concerned, formatted like `vm(16):5000`. */
  address?: string;
  /** The operation of this package that failed (`connect`, `listen`, `localCid`, ...). */
  op?: string;
  /** The local address of the socket, formatted like `local(1):1027`. */
  localAddress?: string;
  /** The remote address of the socket, formatted like `vm(16):5000`. */
  remoteAddress?: string;
  /** The underlying error. */
  cause?: unknown;
}

// One brand per class for every copy of the package in a process (see `VsockError[Symbol.hasInstance]`).
const BRAND = Symbol.for('@enclave-extras/vsock:VsockError');

/**
 * The one error class of `@enclave-extras/vsock`.
 *
 * `code` is stable: socket failures keep their errno name (`ECONNREFUSED`, `ETIMEDOUT`,
 * `ECONNRESET`, `EADDRINUSE`, `ENODEV`, `EAFNOSUPPORT`, ...), argument problems use Node's
 * `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE` / `ERR_OUT_OF_RANGE`, and the package's own
 * conditions use `ERR_VSOCK_*` / `ERR_SERVER_*` codes.
 */
export class VsockError extends Error {
  /**
   * True for a VsockError from any copy of this package in the process (its ESM and CommonJS builds
   * loaded side by side, or two installed versions): `instanceof` checks a `Symbol.for` brand
   * that every VsockError carries, not the prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && BRAND in value;
  }

  readonly code: string;
  readonly errno?: number;
  readonly syscall?: string;
  readonly address?: string;
  readonly op?: string;
  readonly localAddress?: string;
  readonly remoteAddress?: string;

  constructor(code: string, message: string, details: VsockErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.name = 'VsockError';
    this.code = code;
    if (details.errno !== undefined) this.errno = details.errno;
    if (details.syscall !== undefined) this.syscall = details.syscall;
    if (details.address !== undefined) this.address = details.address;
    if (details.op !== undefined) this.op = details.op;
    if (details.localAddress !== undefined) this.localAddress = details.localAddress;
    if (details.remoteAddress !== undefined) this.remoteAddress = details.remoteAddress;
  }
}

const NO_TRANSPORT = 'no vsock transport: is this an enclave or a VM with virtio-vsock?';

const HINTS: Record<string, string> = {
  ECONNREFUSED:
    'nothing is listening on that cid/port; start the server first or check the address',
  ETIMEDOUT: 'the peer did not answer in time; check the cid and that the peer VM is running',
  ECONNRESET: 'the peer reset the connection',
  EADDRINUSE: 'another socket is bound to that port; pick another port or stop the other listener',
  EADDRNOTAVAIL: 'that cid is not local to this machine; listen on CID_ANY or this VM own cid',
  ENODEV: NO_TRANSPORT,
  EAFNOSUPPORT: NO_TRANSPORT,
  ENOENT: NO_TRANSPORT,
  EACCES: 'permission denied; ports below 1024 need CAP_NET_BIND_SERVICE',
  EHOSTUNREACH: 'no route to that cid; check that the peer VM exists',
  ENETUNREACH: 'no route to that cid; check that the peer VM exists',
};

/** Name of a (positive or negative) errno, e.g. 111 -> ECONNREFUSED. */
export function errnoName(errno: number): string {
  const entry = getSystemErrorMap().get(-Math.abs(errno));
  return entry ? entry[0] : `E${Math.abs(errno)}`;
}

function errnoText(errno: number): string {
  const entry = getSystemErrorMap().get(-Math.abs(errno));
  return entry ? entry[1] : 'unknown error';
}

/** A Node-style system error: `connect ECONNREFUSED vm(16):5000: <hint>`. */
export function systemError(
  errno: number,
  syscall: string,
  details: VsockErrorDetails & { codeOverride?: string } = {},
): VsockError {
  const code = details.codeOverride ?? errnoName(errno);
  const hint = HINTS[code] ?? errnoText(errno);
  const where = details.address ? ` ${details.address}` : '';
  return new VsockError(code, `${syscall} ${code}${where}: ${hint}`, {
    ...details,
    errno: -Math.abs(errno),
    syscall,
  });
}

export function invalidArgType(name: string, expected: string, value: unknown): VsockError {
  const got = value === null ? 'null' : typeof value;
  return new VsockError(
    'ERR_INVALID_ARG_TYPE',
    `The "${name}" argument must be ${expected}; received ${got}`,
  );
}

export function invalidArgValue(name: string, value: unknown, reason: string): VsockError {
  return new VsockError(
    'ERR_INVALID_ARG_VALUE',
    `The "${name}" argument ${reason}; received ${JSON.stringify(value)}`,
  );
}

export function outOfRange(name: string, range: string, value: unknown): VsockError {
  return new VsockError(
    'ERR_OUT_OF_RANGE',
    `The value of "${name}" is out of range: it must be ${range}; received ${String(value)}`,
  );
}

/** Error given to sockets and servers when an AbortSignal fires. */
export function abortError(op: string, address: string, reason: unknown): VsockError {
  return new VsockError('ABORT_ERR', `${op} ${address} was aborted`, {
    op,
    address,
    cause: reason,
  });
}
