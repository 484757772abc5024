/**
 * How an NsmClient reaches an NSM: one CBOR request in, one CBOR response out. The device
 * (`/dev/nsm`), the in-process simulator and the simulator daemon all implement it, so the
 * encode/decode path above them is the same.
 */
export interface NsmTransport {
  /** Human-readable name: `device:/dev/nsm`, `simulator`, `unix:/tmp/nsm.sock`. */
  readonly name: string;
  /**
   * Sends one serde_cbor-encoded request and resolves with the raw response bytes. Transports
   * reject empty requests and requests over 4096 bytes with NsmError before sending.
   */
  request(request: Uint8Array): Promise<Uint8Array>;
  /** Releases the transport (waits for in-flight requests). Idempotent. */
  close(): Promise<void>;
}

/** pino-compatible logger; every package accepts one and is silent without it. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const noop = () => {};
/** A logger that drops everything (the default). */
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };

/** Runs async tasks one at a time in FIFO order. */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task, task);
    this.#tail = result.catch(() => {});
    return result;
  }

  /** Resolves when everything queued so far has settled. */
  drain(): Promise<void> {
    return this.#tail.then(() => {});
  }
}
