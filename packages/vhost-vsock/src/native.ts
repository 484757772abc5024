// libc through koffi: the Unix socket of the vhost-user channel (recvmsg with SCM_RIGHTS),
// mmap of the guest memory, eventfds, and libuv's uv_poll (koffi.node.poll). Internal only.
import koffi from 'koffi';
import { VhostVsockError } from './errors.js';

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const MFD_CLOEXEC = 1;
export const EAGAIN = 11;
export const EINTR = 4;

type SysFn = (...args: unknown[]) => number;
type PtrFn = (...args: unknown[]) => unknown;

interface Libc {
  socket: SysFn;
  bind: SysFn;
  listen: SysFn;
  accept4: SysFn;
  connect: SysFn;
  recvmsg: SysFn;
  sendmsg: SysFn;
  send: SysFn;
  read: SysFn;
  write: SysFn;
  close: SysFn;
  mmap: PtrFn;
  munmap: SysFn;
  eventfd: SysFn;
  memfd_create: SysFn;
  ftruncate: SysFn;
  lseek: SysFn;
}

let libc: Libc | undefined;

export function sys(): Libc {
  if (libc) return libc;
  if (process.platform !== 'linux') {
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_SYSCALL',
      `vhost-user needs Linux (memfd, eventfd, SCM_RIGHTS); this is ${process.platform}`,
    );
  }
  try {
    const lib = koffi.load('libc.so.6');
    const f = (proto: string): SysFn => lib.func(proto) as unknown as SysFn;
    libc = {
      socket: f('int socket(int domain, int type, int protocol)'),
      bind: f('int bind(int fd, void *addr, uint32_t len)'),
      listen: f('int listen(int fd, int backlog)'),
      accept4: f('int accept4(int fd, void *addr, void *len, int flags)'),
      connect: f('int connect(int fd, void *addr, uint32_t len)'),
      recvmsg: f('intptr_t recvmsg(int fd, void *msg, int flags)'),
      sendmsg: f('intptr_t sendmsg(int fd, void *msg, int flags)'),
      send: f('intptr_t send(int fd, void *buf, size_t len, int flags)'),
      read: f('intptr_t read(int fd, void *buf, size_t len)'),
      write: f('intptr_t write(int fd, void *buf, size_t len)'),
      close: f('int close(int fd)'),
      mmap: lib.func(
        'void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)',
      ) as unknown as PtrFn,
      munmap: f('int munmap(void *addr, size_t len)'),
      eventfd: f('int eventfd(unsigned int initval, int flags)'),
      memfd_create: f('int memfd_create(const char *name, unsigned int flags)'),
      ftruncate: f('int ftruncate(int fd, int64_t len)'),
      lseek: f('int64_t lseek(int fd, int64_t off, int whence)'),
    };
    return libc;
  } catch (cause) {
    throw new VhostVsockError('ERR_VHOST_VSOCK_SYSCALL', `cannot load libc.so.6 through koffi`, {
      cause,
    });
  }
}

export function errno(): number {
  return koffi.errno();
}

/** A Node-style error for a failed syscall: `<what>: ENOENT (errno 2)`. */
export function syscallError(what: string, err: number, hint = ''): VhostVsockError {
  return new VhostVsockError(
    'ERR_VHOST_VSOCK_SYSCALL',
    `${what} failed: errno ${err}${hint ? `; ${hint}` : ''}`,
  );
}

function sockaddrUn(path: string): Buffer {
  const b = Buffer.alloc(110);
  b.writeUInt16LE(AF_UNIX, 0);
  const n = b.write(path, 2, 'utf8');
  if (n >= 107 || Buffer.byteLength(path) >= 108) {
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_INVALID_ARG',
      `socket path ${path} is too long for a Unix socket (max 107 bytes); use a shorter path`,
    );
  }
  return b;
}

/** A non-blocking listening Unix socket bound to `path`; returns the fd or throws. */
export function unixListen(path: string, backlog = 8): number {
  const c = sys();
  const addr = sockaddrUn(path);
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw syscallError('socket(AF_UNIX)', errno());
  if (c.bind(fd, addr, addr.length) < 0) {
    const e = errno();
    c.close(fd);
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_LISTEN',
      `bind ${path} failed: errno ${e}${e === 98 ? ' (EADDRINUSE: another backend listens there, or remove the stale file)' : ''}`,
    );
  }
  if (c.listen(fd, backlog) < 0) {
    const e = errno();
    c.close(fd);
    throw new VhostVsockError('ERR_VHOST_VSOCK_LISTEN', `listen ${path} failed: errno ${e}`);
  }
  return fd;
}

/** Accepts one connection (non-blocking, close-on-exec): fd, or -errno (-EAGAIN when none). */
export function unixAccept(fd: number): number {
  const r = sys().accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
  return r < 0 ? -errno() : r;
}

/** Connects a non-blocking Unix stream socket (used by the in-process driver of the tests). */
export function unixConnect(path: string): number {
  const c = sys();
  const addr = sockaddrUn(path);
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw syscallError('socket(AF_UNIX)', errno());
  if (c.connect(fd, addr, addr.length) < 0) {
    const e = errno();
    c.close(fd);
    throw syscallError(`connect ${path}`, e);
  }
  return fd;
}

export function closeFd(fd: number): void {
  if (fd >= 0) sys().close(fd);
}

// One native scratch block for recvmsg/sendmsg: [msghdr 56][iovec 16][control 256][data].
const MSGHDR = 0;
const IOV = 56;
const CONTROL = 72;
const CONTROL_LEN = 256;
const DATA = CONTROL + CONTROL_LEN;
const DATA_LEN = 64 * 1024;
interface Scratch {
  ptr: unknown;
  base: bigint;
  view: Buffer;
}
let scratch: Scratch | undefined;
function getScratch(): Scratch {
  if (!scratch) {
    const size = DATA + DATA_LEN;
    const ptr = koffi.alloc('uint8', size);
    scratch = { ptr, base: koffi.address(ptr), view: Buffer.from(koffi.view(ptr, size)) };
  }
  return scratch;
}

function prepareMsg(s: Scratch, dataLen: number, controlLen: number): void {
  const v = s.view;
  v.fill(0, 0, CONTROL);
  v.writeBigUInt64LE(s.base + BigInt(IOV), MSGHDR + 16); // msg_iov
  v.writeBigUInt64LE(1n, MSGHDR + 24); // msg_iovlen
  v.writeBigUInt64LE(controlLen ? s.base + BigInt(CONTROL) : 0n, MSGHDR + 32);
  v.writeBigUInt64LE(BigInt(controlLen), MSGHDR + 40);
  v.writeBigUInt64LE(s.base + BigInt(DATA), IOV);
  v.writeBigUInt64LE(BigInt(dataLen), IOV + 8);
}

export interface Received {
  /** bytes read; 0 = EOF; negative = -errno (-EAGAIN when nothing is ready) */
  n: number;
  data: Buffer;
  fds: number[];
}

/** recvmsg of at most `max` bytes, collecting SCM_RIGHTS fds (close-on-exec). */
export function recvWithFds(fd: number, max: number): Received {
  const s = getScratch();
  const want = Math.min(max, DATA_LEN);
  prepareMsg(s, want, CONTROL_LEN);
  const n = sys().recvmsg(fd, s.ptr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0) return { n: -errno(), data: Buffer.alloc(0), fds: [] };
  const fds: number[] = [];
  const controlLen = Number(s.view.readBigUInt64LE(MSGHDR + 40));
  let off = 0;
  while (off + 16 <= controlLen) {
    const len = Number(s.view.readBigUInt64LE(CONTROL + off));
    if (len < 16) break;
    const level = s.view.readInt32LE(CONTROL + off + 8);
    const type = s.view.readInt32LE(CONTROL + off + 12);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = 16; p + 4 <= len; p += 4) fds.push(s.view.readInt32LE(CONTROL + off + p));
    }
    off += (len + 7) & ~7;
  }
  return { n, data: Buffer.from(s.view.subarray(DATA, DATA + n)), fds };
}

/** sendmsg of `data` with `fds` attached (SCM_RIGHTS); bytes sent or -errno. */
export function sendWithFds(fd: number, data: Buffer, fds: readonly number[] = []): number {
  const s = getScratch();
  if (data.length > DATA_LEN) throw new RangeError('message too large');
  const controlLen = fds.length ? 16 + ((fds.length * 4 + 7) & ~7) : 0;
  prepareMsg(s, data.length, controlLen);
  data.copy(s.view, DATA);
  if (fds.length) {
    s.view.fill(0, CONTROL, CONTROL + controlLen);
    s.view.writeBigUInt64LE(BigInt(16 + fds.length * 4), CONTROL);
    s.view.writeInt32LE(SOL_SOCKET, CONTROL + 8);
    s.view.writeInt32LE(SCM_RIGHTS, CONTROL + 12);
    for (let i = 0; i < fds.length; i++)
      s.view.writeInt32LE(fds[i] as number, CONTROL + 16 + i * 4);
  }
  const n = sys().sendmsg(fd, s.ptr, MSG_NOSIGNAL);
  return n < 0 ? -errno() : n;
}

/** A shared mapping of `len` bytes of `fd` from offset 0, as a Buffer over that memory. */
export interface Mapping {
  buffer: Buffer;
  unmap(): void;
}

/** The size of the file behind `fd` (lseek SEEK_END), or -errno when it has none. */
export function fileSize(fd: number): number {
  const c = sys();
  const end = Number(c.lseek(fd, 0, 2));
  if (end < 0) return -errno();
  c.lseek(fd, 0, 0);
  return end;
}

export function mapShared(fd: number, len: number): Mapping {
  const c = sys();
  const ptr = c.mmap(null, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const addr = ptr === null ? -1n : koffi.address(ptr);
  if (addr === 0xffff_ffff_ffff_ffffn || addr === -1n || addr === 0n) {
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_MEMORY',
      `mmap of guest memory fd ${fd} (${len} bytes) failed: errno ${errno()}; the front-end must share guest RAM (memory-backend-memfd,share=on)`,
    );
  }
  let buffer: Buffer;
  try {
    buffer = Buffer.from(koffi.view(ptr, len));
  } catch (cause) {
    c.munmap(ptr, len);
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_MEMORY',
      `a guest memory region of ${len} bytes cannot be viewed as one Buffer (Node's limit is ${2 ** 32} bytes)`,
      { cause },
    );
  }
  let mapped = true;
  return {
    buffer,
    unmap() {
      if (!mapped) return;
      mapped = false;
      c.munmap(ptr, len);
    },
  };
}

export function newEventFd(): number {
  const fd = sys().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw syscallError('eventfd', errno());
  return fd;
}

const evBuf = Buffer.alloc(8);
/** Drains an eventfd; true when it had a count. */
export function readEventFd(fd: number): boolean {
  return sys().read(fd, evBuf, 8) === 8;
}

const oneBuf = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);
export function signalEventFd(fd: number): void {
  sys().write(fd, oneBuf, 8);
}

export function newMemfd(name: string, size: number): number {
  const c = sys();
  const fd = c.memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) throw syscallError('memfd_create', errno());
  if (c.ftruncate(fd, size) < 0) {
    const e = errno();
    c.close(fd);
    throw syscallError('ftruncate(memfd)', e);
  }
  return fd;
}

/** write(2) all of `data` to a blocking or non-blocking fd; bytes written or -errno. */
export function writeFd(fd: number, data: Buffer): number {
  const n = sys().send(fd, data, data.length, MSG_NOSIGNAL);
  return n < 0 ? -errno() : n;
}

export interface Watch {
  close(): void;
}

/**
 * libuv's uv_poll on `fd` for readability (koffi.node.poll); `cb` runs on each readiness event,
 * as a Node I/O callback.
 *
 * koffi calls its poll callback with napi_call_function from the bare libuv callback, outside
 * any Node callback scope (it does not use napi_make_callback). Node 22 and 24 still drained
 * the nextTick and microtask queues after such a call; since Node 26.4.0 (nodejs/node#62969,
 * reported as nodejs/node#66158) they are only drained when the next callback scope closes, so
 * promise continuations and stream work queued by a handler (the vhost-user replies the
 * front-end awaits, host sockets' writes and 'end's) waited for some unrelated event: data
 * stalled for seconds or for good. The handler therefore runs from setImmediate, which Node
 * calls inside its own callback scope on every version: queues drained after it, uncaught errors
 * reported as for any I/O callback. It still runs in the same loop iteration (check phase,
 * right after the poll phase). Events that arrive before it runs coalesce into one call; uv_poll
 * is level-triggered, so a readiness the handler does not consume is reported again.
 */
/**
 * Open watches, closed when this thread's environment exits. koffi's poll callback calls into JS
 * whenever its fd is ready, also while a worker thread is being torn down (after an uncaught
 * error or process.exit() there); that call fails and node-addon-api aborts the whole process
 * ("FATAL ERROR: Error::ThrowAsJavaScriptException napi_throw" or "Error::New
 * napi_get_last_error_info"), on every Node version. 'exit' runs before the teardown.
 */
const openWatches = new Set<Watch>();
let exitHook = false;
function closeOnExit(w: Watch): void {
  openWatches.add(w);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const open of [...openWatches]) open.close();
    });
  }
}

export function watchReadable(fd: number, cb: () => void): Watch {
  const poll = koffi.node.poll as unknown as (
    fd: number,
    opts: { readable: boolean; writable: boolean; disconnect: boolean },
    cb: () => void,
  ) => { close(): void };
  let pending: NodeJS.Immediate | undefined;
  const run = () => {
    pending = undefined;
    cb();
  };
  const h = poll(fd, { readable: true, writable: false, disconnect: true }, () => {
    pending ??= setImmediate(run);
  });
  let open = true;
  const watch: Watch = {
    close() {
      if (open) {
        open = false;
        openWatches.delete(watch);
        if (pending) clearImmediate(pending);
        pending = undefined;
        h.close();
      }
    },
  };
  closeOnExit(watch);
  return watch;
}
