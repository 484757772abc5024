import net from 'node:net';
import { takePending } from './handshake.js';
import type { ProxySocket } from './transport.js';

/**
 * Bytes read at once per direction of a connection carrying bulk data (Node's own stream reads
 * are 64 KiB; 256 KiB took ~20% less CPU per MiB through the host chain, bench/profile.mjs).
 */
const READ_BUFFER_BYTES = 256 * 1024;
/**
 * Until a connection carries bulk data, it reads into one buffer shared by every connection of
 * the process and forwards a copy of each chunk (never the shared buffer itself, so it is free
 * again as soon as the read callback returns; reads run one at a time on the event loop). An idle
 * or chatty connection so holds no read buffer at all; the first read that fills the shared
 * buffer gives the direction its own 256 KiB buffer, read into and written from without copies.
 */
const FIRST_READ_BYTES = 2048;
let firstRead: Buffer | undefined;

/**
 * Read buffers of finished connections, reused by new ones: a new connection does not allocate
 * a 256 KiB buffer of external memory per direction (which, at thousands of connections per
 * second, drives V8 into a full GC every few milliseconds). Bounded: at most this many stay (4 MiB).
 */
const POOL_MAX = 16;
/**
 * Writes a direction may have queued in dst before it stops reading src. With 1 the two hops of
 * a chain took turns (read, then wait until dst had written everything); with 2 the next read
 * fills another buffer while the last one is written (bench/chain.mjs --middle vsock). At most
 * MAX_QUEUED + 1 buffers per direction.
 */
const MAX_QUEUED = 2;
const pool: Buffer[] = [];
function takeBuffer(): Buffer {
  return pool.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
}
function giveBack(buf: Buffer | undefined): void {
  if (buf && buf.length === READ_BUFFER_BYTES && pool.length < POOL_MAX) pool.push(buf);
}

interface UserBufferKeys {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

/**
 * The symbols under which net.Socket keeps its `onread` option (a reused read buffer and its
 * callback). net.Socket accepts `onread` only when it creates the socket, so for accepted sockets
 * the route sets the same fields Node's constructor sets; found by description on a throwaway
 * socket so that a Node without them simply keeps the stream path.
 */
let keys: UserBufferKeys | null | undefined;
function userBufferKeys(): UserBufferKeys | null {
  if (keys !== undefined) return keys;
  keys = null;
  try {
    // `onread` is a documented option of net.connect/new net.Socket (missing from @types/node's
    // SocketConstructorOpts)
    const probe = new net.Socket({
      onread: { buffer: Buffer.alloc(1), callback: () => true },
    } as net.SocketConstructorOpts);
    const find = (d: string) =>
      Object.getOwnPropertySymbols(probe).find((s) => s.description === d);
    const buffer = find('kBuffer');
    const callback = find('kBufferCb');
    const generator = find('kBufferGen');
    const p = probe as unknown as Record<symbol, unknown>;
    if (
      buffer &&
      callback &&
      generator &&
      Buffer.isBuffer(p[buffer]) &&
      typeof p[callback] === 'function' &&
      typeof net.Socket.prototype.resume === 'function'
    ) {
      keys = { buffer, callback, generator };
    }
    probe.destroy();
  } catch {
    keys = null;
  }
  return keys;
}

interface StreamHandle {
  useUserBuffer?(buf: Uint8Array): void;
  reading?: boolean;
}

/**
 * Copies src to dst with backpressure and propagates EOF as a half-close; `count` gets the size of
 * every chunk. Starts reading src (which must be paused).
 *
 * Fast path (net.Socket with a libuv stream handle: TCP, Unix, vsock through pipe_wrap): src reads
 * into a reused buffer (the `onread` mechanism of net.Socket) and each chunk is written to dst at
 * once. A write the kernel took whole frees the buffer for the next read; one dst has to queue
 * keeps it and the next read goes to another buffer; with MAX_QUEUED writes queued reading stops
 * (Node's readStop) and resumes when one of them is written (at most MAX_QUEUED + 1 read buffers
 * per direction, each of 256 KiB, allocated untouched). No per-read allocation and no Readable
 * queue on the hot path. Otherwise: 'data' events, pause on a full write buffer,
 * resume on drain.
 */
export function pipeOneWay(src: ProxySocket, dst: ProxySocket, count: (n: number) => void): void {
  // Payload bytes a handshake read (or a rewritten request head) go first, written explicitly.
  // They were unshift()ed into the stream before, and the fast path below took them with one
  // read(): on Node 26 that returns only the first queued chunk (the head, not the body unshifted
  // behind it), and the reused-buffer reads never see the rest of the stream's queue.
  const pending = takePending(src);
  let pendingQueued = false;
  if (pending && pending.length > 0) {
    count(pending.length);
    pendingQueued = !dst.write(pending);
  }
  if (src.readableEnded) {
    // EOF arrived while a handshake was read: what was left is written, now the half-close.
    dst.end();
    return;
  }
  src.once('end', () => {
    if (!dst.destroyed) dst.end();
  });
  const k = userBufferKeys();
  const handle = (src as unknown as { _handle?: StreamHandle | null })._handle;
  if (k && src instanceof net.Socket && handle && typeof handle.useUserBuffer === 'function') {
    const s = src as unknown as Record<symbol, unknown>;
    let current: Buffer | undefined;
    const free: Buffer[] = []; // full-size buffers of this direction not in use
    let next: Buffer | undefined; // where the read after this one goes (handed over by onread)
    let held = 0; // writes still queued in dst
    let stopped = false; // reading stopped because MAX_QUEUED writes are queued
    const release = (buf: Buffer | undefined) => {
      held--;
      if (buf && buf.length === READ_BUFFER_BYTES && !src.destroyed) free.push(buf);
      if (stopped && held < MAX_QUEUED && !src.destroyed) {
        stopped = false;
        src.resume();
      }
    };
    /** Writes `chunk`; false when dst queued it (then `buf`, if given, stays dst's until written). */
    const forward = (chunk: Buffer, buf: Buffer | undefined): boolean => {
      let queued = false;
      dst.write(chunk, () => {
        if (queued) release(buf);
      });
      if (dst.writableLength === 0) return true;
      queued = true;
      held++;
      return false;
    };
    const switchTo = (buf: Buffer) => {
      current = buf;
      next = buf;
    };
    src.once('close', () => {
      // the handle is closed: no read lands in these any more, and none is held by a queued
      // write (a held one was swapped out of `current`; released after this, it goes to the GC)
      giveBack(current);
      for (const b of free) giveBack(b);
      free.length = 0;
      current = undefined;
    });
    // Node's onread calls this after each callback; a buffer returned becomes the read buffer
    s[k.generator] = () => {
      const b = next;
      next = undefined;
      return b;
    };
    /** After dst queued a write: keep reading into another buffer unless MAX_QUEUED are queued. */
    const afterQueued = (): boolean => {
      if (held < MAX_QUEUED) return true;
      stopped = true;
      return false;
    };
    s[k.callback] = (n: number, buf: Buffer): boolean => {
      count(n);
      if (buf === firstRead) {
        // the shared buffer: forward a copy; a full read means bulk data, move to an own buffer
        if (n === buf.length) switchTo(free.pop() ?? takeBuffer());
        return forward(Buffer.from(buf.subarray(0, n)), undefined) || afterQueued();
      }
      if (forward(buf.subarray(0, n), buf)) return true;
      // dst holds buf until written: the next read goes to another buffer, so reading src and
      // writing dst overlap (the two hops of a chain no longer take turns)
      switchTo(free.pop() ?? takeBuffer());
      return afterQueued();
    };
    firstRead ??= Buffer.allocUnsafeSlow(FIRST_READ_BYTES);
    current = firstRead;
    s[k.buffer] = current;
    handle.useUserBuffer(current);
    if (pendingQueued) {
      // dst queued the pending bytes: read on once it has written them
      held++;
      dst.write(Buffer.alloc(0), () => release(undefined));
    }
    // bytes already in the stream's queue (read with the vsock emulation's preamble) go next,
    // all of them: on Node 26 read() of a paused stream returns one queued chunk, not the queue
    while (src.readableLength > 0) {
      const queued = src.read() as Buffer | null;
      if (queued === null) break;
      if (queued.length === 0) continue;
      count(queued.length);
      forward(queued, undefined);
    }
    if (held >= MAX_QUEUED) {
      stopped = true;
      src.pause();
      return;
    }
    src.resume();
    return;
  }
  src.on('data', (chunk: Buffer) => {
    count(chunk.length);
    if (!dst.write(chunk)) src.pause();
  });
  dst.on('drain', () => src.resume());
  if (pendingQueued) src.pause();
  else src.resume();
}
