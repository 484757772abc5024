import { existsSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { formatVsockAddress, type VsockAddress, validateU32 } from './address.js';
import { CID_ANY, CID_LOCAL, PORT_ANY } from './constants.js';
import { invalidArgType, invalidArgValue, systemError } from './errors.js';
import {
  closeFd,
  EAGAIN,
  MSG_PEEK,
  type PollWatch,
  pipes,
  recvFd,
  sendFd,
  unixConnectFd,
  watchReadable,
} from './native.js';
import { kInternals, setAddresses, VsockSocket } from './socket.js';
import {
  type BoundListener,
  type ConnectRequest,
  type ListenRequest,
  registerTransport,
  type TransportImpl,
  type VsockTransport,
} from './transport.js';

const ECONNREFUSED_ERRNO = 111;

/**
 * Whether someone listens on the Unix socket at `path`, decided synchronously by a non-blocking
 * connect: `alive` (accepted, or the backlog is full), `stale` (ECONNREFUSED: the file is left
 * over from a process that died), `unknown` (the probe could not run: the caller probes
 * asynchronously instead).
 */
function probeUnixSocket(path: string): 'alive' | 'stale' | 'unknown' {
  let fd: number;
  try {
    fd = unixConnectFd(path);
  } catch {
    return 'unknown';
  }
  if (fd >= 0) {
    closeFd(fd);
    return 'alive';
  }
  if (fd === -EAGAIN) return 'alive';
  if (fd === -ECONNREFUSED_ERRNO) return 'stale';
  return 'unknown';
}

/** Options of {@link createEmulatedTransport}. */
export interface EmulatedTransportOptions {
  /** Directory holding the Unix sockets (created with mode 0700 on first listen). */
  dir: string;
  /** The CID this process pretends to have (default CID_LOCAL = 1). */
  localCid?: number;
}

// Every emulated connection starts with this preamble from the client: magic, then the
// client's (cid, port) as u32 LE, so the server can report remoteCid/remotePort.
const MAGIC = Buffer.from('EEv1', 'latin1');
const PREAMBLE = 12;
const PREAMBLE_TIMEOUT_MS = 10_000;
const EADDRINUSE = 98;
const ETIMEDOUT = 110;
const MAX_UNIX_PATH = 107;

/** The Unix socket path for a listener on (cid, port); CID_ANY maps to `any_<port>.sock`. */
export function emulatedSocketPath(dir: string, address: VsockAddress): string {
  const name = address.cid === CID_ANY ? 'any' : String(address.cid);
  return join(dir, `${name}_${address.port}.sock`);
}

/**
 * The per-VM socket of a VM whose vsock device is bridged into `dir` (by
 * `@enclave-extras/vhost-vsock`): `${dir}/vm_<cid>.sock`. A client reaches the VM's port P by
 * connecting there and writing `CONNECT P\n`; the backend answers `OK <hostport>\n` once the
 * guest accepted, or closes the socket when it refused (the hybrid-vsock convention).
 */
export function emulatedVmSocketPath(dir: string, cid: number): string {
  return join(dir, `vm_${cid}.sock`);
}

const ECONNREFUSED = 111;
const EPROTO = 71;
const MAX_OK_LINE = 64;

interface SocketInternals {
  connecting: boolean;
  _unrefTimer(): void;
}

/**
 * Connects through a VM's per-VM socket: the `CONNECT` line goes out at once; the socket is
 * `connecting` (writes queue) until the `OK` line arrives, read without a thread through
 * uv_poll before libuv's stream takes the fd over. A close before `OK` is ECONNREFUSED.
 */
function connectThroughVm(
  vmPath: string,
  remote: VsockAddress,
  local: VsockAddress,
  req: ConnectRequest,
): VsockSocket {
  const address = formatVsockAddress(remote);
  const fail = (errno: number, syscall: string) => {
    const socket = new VsockSocket({ kind: 'emulated', allowHalfOpen: req.allowHalfOpen });
    setAddresses(socket, undefined, remote);
    (socket as unknown as SocketInternals).connecting = true;
    process.nextTick(() =>
      socket.destroy(
        systemError(errno, syscall, { address, remoteAddress: address, op: 'connect' }),
      ),
    );
    return socket;
  };
  const fd = unixConnectFd(vmPath);
  if (fd < 0) return fail(-fd === 2 ? ECONNREFUSED : -fd, 'connect');
  const sent = sendFd(fd, Buffer.from(`CONNECT ${remote.port}\n`, 'latin1'));
  if (sent < 0) {
    closeFd(fd);
    return fail(-sent === 32 ? ECONNREFUSED : -sent, 'write');
  }
  const { Pipe, constants } = pipes();
  const handle = new Pipe(constants.SOCKET);
  const openErr = handle.open(fd);
  if (openErr < 0) {
    closeFd(fd);
    return fail(-openErr, 'open');
  }
  const s = new VsockSocket({
    kind: 'emulated',
    handle,
    allowHalfOpen: req.allowHalfOpen,
    manualStart: true,
  });
  const si = s as unknown as SocketInternals;
  si.connecting = true;
  setAddresses(s, undefined, remote);
  let watch: PollWatch | undefined;
  let timer: NodeJS.Timeout | undefined;
  const stop = () => {
    watch?.close();
    watch = undefined;
    if (timer) clearTimeout(timer);
    timer = undefined;
  };
  const settle = (errno: number, syscall: string, hostPort?: number) => {
    stop();
    if (s.destroyed) return;
    if (errno) {
      s.destroy(systemError(errno, syscall, { address, remoteAddress: address, op: 'connect' }));
      return;
    }
    setAddresses(s, { cid: local.cid, port: hostPort ?? local.port }, remote);
    s[kInternals].cleanup = undefined;
    s[kInternals].refWatch = undefined;
    si.connecting = false;
    si._unrefTimer();
    s.emit('connect');
    s.emit('ready');
    if (!s.isPaused()) s.read(0);
  };
  const peek = Buffer.alloc(MAX_OK_LINE);
  const onReadable = () => {
    if (s.destroyed) return stop();
    const n = recvFd(fd, peek, MSG_PEEK);
    if (n === -EAGAIN) return;
    if (n <= 0) return settle(ECONNREFUSED, 'connect'); // closed: the guest refused
    const nl = peek.subarray(0, n).indexOf(0x0a);
    if (nl < 0) {
      if (n >= MAX_OK_LINE) settle(EPROTO, 'read');
      return;
    }
    const line = Buffer.alloc(nl + 1);
    recvFd(fd, line);
    const m = /^OK (\d+)\r?\n$/.exec(line.toString('latin1'));
    if (!m) return settle(EPROTO, 'read');
    settle(0, 'connect', Number(m[1]));
  };
  s[kInternals].cleanup = stop;
  s[kInternals].refWatch = (ref) => {
    if (ref) watch?.ref();
    else watch?.unref();
  };
  if (req.connectTimeout !== undefined) {
    timer = setTimeout(() => settle(ETIMEDOUT, 'connect'), req.connectTimeout);
    timer.unref();
  }
  watch = watchReadable(fd, onReadable);
  return s;
}

let ephemeral = 1024 + Math.floor(Math.random() * 0x3fff_0000);
function nextEphemeral(): number {
  ephemeral = ephemeral >= 0x7fff_ffff ? 1024 : ephemeral + 1;
  return ephemeral;
}

/**
 * An emulated vsock transport over Unix sockets, for development and CI without vsock.
 *
 * Mapping: a listener on (cid, port) is `${dir}/${cid}_${port}.sock`, a listener on CID_ANY is
 * `${dir}/any_${port}.sock`. A connect to (cid, port) goes to `${cid}_${port}.sock` when it
 * exists, else, when a VM with that CID is bridged into `dir` (its `vm_<cid>.sock` exists, see
 * {@link emulatedVmSocketPath}), into that VM, else to `any_${port}.sock`: every process sharing
 * `dir` is one emulated machine reachable under any CID, so ports are one namespace per
 * directory.
 */
export function createEmulatedTransport(options: EmulatedTransportOptions): VsockTransport {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgType('options', 'an object { dir }', options);
  }
  if (typeof options.dir !== 'string' || options.dir.length === 0) {
    throw invalidArgType('options.dir', 'a non-empty string', options.dir);
  }
  const dir = resolve(options.dir);
  const longest = join(dir, `${CID_ANY}_${PORT_ANY}.sock`);
  if (Buffer.byteLength(longest) > MAX_UNIX_PATH) {
    throw invalidArgValue(
      'options.dir',
      options.dir,
      `is too long for Unix socket paths (max ${MAX_UNIX_PATH - 27} bytes); use a shorter directory such as /tmp/vsock`,
    );
  }
  const myCid = validateU32(options.localCid ?? CID_LOCAL, 'options.localCid');

  const connect = (req: ConnectRequest): VsockSocket => {
    const remote = { cid: req.cid, port: req.port };
    const local = { cid: myCid, port: nextEphemeral() };
    const exact = emulatedSocketPath(dir, remote);
    if (!existsSync(exact) && remote.cid !== CID_ANY) {
      const vmPath = emulatedVmSocketPath(dir, remote.cid);
      if (existsSync(vmPath)) return connectThroughVm(vmPath, remote, local, req);
    }
    const path = existsSync(exact)
      ? exact
      : emulatedSocketPath(dir, { cid: CID_ANY, port: req.port });
    const socket = new VsockSocket({ kind: 'emulated', allowHalfOpen: req.allowHalfOpen });
    setAddresses(socket, undefined, remote);
    let timer: NodeJS.Timeout | undefined;
    if (req.connectTimeout !== undefined) {
      timer = setTimeout(() => {
        if (socket.connecting) {
          const address = formatVsockAddress(remote);
          socket.destroy(
            systemError(ETIMEDOUT, 'connect', { address, remoteAddress: address, op: 'connect' }),
          );
        }
      }, req.connectTimeout);
      timer.unref();
    }
    socket.once('connect', () => {
      if (timer) clearTimeout(timer);
      setAddresses(socket, local, remote);
    });
    socket.once('close', () => timer && clearTimeout(timer));
    (net.Socket.prototype.connect as (options: net.IpcSocketConnectOpts) => net.Socket).call(
      socket,
      { path },
    );
    const preamble = Buffer.alloc(PREAMBLE);
    MAGIC.copy(preamble, 0);
    preamble.writeUInt32LE(local.cid, 4);
    preamble.writeUInt32LE(local.port, 8);
    socket.write(preamble);
    return socket;
  };

  const bindOnce = (path: string): { handle: BoundListener['handle']; err: number } => {
    const { Pipe, constants } = pipes();
    const handle = new Pipe(constants.SERVER);
    const err = handle.bind(path);
    if (err < 0) handle.close();
    return { handle, err };
  };

  const listen = (req: ListenRequest, cb: (err: Error | null, l?: BoundListener) => void) => {
    const address = formatVsockAddress({ cid: req.cid, port: req.port });
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (cause) {
      return cb(systemError(13, 'mkdir', { address, op: 'listen', cause }));
    }
    const finish = (port: number, handle: BoundListener['handle']) => {
      const l = handle.listen(req.backlog);
      if (l < 0) {
        handle.close();
        return cb(systemError(-l, 'listen', { address, op: 'listen' }));
      }
      cb(null, { handle, address: { cid: req.cid, port } });
    };
    if (req.port === PORT_ANY) {
      for (let i = 0; i < 64; i++) {
        const port = 49152 + Math.floor(Math.random() * 16384);
        const path = emulatedSocketPath(dir, { cid: req.cid, port });
        if (existsSync(path) || existsSync(emulatedSocketPath(dir, { cid: CID_ANY, port })))
          continue;
        const { handle, err } = bindOnce(path);
        if (err === 0) return finish(port, handle);
      }
      return cb(systemError(EADDRINUSE, 'bind', { address, op: 'listen' }));
    }
    const path = emulatedSocketPath(dir, { cid: req.cid, port: req.port });
    const first = bindOnce(path);
    if (first.err === 0) return finish(req.port, first.handle);
    if (-first.err !== EADDRINUSE) {
      return cb(systemError(-first.err, 'bind', { address, localAddress: address, op: 'listen' }));
    }
    // The file exists: in use, or left behind by a process that died. Probe it synchronously
    // (a connect to a Unix socket is decided at once), so that listen() has bound when it
    // returns, as on kernel vsock, and a connect made right after it reaches this listener.
    const state = probeUnixSocket(path);
    if (state === 'alive') {
      return cb(systemError(EADDRINUSE, 'bind', { address, localAddress: address, op: 'listen' }));
    }
    if (state === 'stale') {
      try {
        unlinkSync(path);
      } catch {}
      const again = bindOnce(path);
      if (again.err === 0) return finish(req.port, again.handle);
      return cb(systemError(-again.err, 'bind', { address, localAddress: address, op: 'listen' }));
    }
    // undecided (the synchronous probe is unavailable): probe through the event loop
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      cb(systemError(EADDRINUSE, 'bind', { address, localAddress: address, op: 'listen' }));
    });
    probe.once('error', () => {
      probe.destroy();
      try {
        unlinkSync(path);
      } catch {}
      const again = bindOnce(path);
      if (again.err === 0) return finish(req.port, again.handle);
      cb(systemError(-again.err, 'bind', { address, localAddress: address, op: 'listen' }));
    });
  };

  return registerTransport<TransportImpl>({
    kind: 'emulated',
    description: `emulated (unix sockets in ${dir})`,
    localCid: () => myCid,
    connect,
    listen,
    adopt(client, listener, options, cb) {
      const socket = new VsockSocket({
        kind: 'emulated',
        handle: client,
        allowHalfOpen: options.allowHalfOpen,
        pauseOnCreate: true,
      });
      const local = {
        cid: listener.address.cid === CID_ANY ? myCid : listener.address.cid,
        port: listener.address.port,
      };
      let done = false;
      const drop = () => {
        if (done) return;
        done = true;
        cleanup();
        socket.destroy();
        cb(null);
      };
      const timer = setTimeout(drop, PREAMBLE_TIMEOUT_MS);
      timer.unref();
      const onReadable = () => {
        const head = socket.read(PREAMBLE) as Buffer | null;
        if (head === null || done) return;
        done = true;
        cleanup();
        if (head.length !== PREAMBLE || !head.subarray(0, 4).equals(MAGIC)) {
          socket.destroy();
          return cb(null);
        }
        setAddresses(socket, local, { cid: head.readUInt32LE(4), port: head.readUInt32LE(8) });
        if (options.pauseOnConnect) socket.pause();
        cb(socket);
      };
      const cleanup = () => {
        clearTimeout(timer);
        socket.off('readable', onReadable);
        socket.off('end', drop);
        socket.off('error', drop);
      };
      socket.on('readable', onReadable);
      socket.once('end', drop);
      socket.once('error', drop);
    },
  });
}
