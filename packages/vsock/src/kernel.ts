import { formatVsockAddress, type VsockAddress } from './address.js';
import { CID_ANY } from './constants.js';
import { systemError, type VsockError } from './errors.js';
import {
  bindFd,
  closeFd,
  connectFd,
  EINPROGRESS,
  ioctlLocalCid,
  type PollWatch,
  peerName,
  pipes,
  setConnectTimeout,
  socketError,
  sockName,
  vsockSocket,
  watchWritable,
} from './native.js';
import { kInternals, setAddresses, VsockSocket } from './socket.js';
import { type ConnectRequest, registerTransport, type TransportImpl } from './transport.js';

const ECONNRESET = 104;
const ENOTCONN = 107;
const ECONNREFUSED = 111;

interface SocketInternals {
  connecting: boolean;
  _unrefTimer(): void;
}

let cachedCid: number | undefined;

/** getsockname, with the CID_ANY an auto-bound client reports replaced by this VM's CID. */
function localName(fd: number): VsockAddress | undefined {
  const local = sockName(fd);
  if (typeof local === 'number') return undefined;
  if (local.cid === CID_ANY) {
    if (cachedCid === undefined) {
      const cid = ioctlLocalCid();
      if (cid >= 0) cachedCid = cid;
    }
    if (cachedCid !== undefined) return { cid: cachedCid, port: local.port };
  }
  return local;
}

function failed(req: ConnectRequest, err: Error): VsockSocket {
  const socket = new VsockSocket({ kind: 'kernel', allowHalfOpen: req.allowHalfOpen });
  setAddresses(socket, undefined, { cid: req.cid, port: req.port });
  (socket as unknown as SocketInternals).connecting = true;
  process.nextTick(() => socket.destroy(err));
  return socket;
}

function connectError(errno: number, syscall: string, address: string): VsockError {
  // vsock answers a connect to a port nobody listens on with a reset.
  return systemError(errno === ECONNRESET ? ECONNREFUSED : errno, syscall, {
    address,
    remoteAddress: address,
    op: 'connect',
  });
}

const PENDING = Symbol('pending');
type ConnectFailure = { errno: number; syscall: string };
type ConnectState = VsockAddress | ConnectFailure | typeof PENDING;

/**
 * Where a non-blocking connect stands: the peer address once connected (getpeername succeeds),
 * the error when it failed (SO_ERROR, read only when getpeername says ENOTCONN), else PENDING.
 */
function connectState(fd: number): ConnectState {
  const peer = peerName(fd);
  if (typeof peer !== 'number') return peer;
  if (peer !== -ENOTCONN) return { errno: -peer, syscall: 'getpeername' };
  const soErr = socketError(fd);
  return soErr ? { errno: soErr, syscall: 'connect' } : PENDING;
}

function kernelConnect(req: ConnectRequest): VsockSocket {
  const remote: VsockAddress = { cid: req.cid, port: req.port };
  const address = formatVsockAddress(remote);
  let fd: number;
  try {
    fd = vsockSocket();
  } catch (err) {
    return failed(req, err as Error);
  }
  if (fd < 0) return failed(req, connectError(-fd, 'socket', address));
  if (req.connectTimeout !== undefined) {
    const r = setConnectTimeout(fd, req.connectTimeout);
    if (r < 0) {
      closeFd(fd);
      return failed(req, connectError(-r, 'setsockopt', address));
    }
  }
  const r = connectFd(fd, req.cid, req.port);
  if (r < 0 && r !== -EINPROGRESS) {
    closeFd(fd);
    return failed(req, connectError(-r, 'connect', address));
  }
  const { Pipe, constants } = pipes();
  const handle = new Pipe(constants.SOCKET);
  const openErr = handle.open(fd);
  if (openErr < 0) {
    closeFd(fd);
    return failed(req, connectError(-openErr, 'open', address));
  }
  // The handle owns the fd from here; net.Socket gets it but must not read before 'connect'.
  const socket = new VsockSocket({
    kind: 'kernel',
    handle,
    allowHalfOpen: req.allowHalfOpen,
    manualStart: true,
  });
  const internals = socket as unknown as SocketInternals;
  internals.connecting = true;
  setAddresses(socket, undefined, remote);

  let watch: PollWatch | undefined;
  const stopWatch = () => {
    watch?.close();
    watch = undefined;
  };
  const settle = (state: VsockAddress | ConnectFailure) => {
    stopWatch();
    if (socket.destroyed) return;
    if ('errno' in state) {
      socket.destroy(connectError(state.errno, state.syscall, address));
      return;
    }
    setAddresses(socket, localName(fd), state);
    socket[kInternals].refWatch = undefined;
    socket[kInternals].cleanup = undefined;
    internals.connecting = false;
    internals._unrefTimer();
    socket.emit('connect');
    socket.emit('ready');
    if (!socket.isPaused()) socket.read(0);
  };
  const onWritable = () => {
    if (socket.destroyed) return stopWatch();
    const state = connectState(fd);
    if (state !== PENDING) settle(state); // else: wait for the next readiness event
  };
  socket[kInternals].cleanup = stopWatch;
  socket[kInternals].refWatch = (ref) => {
    if (ref) watch?.ref();
    else watch?.unref();
  };
  // A vsock handshake often completes before this point (loopback: the kernel runs it inside
  // connect(); a quick peer: while the objects above were built). One getpeername then settles
  // the connect on the next tick, with no uv_poll handle and no event-loop round trip.
  const state = connectState(fd);
  if (state !== PENDING) {
    process.nextTick(() => settle(state));
  } else {
    // libuv's uv_poll (koffi.node.poll) waits for writability: no thread, no blocking.
    // The Pipe handle has not started its own watcher yet, so the fd has a single watcher.
    watch = watchWritable(fd, onWritable);
  }
  return socket;
}

/** The AF_VSOCK transport of the running kernel. */
export const kernelTransport: TransportImpl = registerTransport({
  kind: 'kernel',
  description: 'kernel AF_VSOCK',
  localCid(): number {
    const cid = ioctlLocalCid();
    if (cid < 0) {
      throw systemError(-cid === 2 ? 19 : -cid, 'ioctl', {
        op: 'localCid',
        address: '/dev/vsock',
      });
    }
    return cid;
  },
  connect: kernelConnect,
  listen(req, cb) {
    const address = formatVsockAddress({ cid: req.cid, port: req.port });
    let fd: number;
    try {
      fd = vsockSocket();
    } catch (err) {
      return cb(err as Error);
    }
    const fail = (errno: number, syscall: string) => {
      closeFd(fd);
      cb(systemError(errno, syscall, { address, localAddress: address, op: 'listen' }));
    };
    if (fd < 0) return cb(systemError(-fd, 'socket', { address, op: 'listen' }));
    const b = bindFd(fd, req.cid, req.port);
    if (b < 0) return fail(-b, 'bind');
    const name = sockName(fd);
    if (typeof name === 'number') return fail(-name, 'getsockname');
    const { Pipe, constants } = pipes();
    const handle = new Pipe(constants.SERVER);
    const o = handle.open(fd);
    if (o < 0) return fail(-o, 'open');
    // libuv's uv_listen calls listen(2) and accept4(SOCK_NONBLOCK) when the fd is readable.
    const l = handle.listen(req.backlog);
    if (l < 0) {
      handle.close();
      return cb(systemError(-l, 'listen', { address, localAddress: address, op: 'listen' }));
    }
    cb(null, { handle, address: name });
  },
  adopt(client, _listener, options, cb) {
    const peer = peerName(client.fd);
    const local = localName(client.fd);
    const socket = new VsockSocket({
      kind: 'kernel',
      handle: client,
      allowHalfOpen: options.allowHalfOpen,
      pauseOnCreate: options.pauseOnConnect,
    });
    setAddresses(socket, local, typeof peer === 'number' ? undefined : peer);
    cb(socket);
  },
});
