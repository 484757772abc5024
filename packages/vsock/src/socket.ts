import net from 'node:net';
import { formatVsockAddress, type VsockAddress } from './address.js';
import { systemError, VsockError } from './errors.js';

/** What a VsockSocket runs over. */
export type TransportKind = 'kernel' | 'emulated';

/** @internal construction options (a superset of net.SocketConstructorOpts Node accepts). */
export interface VsockSocketInit {
  kind: TransportKind;
  allowHalfOpen?: boolean;
  handle?: unknown;
  pauseOnCreate?: boolean;
  manualStart?: boolean;
}

const ECONNRESET = 104;
const ENOENT = 2;
const ENOTCONN = 107;

/** @internal hooks of the package on a socket (not part of the public API). */
export const kInternals = Symbol('vsock.internals');

interface Internals {
  cleanup?: () => void;
  refWatch?: (ref: boolean) => void;
}

/**
 * A `net.Socket` over vsock (or over the Unix-socket emulation). It is a real `net.Socket`, so
 * `tls.connect({ socket })`, `http` and undici accept it; it adds the vsock addresses.
 */
export class VsockSocket extends net.Socket {
  /** CID of the peer (undefined until known). */
  declare readonly remoteCid: number | undefined;
  /** Port of the peer. */
  declare readonly remotePort: number | undefined;
  /** CID of this end (undefined until connected). */
  declare readonly localCid: number | undefined;
  /** Port of this end (undefined until connected; optional as in `net.Socket`). */
  declare readonly localPort?: number;
  /** `'kernel'` for AF_VSOCK, `'emulated'` for the Unix-socket emulation. */
  readonly transportKind: TransportKind;
  /** @internal */
  [kInternals]: Internals = {};

  constructor(init: VsockSocketInit) {
    const { kind, ...rest } = init;
    super(rest as net.SocketConstructorOpts);
    this.transportKind = kind;
    setAddresses(this, undefined, undefined);
  }

  /** `vm(16):5000`-style address of the peer, or undefined. */
  get remoteVsockAddress(): string | undefined {
    const { remoteCid: cid, remotePort: port } = this;
    return cid === undefined || port === undefined ? undefined : formatVsockAddress({ cid, port });
  }

  /** `local(1):1024`-style address of this end, or undefined. */
  get localVsockAddress(): string | undefined {
    const { localCid: cid, localPort: port } = this;
    return cid === undefined || port === undefined ? undefined : formatVsockAddress({ cid, port });
  }

  override ref(): this {
    this[kInternals]?.refWatch?.(true);
    return super.ref();
  }

  override unref(): this {
    this[kInternals]?.refWatch?.(false);
    return super.unref();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // may run from inside net.Socket's constructor, before class fields exist
    const internals = this[kInternals] as Internals | undefined;
    internals?.cleanup?.();
    if (internals) {
      internals.cleanup = undefined;
      internals.refWatch = undefined;
    }
    super._destroy(err ? toVsockError(this, err) : err, cb);
  }
}

/** @internal sets the four address fields (they shadow net.Socket's TCP-only getters). */
export function setAddresses(
  socket: VsockSocket,
  local: VsockAddress | undefined,
  remote: VsockAddress | undefined,
): void {
  const define = (name: string, value: number | undefined) =>
    Object.defineProperty(socket, name, {
      value,
      writable: true,
      configurable: true,
      enumerable: true,
    });
  if (local !== undefined || !Object.hasOwn(socket, 'localCid')) {
    define('localCid', local?.cid);
    define('localPort', local?.port);
  }
  if (remote !== undefined || !Object.hasOwn(socket, 'remoteCid')) {
    define('remoteCid', remote?.cid);
    define('remotePort', remote?.port);
  }
}

interface SystemErrorLike {
  code?: unknown;
  errno?: unknown;
  syscall?: unknown;
}

/** Maps Node/libuv system errors on a socket to VsockError with vsock addresses. */
export function toVsockError(socket: VsockSocket, err: Error): Error {
  if (err instanceof VsockError) return err;
  const e = err as Error & SystemErrorLike;
  if (typeof e.errno !== 'number' || typeof e.syscall !== 'string' || typeof e.code !== 'string') {
    return err;
  }
  const errno = Math.abs(e.errno);
  const remoteAddress = socket.remoteVsockAddress;
  const localAddress = socket.localVsockAddress;
  // While connecting, vsock answers "nobody listens" with a reset (and the emulation with a
  // missing socket file): both are what TCP calls ECONNREFUSED.
  const connecting = socket.connecting || e.syscall === 'connect';
  const refused = connecting && (errno === ECONNRESET || errno === ENOENT);
  // After a peer reset, vsock reads fail with ENOTCONN where TCP says ECONNRESET.
  const reset = !connecting && e.syscall === 'read' && errno === ENOTCONN;
  return systemError(refused ? 111 : reset ? ECONNRESET : errno, e.syscall, {
    ...(remoteAddress === undefined ? {} : { address: remoteAddress, remoteAddress }),
    ...(localAddress === undefined ? {} : { localAddress }),
    op: connecting ? 'connect' : e.syscall,
    cause: err,
  });
}
