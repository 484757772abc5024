import { EventEmitter } from 'node:events';
import { formatVsockAddress, type VsockAddress, validateU32 } from './address.js';
import { CID_ANY } from './constants.js';
import { abortError, invalidArgType, outOfRange, systemError, VsockError } from './errors.js';
import type { UvStreamHandle } from './native.js';
import { defaultTransport } from './select.js';
import type { VsockSocket } from './socket.js';
import {
  asImpl,
  type BoundListener,
  type TransportImpl,
  type VsockTransport,
} from './transport.js';

/** vsock refuses a connect outright when the accept queue is full (no SYN retry as in TCP). */
const DEFAULT_BACKLOG = 4096;

/** Options of {@link createServer}. */
export interface CreateServerOptions {
  /** Keep the writable side open after the peer ends (like net). Default false. */
  allowHalfOpen?: boolean;
  /** Hand out accepted sockets paused (like net). Default false. */
  pauseOnConnect?: boolean;
  /** Transport to listen on; default {@link defaultTransport}(). */
  transport?: VsockTransport;
}

/** Options of {@link VsockServer.listen}. */
export interface VsockListenOptions {
  /** Port to listen on (u32); PORT_ANY lets the transport pick one. */
  port: number;
  /** CID to bind; default CID_ANY. */
  cid?: number;
  /**
   * Accept queue length; default 4096 (the kernel caps it at net.core.somaxconn). Larger than
   * net's 511 because vsock has no SYN retry: a connect that finds the queue full is refused.
   */
  backlog?: number;
  /** Closes the server when aborted. */
  signal?: AbortSignal;
}

export interface VsockServerEvents {
  listening: [];
  connection: [socket: VsockSocket];
  error: [err: Error];
  close: [];
}

/**
 * A vsock server, an EventEmitter shaped like net.Server: 'listening', 'connection', 'error',
 * 'close'. Accepted sockets are {@link VsockSocket}s (real net.Sockets).
 */
export class VsockServer extends EventEmitter<VsockServerEvents> {
  readonly #transport: TransportImpl;
  readonly #allowHalfOpen: boolean;
  readonly #pauseOnConnect: boolean;
  #listener: BoundListener | null = null;
  #binding = false;
  #closing = false;
  #unref = false;
  readonly #sockets = new Set<VsockSocket>();

  constructor(options: CreateServerOptions = {}, listener?: (socket: VsockSocket) => void) {
    super();
    if (typeof options !== 'object' || options === null) {
      throw invalidArgType('options', 'an object', options);
    }
    this.#transport = asImpl(options.transport ?? defaultTransport(), 'options.transport');
    this.#allowHalfOpen = Boolean(options.allowHalfOpen);
    this.#pauseOnConnect = Boolean(options.pauseOnConnect);
    if (listener !== undefined) {
      if (typeof listener !== 'function') throw invalidArgType('listener', 'a function', listener);
      this.on('connection', listener);
    }
  }

  /** True while accepting connections. */
  get listening(): boolean {
    return this.#listener !== null;
  }

  /** Number of accepted sockets that are still open. */
  get connections(): number {
    return this.#sockets.size;
  }

  /** The transport this server listens on. */
  get transport(): VsockTransport {
    return this.#transport;
  }

  /**
   * Starts listening: `listen({ port, cid = CID_ANY, backlog = 4096 }, cb?)` or `listen(port, cb?)`.
   * Errors (EADDRINUSE, no vsock transport, ...) are emitted as 'error'.
   */
  listen(options: VsockListenOptions | number, cb?: () => void): this {
    const opts = typeof options === 'number' ? { port: options } : options;
    if (typeof opts !== 'object' || opts === null) {
      throw invalidArgType(
        'options',
        'an object { port, cid?, backlog? } or a port number',
        options,
      );
    }
    const port = validateU32(opts.port, 'options.port');
    const cid = validateU32(opts.cid ?? CID_ANY, 'options.cid');
    const backlog = opts.backlog ?? DEFAULT_BACKLOG;
    if (!Number.isInteger(backlog) || backlog < 0 || backlog > 0x7fffffff) {
      throw outOfRange('options.backlog', 'an integer >= 0 and <= 2147483647', backlog);
    }
    if (cb !== undefined && typeof cb !== 'function') throw invalidArgType('cb', 'a function', cb);
    if (this.#listener || this.#binding) {
      throw new VsockError(
        'ERR_SERVER_ALREADY_LISTEN',
        `listen ${formatVsockAddress({ cid, port })}: this server is already listening; call close() first or create another server`,
      );
    }
    const signal = opts.signal;
    if (signal?.aborted) {
      process.nextTick(() =>
        this.emit('error', abortError('listen', formatVsockAddress({ cid, port }), signal.reason)),
      );
      return this;
    }
    if (cb) this.once('listening', cb);
    this.#binding = true;
    this.#closing = false;
    this.#transport.listen({ cid, port, backlog }, (err, listener) => {
      process.nextTick(() => {
        this.#binding = false;
        if (err || !listener) {
          if (cb) this.off('listening', cb);
          this.emit('error', err ?? new VsockError('ERR_VSOCK_LISTEN', 'listen failed'));
          this.#maybeEmitClose();
          return;
        }
        if (this.#closing) {
          listener.handle.close(() => this.#maybeEmitClose());
          return;
        }
        this.#listener = listener;
        listener.handle.onconnection = (status, client) => this.#onConnection(status, client);
        if (this.#unref) listener.handle.unref();
        if (signal) {
          const onAbort = () => this.close();
          signal.addEventListener('abort', onAbort, { once: true });
          this.once('close', () => signal.removeEventListener('abort', onAbort));
        }
        this.emit('listening');
      });
    });
    return this;
  }

  #onConnection(status: number, client?: UvStreamHandle): void {
    const listener = this.#listener;
    if (status < 0 || !client || !listener) {
      if (status < 0) {
        const address = listener ? formatVsockAddress(listener.address) : undefined;
        this.emit(
          'error',
          systemError(-status, 'accept', { op: 'accept', ...(address ? { address } : {}) }),
        );
      }
      client?.close();
      return;
    }
    this.#transport.adopt(
      client,
      listener,
      { allowHalfOpen: this.#allowHalfOpen, pauseOnConnect: this.#pauseOnConnect },
      (socket) => {
        if (!socket) return;
        this.#sockets.add(socket);
        socket.once('close', () => {
          this.#sockets.delete(socket);
          this.#maybeEmitClose();
        });
        (socket as VsockSocket & { server: unknown }).server = this;
        this.emit('connection', socket);
      },
    );
  }

  /** `{ cid, port }` the server is bound to (port resolved for PORT_ANY), or null. */
  address(): VsockAddress | null {
    return this.#listener ? { ...this.#listener.address } : null;
  }

  /**
   * Stops accepting; open sockets keep working. 'close' (and `cb`) come once the last
   * accepted socket has closed. `cb` gets ERR_SERVER_NOT_RUNNING when not listening.
   */
  close(cb?: (err?: Error) => void): this {
    if (cb !== undefined && typeof cb !== 'function') throw invalidArgType('cb', 'a function', cb);
    const listener = this.#listener;
    if (!listener && !this.#binding) {
      if (cb) {
        process.nextTick(() =>
          cb(
            new VsockError(
              'ERR_SERVER_NOT_RUNNING',
              'close: the server is not listening; nothing to close',
            ),
          ),
        );
      }
      return this;
    }
    if (cb) this.once('close', () => cb());
    this.#closing = true;
    this.#listener = null;
    if (listener) listener.handle.close(() => this.#maybeEmitClose());
    return this;
  }

  #maybeEmitClose(): void {
    if (!this.#closing || this.#listener || this.#binding || this.#sockets.size > 0) return;
    this.#closing = false;
    process.nextTick(() => this.emit('close'));
  }

  /** Calls `cb(null, count)` with the number of open accepted sockets (like net.Server). */
  getConnections(cb: (err: Error | null, count: number) => void): this {
    process.nextTick(() => cb(null, this.#sockets.size));
    return this;
  }

  /** Lets the process exit while this server listens. */
  unref(): this {
    this.#unref = true;
    this.#listener?.handle.unref();
    return this;
  }

  ref(): this {
    this.#unref = false;
    this.#listener?.handle.ref();
    return this;
  }
}

/**
 * Creates a vsock server: `createServer(listener)` or `createServer(options, listener)`.
 * Serve HTTP with `vsockServer.on('connection', (s) => httpServer.emit('connection', s))`.
 */
export function createServer(
  options?: CreateServerOptions | ((socket: VsockSocket) => void),
  listener?: (socket: VsockSocket) => void,
): VsockServer {
  if (typeof options === 'function') return new VsockServer({}, options);
  return new VsockServer(options ?? {}, listener);
}
