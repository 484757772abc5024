// Thin, lazily loaded bindings: libc socket calls through koffi, libuv stream handles through
// Node's pipe_wrap binding, and koffi's uv_poll wrapper for connect readiness. Internal only.
import koffi from 'koffi';
import { CID_ANY } from './constants.js';
import { VsockError } from './errors.js';

export const AF_VSOCK = 40;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD = 6;
const IOCTL_VM_SOCKETS_GET_LOCAL_CID = 0x7b9;
export const EINPROGRESS = 115;

/** A libuv stream handle from Node's pipe_wrap binding (the subset this package uses). */
export interface UvStreamHandle {
  readonly fd: number;
  open(fd: number): number;
  bind(path: string): number;
  listen(backlog: number): number;
  close(cb?: () => void): void;
  readStart(): number;
  readStop(): number;
  ref(): void;
  unref(): void;
  onconnection: ((status: number, client?: UvStreamHandle) => void) | null;
}

interface PipeBinding {
  Pipe: new (type: number) => UvStreamHandle;
  constants: { SOCKET: number; SERVER: number };
}

type SysFn = (...args: unknown[]) => number;

interface Libc {
  socket: SysFn;
  bind: SysFn;
  connect: SysFn;
  getsockname: SysFn;
  getpeername: SysFn;
  getsockopt: SysFn;
  setsockopt: SysFn;
  close: SysFn;
  open: SysFn;
  ioctl: SysFn;
  send: SysFn;
  recv: SysFn;
}

let libc: Libc | undefined;
let pipeBinding: PipeBinding | undefined;

function unsupported(op: string, cause: unknown): VsockError {
  return new VsockError(
    'EAFNOSUPPORT',
    `${op}: no vsock transport: is this an enclave or a VM with virtio-vsock? (AF_VSOCK needs Linux; for development use createEmulatedTransport({ dir }) or ENCLAVE_EXTRAS_VSOCK_DIR)`,
    { op, syscall: op, errno: -97, cause },
  );
}

export function sys(op: string): Libc {
  if (libc) return libc;
  if (process.platform !== 'linux')
    throw unsupported(op, new Error(`platform ${process.platform}`));
  try {
    const lib = koffi.load('libc.so.6');
    const f = (proto: string): SysFn => lib.func(proto) as unknown as SysFn;
    libc = {
      socket: f('int socket(int domain, int type, int protocol)'),
      bind: f('int bind(int fd, void *addr, uint32_t len)'),
      connect: f('int connect(int fd, void *addr, uint32_t len)'),
      // `len` is passed as a 4-byte Buffer (cheaper to marshal than koffi's _Inout_ array)
      getsockname: f('int getsockname(int fd, void *addr, void *len)'),
      getpeername: f('int getpeername(int fd, void *addr, void *len)'),
      getsockopt: f('int getsockopt(int fd, int level, int name, void *val, void *len)'),
      setsockopt: f('int setsockopt(int fd, int level, int name, void *val, uint32_t len)'),
      close: f('int close(int fd)'),
      open: f('int open(const char *path, int flags)'),
      ioctl: f('int ioctl(int fd, unsigned long request, void *arg)'),
      send: f('intptr_t send(int fd, void *buf, size_t len, int flags)'),
      recv: f('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
    };
    return libc;
  } catch (cause) {
    throw unsupported(op, cause);
  }
}

export function pipes(): PipeBinding {
  if (!pipeBinding) {
    // pipe_wrap is on process.binding()'s allow list in Node 20-26; it gives libuv stream
    // handles that read/write any stream fd through the event loop (epoll). Its callbacks are
    // Node's own (inside a callback scope), unlike koffi's poll callbacks (see pollFd).
    const binding = (process as unknown as { binding(name: string): unknown }).binding;
    pipeBinding = binding.call(process, 'pipe_wrap') as PipeBinding;
  }
  return pipeBinding;
}

export function lastErrno(): number {
  return koffi.errno();
}

// Scratch buffers for the synchronous socket calls (JS is single-threaded and the kernel copies
// them during the call): no allocation per connection.
const addrBuf = Buffer.alloc(16);
const lenBuf = Buffer.alloc(4);
const valBuf = Buffer.alloc(16);

/** A struct sockaddr_vm in the shared scratch buffer (valid until the next call here). */
export function sockaddr(cid: number, port: number): Buffer {
  addrBuf.fill(0);
  addrBuf.writeUInt16LE(AF_VSOCK, 0);
  addrBuf.writeUInt32LE(port >>> 0, 4);
  addrBuf.writeUInt32LE(cid >>> 0, 8);
  return addrBuf;
}

/** Returns a non-blocking, close-on-exec AF_VSOCK stream fd or a negative errno. */
export function vsockSocket(): number {
  const fd = sys('socket').socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -lastErrno() : fd;
}

export function closeFd(fd: number): void {
  sys('close').close(fd);
}

/** 0 or a negative errno. */
export function bindFd(fd: number, cid: number, port: number): number {
  return sys('bind').bind(fd, sockaddr(cid, port), 16) < 0 ? -lastErrno() : 0;
}

/** 0, or a negative errno (-EINPROGRESS while the handshake runs). */
export function connectFd(fd: number, cid: number, port: number): number {
  return sys('connect').connect(fd, sockaddr(cid, port), 16) < 0 ? -lastErrno() : 0;
}

function nameOf(
  fd: number,
  which: 'getsockname' | 'getpeername',
): { cid: number; port: number } | number {
  addrBuf.fill(0);
  lenBuf.writeUInt32LE(16, 0);
  if (sys(which)[which](fd, addrBuf, lenBuf) < 0) return -lastErrno();
  return { cid: addrBuf.readUInt32LE(8), port: addrBuf.readUInt32LE(4) };
}

export function sockName(fd: number): { cid: number; port: number } | number {
  return nameOf(fd, 'getsockname');
}

export function peerName(fd: number): { cid: number; port: number } | number {
  return nameOf(fd, 'getpeername');
}

/** Pending socket error (SO_ERROR) as a positive errno, 0 when none. */
export function socketError(fd: number): number {
  valBuf.writeInt32LE(0, 0);
  lenBuf.writeUInt32LE(4, 0);
  if (sys('getsockopt').getsockopt(fd, SOL_SOCKET, SO_ERROR, valBuf, lenBuf) < 0) {
    return lastErrno();
  }
  return valBuf.readInt32LE(0);
}

/** Sets SO_VM_SOCKETS_CONNECT_TIMEOUT (struct timeval, 64-bit layout). 0 or negative errno. */
export function setConnectTimeout(fd: number, ms: number): number {
  const b = Buffer.alloc(16);
  b.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
  b.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
  return sys('setsockopt').setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD, b, 16) < 0
    ? -lastErrno()
    : 0;
}

/** The local CID from /dev/vsock, or a negative errno. */
export function ioctlLocalCid(): number {
  const c = sys('localCid');
  const fd = c.open('/dev/vsock', O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -lastErrno();
  const b = Buffer.alloc(4);
  const r = c.ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, b);
  const err = r < 0 ? lastErrno() : 0;
  c.close(fd);
  if (err) return -err;
  const cid = b.readUInt32LE(0);
  return cid === CID_ANY ? -19 : cid;
}

export interface PollWatch {
  close(): void;
  ref(): void;
  unref(): void;
}

interface KoffiPollHandle {
  close(): void;
  ref(): void;
  unref(): void;
}

type KoffiPoll = (
  fd: number,
  opts: { readable: boolean; writable: boolean; disconnect: boolean },
  cb: (status: unknown) => void,
) => KoffiPollHandle;

/**
 * libuv's uv_poll on `fd` (koffi.node.poll) with `cb` run as a Node I/O callback.
 *
 * koffi calls its poll callback with napi_call_function from the bare libuv callback, outside
 * any Node callback scope (it does not use napi_make_callback). Node 22 and 24 still drained
 * the nextTick and microtask queues after such a call; since Node 26.4.0 (nodejs/node#62969,
 * reported as nodejs/node#66158) they are only drained when the next callback scope closes, so a
 * promise continuation or nextTick queued by the handler (an `await` after 'connect', stream
 * machinery) waited for some unrelated event, seconds or forever. The handler therefore runs
 * from setImmediate, which Node calls inside its own callback scope on every version: queues
 * drained after it, uncaught errors reported as for any I/O callback. It still runs in the
 * same loop iteration (check phase, right after the poll phase). Events that arrive before it
 * runs coalesce into one call; uv_poll is level-triggered, so a readiness not consumed by the
 * handler is reported again and nothing is lost.
 */
/**
 * Open watches, closed when this thread's environment exits. koffi's poll callback calls into JS
 * whenever its fd is ready, also while a worker thread is being torn down (after an uncaught
 * error or process.exit() there); that call fails and node-addon-api aborts the whole process
 * ("FATAL ERROR: Error::ThrowAsJavaScriptException napi_throw" or "Error::New
 * napi_get_last_error_info"), on every Node version. 'exit' runs before the teardown.
 */
const openWatches = new Set<PollWatch>();
let exitHook = false;
function closeOnExit(w: PollWatch): void {
  openWatches.add(w);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const open of [...openWatches]) open.close();
    });
  }
}

function pollFd(
  fd: number,
  events: { readable: boolean; writable: boolean },
  cb: (status: number) => void,
): PollWatch {
  let pending: NodeJS.Immediate | undefined;
  let status = 0;
  let referenced = true;
  const run = () => {
    pending = undefined;
    const s = status;
    status = 0;
    cb(s);
  };
  const poll = koffi.node.poll as unknown as KoffiPoll;
  const handle = poll(fd, { ...events, disconnect: true }, (st) => {
    if (status === 0 && typeof st === 'number') status = st;
    if (!pending) {
      pending = setImmediate(run);
      if (!referenced) pending.unref();
    }
  });
  let open = true;
  const watch: PollWatch = {
    close() {
      if (!open) return;
      open = false;
      openWatches.delete(watch);
      if (pending) clearImmediate(pending);
      pending = undefined;
      handle.close();
    },
    ref() {
      referenced = true;
      pending?.ref();
      if (open) handle.ref();
    },
    unref() {
      referenced = false;
      pending?.unref();
      if (open) handle.unref();
    },
  };
  closeOnExit(watch);
  return watch;
}

/** Watches `fd` for writability (or an error); `cb` runs once per readiness, as an I/O callback. */
export function watchWritable(fd: number, cb: (status: number) => void): PollWatch {
  return pollFd(fd, { readable: false, writable: true }, cb);
}

// Unix stream sockets through koffi, for the emulation's connects to a VM's per-VM socket
// (a line handshake must finish before the socket is handed to libuv as a stream).
const AF_UNIX = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_DONTWAIT = 0x40;
export const MSG_PEEK = 2;
export const EAGAIN = 11;

/** A non-blocking Unix stream socket connected to `path`: the fd, or a negative errno. */
export function unixConnectFd(path: string): number {
  const c = sys('connect');
  const addr = Buffer.alloc(110);
  addr.writeUInt16LE(AF_UNIX, 0);
  addr.write(path, 2, 'utf8');
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -lastErrno();
  if (c.connect(fd, addr, 2 + Buffer.byteLength(path) + 1) < 0) {
    const e = lastErrno();
    c.close(fd);
    return -e;
  }
  return fd;
}

/** send(2) without SIGPIPE; bytes sent or a negative errno. */
export function sendFd(fd: number, data: Buffer): number {
  const n = sys('send').send(fd, data, data.length, MSG_NOSIGNAL | MSG_DONTWAIT);
  return n < 0 ? -lastErrno() : n;
}

/** recv(2), non-blocking; bytes read (0 = EOF) or a negative errno (-EAGAIN: nothing yet). */
export function recvFd(fd: number, into: Buffer, flags = 0): number {
  const n = sys('recv').recv(fd, into, into.length, flags | MSG_DONTWAIT);
  return n < 0 ? -lastErrno() : n;
}

/** Watches `fd` for readability (or hang-up); `cb` runs once per readiness, as an I/O callback. */
export function watchReadable(fd: number, cb: () => void): PollWatch {
  return pollFd(fd, { readable: true, writable: false }, () => cb());
}
