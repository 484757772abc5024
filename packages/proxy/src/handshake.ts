import { ProxyError } from './errors.js';
import type { ProxySocket } from './transport.js';

/**
 * Bytes read from a socket during a handshake that belong to the payload (over-read after the
 * handshake, or a rewritten request head): `pipeOneWay` writes them to the other side, counted,
 * before it reads anything more from the socket. Kept here instead of `socket.unshift()`: the
 * reused-buffer (`onread`) read path never reads the stream's queue, and on Node 26 one read()
 * of a paused stream returns only its first queued chunk; after EOF a stream refuses unshift().
 */
const pendingBytes = new WeakMap<ProxySocket, Buffer>();

/** Puts `bytes` in front of the socket's pending payload bytes. */
export function prependPending(socket: ProxySocket, bytes: Buffer): void {
  if (bytes.length === 0) return;
  const rest = pendingBytes.get(socket);
  pendingBytes.set(socket, rest && rest.length > 0 ? Buffer.concat([bytes, rest]) : bytes);
}

/** Takes (and forgets) the payload bytes a handshake left for the socket. */
export function takePending(socket: ProxySocket): Buffer | undefined {
  const t = pendingBytes.get(socket);
  pendingBytes.delete(socket);
  return t;
}

/**
 * Reads a handshake from a socket byte by byte-count, then hands the socket back (not flowing);
 * over-read bytes are kept as the socket's pending payload (`takePending`), which the forwarding
 * pipe writes first, so it sees every payload byte.
 */
export class HandshakeReader {
  private buf: Buffer = Buffer.alloc(0);
  private waiter?: () => void;
  private failure?: Error;
  private done = false;
  // Paused-mode reading ('readable' + read()): removing the listener later puts the stream back in
  // its initial state, so whoever gets the socket next starts it by adding a 'data' listener.
  private readonly onReadable = () => {
    for (;;) {
      if (this.buf.length > this.maxBytes) {
        this.fail(
          new ProxyError(
            'ERR_PROXY_GATEWAY_PROTOCOL',
            `The ${this.what} is longer than ${this.maxBytes} bytes.`,
            { details: { maxBytes: this.maxBytes } },
          ),
        );
        return;
      }
      const chunk = this.socket.read() as Buffer | null;
      if (chunk === null) break;
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    }
    this.wake();
  };
  private readonly onEnd = () => {
    this.fail(
      new ProxyError('ERR_PROXY_GATEWAY_PROTOCOL', `The peer closed during the ${this.what}.`),
    );
  };
  private readonly onError = (err: Error) => this.fail(err);
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly socket: ProxySocket,
    private readonly what: string,
    private readonly maxBytes: number,
    timeoutMs: number,
    private readonly signal?: AbortSignal,
  ) {
    socket.on('readable', this.onReadable);
    // a socket handed over paused may hold buffered bytes without a pending 'readable'
    process.nextTick(this.onReadable);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
    signal?.addEventListener('abort', this.onAbort, { once: true });
    if (timeoutMs > 0) {
      this.timer = setTimeout(
        () =>
          this.fail(
            new ProxyError(
              'ERR_PROXY_GATEWAY_PROTOCOL',
              `The ${this.what} did not complete within ${timeoutMs} ms.`,
            ),
          ),
        timeoutMs,
      );
    }
  }

  private readonly onAbort = () =>
    this.fail(
      new ProxyError('ERR_PROXY_ABORTED', `The ${this.what} was aborted.`, {
        cause: this.signal?.reason,
      }),
    );

  private fail(err: Error): void {
    this.failure ??= err;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Resolves once at least `n` bytes are buffered; returns the buffer (not consumed). */
  async need(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
    return this.buf;
  }

  /** Resolves with the bytes up to and including the first `delimiter` (consumed). */
  async until(delimiter: string): Promise<Buffer> {
    const d = Buffer.from(delimiter);
    for (;;) {
      const i = this.buf.indexOf(d);
      if (i >= 0) return this.take(i + d.length);
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }

  /** Consumes `n` buffered bytes. */
  take(n: number): Buffer {
    const head = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return head;
  }

  /** Detaches and keeps the unread bytes as the socket's pending payload (see `takePending`). */
  finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket.removeListener('readable', this.onReadable);
    this.socket.removeListener('end', this.onEnd);
    this.socket.removeListener('close', this.onEnd);
    this.socket.removeListener('error', this.onError);
    this.signal?.removeEventListener('abort', this.onAbort);
    if (this.buf.length > 0 && !this.socket.destroyed) {
      const rest = pendingBytes.get(this.socket);
      pendingBytes.set(
        this.socket,
        rest && rest.length > 0 ? Buffer.concat([rest, this.buf]) : this.buf,
      );
    }
    this.buf = Buffer.alloc(0);
  }
}
