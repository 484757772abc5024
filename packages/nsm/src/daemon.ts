import { rmSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { NsmError, systemError } from './errors.js';
import { checkRawRequest } from './protocol.js';
import { NsmSimulator, type NsmSimulatorOptions } from './simulator.js';
import { type Logger, type NsmTransport, silentLogger } from './transport.js';

// Wire format, both directions length-prefixed:
//   request  = u32be length, CBOR request bytes (as sent to /dev/nsm)
//   response = u32be length, u8 status, body; status 0: CBOR response bytes,
//              status 1: UTF-8 JSON {"code","message"} of an NsmError raised by the transport
const STATUS_OK = 0;
const STATUS_ERROR = 1;
const MAX_FRAME = 1 << 20;

export interface ServeSimulatorOptions {
  /** Unix socket path to listen on. A stale socket file (nobody listening) is replaced. */
  socketPath: string;
  /** The simulator to share. Default: `new NsmSimulator(simulatorOptions)`. */
  simulator?: NsmSimulator;
  /** Options for the default simulator. */
  simulatorOptions?: NsmSimulatorOptions;
  /** pino-compatible logger (connections at debug, failures at warn). Default silent. */
  logger?: Logger;
}

export interface SimulatorServer {
  /** `unix:/path`. */
  readonly address: string;
  readonly simulator: NsmSimulator;
  /** Stops listening, ends open connections and removes the socket file. */
  close(): Promise<void>;
}

class FrameReader {
  #buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): void {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
  }
  /** The next complete frame body, undefined when incomplete; throws on an oversize length. */
  next(): Buffer | undefined {
    if (this.#buf.length < 4) return undefined;
    const len = this.#buf.readUInt32BE(0);
    if (len > MAX_FRAME) throw new Error(`frame of ${len} bytes exceeds ${MAX_FRAME}`);
    if (this.#buf.length < 4 + len) return undefined;
    const body = this.#buf.subarray(4, 4 + len);
    this.#buf = this.#buf.subarray(4 + len);
    return body;
  }
}

function frame(status: number | undefined, body: Uint8Array): Buffer {
  const head = Buffer.alloc(status === undefined ? 4 : 5);
  head.writeUInt32BE(body.length + (status === undefined ? 0 : 1), 0);
  if (status !== undefined) head.writeUInt8(status, 4);
  return Buffer.concat([head, body]);
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(path);
  });
}

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Serves a simulator over a Unix socket so separate processes (the enclave app, a KMS helper,
 * tests) share one simulated enclave: same PCRs, same locks, same dev CA. Clients connect with
 * `socketTransport(path)`. Requests of one connection are answered in order.
 */
export async function serveSimulator(options: ServeSimulatorOptions): Promise<SimulatorServer> {
  const path = options.socketPath;
  if (typeof path !== 'string' || path.length === 0) {
    throw new NsmError('ERR_NSM_INVALID_ARGUMENT', 'socketPath must be a non-empty path', {
      field: 'socketPath',
    });
  }
  const address = `unix:${path}`;
  const log = options.logger ?? silentLogger;
  const simulator = options.simulator ?? new NsmSimulator(options.simulatorOptions);
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    log.debug({ address }, 'nsm simulator: client connected');
    const reader = new FrameReader();
    let chain = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      for (;;) {
        let body: Buffer | undefined;
        try {
          body = reader.next();
        } catch (err) {
          log.warn({ address, err }, 'nsm simulator: bad frame, closing the connection');
          socket.destroy();
          return;
        }
        if (!body) return;
        const req = new Uint8Array(body);
        // start handling now (state changes in arrival order), answer in order
        const answer = simulator.request(req).then(
          (res) => frame(STATUS_OK, res),
          (err: unknown) => {
            const e =
              err instanceof NsmError ? err : new NsmError('ERR_NSM_INTERNAL_ERROR', String(err));
            log.warn({ address, code: e.code }, `nsm simulator: ${e.message}`);
            return frame(
              STATUS_ERROR,
              Buffer.from(JSON.stringify({ code: e.code, message: e.message })),
            );
          },
        );
        chain = chain.then(async () => {
          const out = await answer;
          if (!socket.destroyed) socket.write(out);
        });
      }
    });
    socket.on('error', (err) => log.debug({ address, err }, 'nsm simulator: connection error'));
    socket.on('close', () => {
      sockets.delete(socket);
      log.debug({ address }, 'nsm simulator: client disconnected');
    });
  });
  try {
    await listen(server, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || (await probe(path))) {
      throw systemError(err, `${address}: cannot listen (is another simulator running?)`, address);
    }
    // stale socket file from a dead daemon
    await unlink(path).catch(() => {});
    try {
      await listen(server, path);
    } catch (err2) {
      throw systemError(err2, `${address}: cannot listen`, address);
    }
  }
  log.info({ address, moduleId: simulator.moduleId }, 'nsm simulator listening');
  let closing: Promise<void> | undefined;
  return {
    address,
    simulator,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }).then(() => {
        rmSync(path, { force: true });
        log.info({ address }, 'nsm simulator stopped');
      });
      return closing;
    },
  };
}

export interface SocketTransportOptions {
  /** Give up connecting after this many ms. Default 5000. */
  connectTimeout?: number;
}

/** Connects to a simulator daemon started with `serveSimulator` (or the `nsm-simulator` bin). */
export function socketTransport(
  socketPath: string,
  options: SocketTransportOptions = {},
): Promise<NsmTransport> {
  const address = `unix:${socketPath}`;
  const timeout = options.connectTimeout ?? 5000;
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new NsmError(
          'ETIMEDOUT',
          `${address}: no answer within ${timeout} ms; is the simulator running?`,
          {
            syscall: 'connect',
            address,
          },
        ),
      );
    }, timeout);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(
        systemError(
          err,
          `${address}: cannot reach the NSM simulator (start it with nsm-simulator --socket ${socketPath})`,
          address,
        ),
      );
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(new SocketTransport(socket, address));
    });
  });
}

interface Pending {
  resolve(res: Uint8Array): void;
  reject(err: NsmError): void;
}

class SocketTransport implements NsmTransport {
  readonly name: string;
  readonly #socket: Socket;
  readonly #pending: Pending[] = [];
  readonly #reader = new FrameReader();
  #failure: NsmError | undefined;
  #closed: Promise<void> | undefined;

  constructor(socket: Socket, address: string) {
    this.name = address;
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => {
      this.#fail(systemError(err, `${address}: connection to the NSM simulator failed`, address));
    });
    socket.on('close', () => {
      this.#fail(
        new NsmError(
          'ERR_NSM_CLOSED',
          `${address}: the NSM simulator closed the connection; reconnect`,
          {
            address,
          },
        ),
      );
    });
  }

  #onData(chunk: Buffer): void {
    this.#reader.push(chunk);
    for (;;) {
      let body: Buffer | undefined;
      try {
        body = this.#reader.next();
      } catch (err) {
        this.#fail(
          new NsmError('ERR_NSM_PROTOCOL', `${this.name}: ${(err as Error).message}`, {
            cause: err,
          }),
        );
        this.#socket.destroy();
        return;
      }
      if (!body) return;
      const p = this.#pending.shift();
      if (!p || body.length < 1) {
        this.#fail(
          new NsmError('ERR_NSM_PROTOCOL', `${this.name}: unexpected frame from the simulator`),
        );
        this.#socket.destroy();
        return;
      }
      if (body[0] === STATUS_OK) {
        p.resolve(new Uint8Array(body.subarray(1)));
      } else {
        let info: { code?: unknown; message?: unknown } = {};
        try {
          info = JSON.parse(body.subarray(1).toString('utf8'));
        } catch {}
        p.reject(
          new NsmError(
            typeof info.code === 'string' ? info.code : 'ERR_NSM_PROTOCOL',
            typeof info.message === 'string' ? info.message : `${this.name}: malformed error frame`,
            { address: this.name },
          ),
        );
      }
    }
  }

  #fail(err: NsmError): void {
    this.#failure ??= err;
    for (const p of this.#pending.splice(0)) p.reject(err);
  }

  request(request: Uint8Array): Promise<Uint8Array> {
    try {
      checkRawRequest(request, this.name);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#closed) {
      return Promise.reject(
        new NsmError('ERR_NSM_CLOSED', `${this.name}: the transport is closed`),
      );
    }
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.#socket.write(frame(undefined, request));
    });
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      // let in-flight requests finish
      await Promise.allSettled(
        this.#pending.map(
          (p) =>
            new Promise<void>((r) => {
              const { resolve, reject } = p;
              p.resolve = (v) => {
                resolve(v);
                r();
              };
              p.reject = (e) => {
                reject(e);
                r();
              };
            }),
        ),
      );
      await new Promise<void>((resolve) => {
        if (this.#socket.destroyed) return resolve();
        this.#socket.once('close', () => resolve());
        this.#socket.end();
      });
    })();
    return this.#closed;
  }
}
