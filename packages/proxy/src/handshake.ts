import { ProxyError } from './errors.js';
import type { ProxySocket } from './transport.js';

const endedTails = new WeakMap<ProxySocket, Buffer>();

/** For a socket whose peer already sent EOF during a handshake: the bytes read after the handshake. */
export function takeEndedTail(socket: ProxySocket): Buffer | undefined {
  const t = endedTails.get(socket);
  endedTails.delete(socket);
  return t;
}

/**
 * Reads a handshake from a socket byte by byte-count, then hands the socket back (not flowing) with any
 * over-read bytes unshifted, so the forwarding pipe sees every payload byte.
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
  private ended = false;
  private readonly onEnd = () => {
    this.ended = true;
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

  /** Detaches and puts the unread bytes back. */
  finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket.removeListener('readable', this.onReadable);
    this.socket.removeListener('end', this.onEnd);
    this.socket.removeListener('close', this.onEnd);
    this.socket.removeListener('error', this.onError);
    this.signal?.removeEventListener('abort', this.onAbort);
    // After 'end' a stream refuses unshift(): keep the tail aside for the forwarding pipe.
    if (this.ended || this.socket.readableEnded) endedTails.set(this.socket, this.buf);
    else if (this.buf.length > 0 && !this.socket.destroyed) this.socket.unshift(this.buf);
    this.buf = Buffer.alloc(0);
  }
}
