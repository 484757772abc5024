import type { VsockAddress } from './address.js';
import { invalidArgType } from './errors.js';
import type { UvStreamHandle } from './native.js';
import type { TransportKind, VsockSocket } from './socket.js';

/**
 * Where vsock connections go: the kernel (AF_VSOCK) or the Unix-socket emulation. Obtain one
 * from `kernelTransport`, `createEmulatedTransport()` or `defaultTransport()`; other objects
 * are rejected.
 */
export interface VsockTransport {
  readonly kind: TransportKind;
  /** Human-readable description, e.g. `kernel AF_VSOCK` or `emulated (unix sockets in /tmp/v)`. */
  readonly description: string;
  /** This machine's CID as the transport sees it. */
  localCid(): number;
}

/** @internal */
export interface ConnectRequest {
  cid: number;
  port: number;
  allowHalfOpen: boolean;
  connectTimeout?: number;
}

/** @internal */
export interface ListenRequest {
  cid: number;
  port: number;
  backlog: number;
}

/** @internal a bound, listening handle. */
export interface BoundListener {
  handle: UvStreamHandle;
  address: VsockAddress;
}

/** @internal */
export interface AdoptOptions {
  allowHalfOpen: boolean;
  pauseOnConnect: boolean;
}

/** @internal what the package needs from a transport. */
export interface TransportImpl extends VsockTransport {
  connect(req: ConnectRequest): VsockSocket;
  listen(req: ListenRequest, cb: (err: Error | null, listener?: BoundListener) => void): void;
  /** Wraps an accepted handle; calls back with the socket, or with null to drop it. */
  adopt(
    client: UvStreamHandle,
    listener: BoundListener,
    options: AdoptOptions,
    cb: (socket: VsockSocket | null) => void,
  ): void;
}

const known = new WeakSet<object>();

/** @internal */
export function registerTransport<T extends TransportImpl>(t: T): T {
  known.add(t);
  return t;
}

/** @internal */
export function asImpl(t: unknown, name: string): TransportImpl {
  if (typeof t !== 'object' || t === null || !known.has(t)) {
    throw invalidArgType(
      name,
      'a transport from kernelTransport, createEmulatedTransport() or defaultTransport()',
      t,
    );
  }
  return t as TransportImpl;
}
