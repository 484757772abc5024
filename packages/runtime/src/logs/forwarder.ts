// The enclave half of log shipping: the app's stdout/stderr and ee-enclave's own JSON log lines
// go, framed (protocol.ts), over vsock to ee-parent. The app's pipes are always read at once;
// lines wait in a bounded queue while the link is slow or down, and lines that do not fit are
// dropped and counted (a DROPPED frame tells the parent which, once there is room again).
import type net from 'node:net';
import type { Readable } from 'node:stream';
import {
  describeEndpoint,
  dialEndpoint,
  type Endpoint,
  type Logger,
  silentLogger,
  type VsockOptions,
} from '@enclave-extras/proxy';
import { errorCode, errorMessage } from '../errors.js';
import { family } from '../prometheus.js';
import {
  type DroppedRun,
  encodeDropped,
  encodeHello,
  encodeMetrics,
  encodeRecord,
  type LogStream,
  MAX_FRAME_BYTES,
  RECORD_OVERHEAD,
  STREAMS,
} from './protocol.js';

export interface LogForwarderOptions {
  /** Where ee-parent reads logs (e.g. `vsock:3:7101`). */
  parent: Endpoint;
  vsock?: VsockOptions;
  /** Bytes of frames held while the link is slow or down; lines beyond are dropped (default 4 MiB). */
  bufferBytes?: number;
  /** Longer lines are cut into records of this size flagged `partial` (default 16 KiB). */
  maxLineBytes?: number;
  /** The enclave's metrics (Prometheus text), pushed to the parent every metricsIntervalMs. */
  metrics?: () => string;
  /** Default 15 000 ms. */
  metricsIntervalMs?: number;
  /** The clock records are stamped with (ns since the epoch; default Date.now()). */
  now?: () => bigint;
  /** Connection state changes (never the forwarded lines). */
  logger?: Logger;
}

export interface LogForwarderStats {
  /** Records queued for the parent, per stream. */
  records: Record<LogStream, number>;
  /** Records dropped because the buffer was full, per stream. */
  dropped: Record<LogStream, number>;
  /** Bytes of frames waiting in the buffer. */
  bufferedBytes: number;
  connected: boolean;
  /** Connections made to the parent (1 + reconnects). */
  connects: number;
}

const zero = (): Record<LogStream, number> => ({ runtime: 0, stdout: 0, stderr: 0 });
const BATCH_BYTES = 64 * 1024;

/** Ships log lines to ee-parent; see the module comment. Call `start()` to connect. */
export class LogForwarder {
  private readonly log: Logger;
  private readonly bufferBytes: number;
  private readonly maxLineBytes: number;
  private readonly now: () => bigint;
  private queue: Buffer[] = [];
  private head = 0;
  private queuedBytes = 0;
  private seq = 0n;
  private dropRun: DroppedRun | undefined;
  private readonly records = zero();
  private readonly dropped = zero();
  private readonly partial = new Map<LogStream, Buffer[]>();
  private socket: net.Socket | undefined;
  private waitingDrain = false;
  private flushScheduled = false;
  private pendingMetrics: Buffer | undefined;
  private metricsTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelay = 200;
  private connects = 0;
  private down = false;
  private closed = false;
  private started = false;
  private readonly attached = new Set<Promise<void>>();
  private idleWaiters: Array<() => void> = [];
  private readonly startedAt = new Date().toISOString();

  constructor(private readonly options: LogForwarderOptions) {
    this.log = options.logger ?? silentLogger;
    this.bufferBytes = options.bufferBytes ?? 4 * 1024 * 1024;
    this.maxLineBytes = Math.min(
      options.maxLineBytes ?? 16 * 1024,
      MAX_FRAME_BYTES - RECORD_OVERHEAD,
    );
    this.now = options.now ?? (() => BigInt(Date.now()) * 1_000_000n);
  }

  /** Connects (and reconnects) to the parent and starts pushing metrics. */
  start(): this {
    if (this.started) return this;
    this.started = true;
    this.connect();
    if (this.options.metrics) {
      this.metricsTimer = setInterval(
        () => this.queueMetrics(),
        this.options.metricsIntervalMs ?? 15_000,
      );
      this.metricsTimer.unref();
    }
    return this;
  }

  /**
   * Reads `readable` (an app's stdout or stderr pipe) to its end, always at once (never paused:
   * the app never blocks on a full pipe because of the link). Resolves at its end.
   */
  attach(stream: Exclude<LogStream, 'runtime'>, readable: Readable): Promise<void> {
    const done = new Promise<void>((resolve) => {
      readable.on('data', (chunk: Buffer | string) => this.write(stream, chunk));
      const finish = () => {
        this.endLine(stream);
        resolve();
      };
      readable.once('end', finish);
      readable.once('close', finish);
      readable.once('error', finish);
    });
    this.attached.add(done);
    void done.then(() => this.attached.delete(done));
    return done;
  }

  /** A pino destination (`{ write(line) }`) for ee-enclave's own JSON log lines. */
  runtimeDestination(): { write(chunk: string): boolean } {
    return {
      write: (chunk: string) => {
        this.write('runtime', chunk);
        return true;
      },
    };
  }

  /** Splits `data` into lines (the last one waits for its newline) and queues them. */
  write(stream: LogStream, data: Buffer | string): void {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break;
      this.line(stream, buf.subarray(start, nl));
      start = nl + 1;
    }
    if (start < buf.length) {
      const rest = buf.subarray(start);
      const parts = this.partial.get(stream) ?? [];
      // copy: the caller may reuse its buffer
      parts.push(Buffer.from(rest));
      this.partial.set(stream, parts);
      let held = parts.reduce((n, p) => n + p.length, 0);
      if (held >= this.maxLineBytes) {
        let all = Buffer.concat(parts);
        while (all.length >= this.maxLineBytes) {
          this.enqueue(stream, all.subarray(0, this.maxLineBytes), true);
          all = all.subarray(this.maxLineBytes);
        }
        held = all.length;
        this.partial.set(stream, held ? [Buffer.from(all)] : []);
      }
    }
    this.scheduleFlush();
  }

  /** Queues what is left of `stream`'s last line (at the end of the stream). */
  private endLine(stream: LogStream): void {
    const parts = this.partial.get(stream);
    if (parts?.length) this.enqueue(stream, Buffer.concat(parts), false);
    this.partial.delete(stream);
    this.scheduleFlush();
  }

  private line(stream: LogStream, bytes: Buffer): void {
    const parts = this.partial.get(stream);
    let line = bytes;
    if (parts?.length) {
      line = Buffer.concat([...parts, bytes]);
      this.partial.set(stream, []);
    }
    while (line.length > this.maxLineBytes) {
      this.enqueue(stream, line.subarray(0, this.maxLineBytes), true);
      line = line.subarray(this.maxLineBytes);
    }
    this.enqueue(stream, line, false);
  }

  private enqueue(stream: LogStream, line: Buffer, partial: boolean): void {
    const seq = ++this.seq;
    if (this.queuedBytes + RECORD_OVERHEAD + line.length > this.bufferBytes) {
      this.dropRun ??= { firstSeq: seq, lastSeq: seq, counts: zero() };
      this.dropRun.lastSeq = seq;
      this.dropRun.counts[stream]++;
      this.dropped[stream]++;
      return;
    }
    this.pushDropRun();
    this.push(encodeRecord(stream, partial, seq, this.now(), line));
    this.records[stream]++;
  }

  private pushDropRun(): void {
    if (!this.dropRun) return;
    this.push(encodeDropped(this.dropRun));
    this.dropRun = undefined;
  }

  private push(frame: Buffer): void {
    this.queue.push(frame);
    this.queuedBytes += frame.length;
  }

  private queueMetrics(): void {
    const text = this.options.metrics?.();
    if (text === undefined) return;
    const frame = encodeMetrics(text);
    if (frame.length - 4 > MAX_FRAME_BYTES) {
      this.log.warn({ bytes: frame.length }, 'log forwarder: metrics text above 1 MiB not sent');
      return;
    }
    this.pendingMetrics = frame;
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const s = this.socket;
    if (!s || this.waitingDrain) return;
    if (this.pendingMetrics) {
      const m = this.pendingMetrics;
      this.pendingMetrics = undefined;
      if (!s.write(m)) {
        this.awaitDrain(s);
        return;
      }
    }
    for (;;) {
      if (this.head === this.queue.length) {
        // the queue emptied: say what was dropped while it was full
        if (!this.dropRun) break;
        this.pushDropRun();
      }
      const batch: Buffer[] = [];
      let bytes = 0;
      while (this.head < this.queue.length && bytes < BATCH_BYTES) {
        const f = this.queue[this.head] as Buffer;
        this.queue[this.head++] = EMPTY;
        batch.push(f);
        bytes += f.length;
      }
      this.queuedBytes -= bytes;
      if (this.head > 4096 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      if (!s.write(batch.length === 1 ? (batch[0] as Buffer) : Buffer.concat(batch, bytes))) {
        this.awaitDrain(s);
        return;
      }
    }
    this.queue = [];
    this.head = 0;
    if (s.writableLength === 0) this.notifyIdle();
    else this.awaitDrain(s);
  }

  /**
   * Flushes again once `s` has written what it holds. 'drain' comes only after a write that
   * returned false; when the writes were taken (below the high-water mark) but are still queued,
   * the callback of an empty write (called after every earlier write) says when they are out.
   */
  private awaitDrain(s: net.Socket): void {
    this.waitingDrain = true;
    const again = () => {
      if (this.socket !== s || !this.waitingDrain) return;
      this.waitingDrain = false;
      this.flush();
    };
    if (s.writableNeedDrain) s.once('drain', again);
    else s.write(EMPTY, again);
  }

  private notifyIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  private connect(): void {
    if (this.closed) return;
    const where = describeEndpoint(this.options.parent);
    dialEndpoint(this.options.parent, {
      timeoutMs: 5_000,
      ...(this.options.vsock ? { vsock: this.options.vsock } : {}),
    }).then(
      (sock) => {
        const s = sock as net.Socket;
        if (this.closed) {
          s.destroy();
          return;
        }
        this.connects++;
        this.socket = s;
        this.waitingDrain = false;
        this.retryDelay = 200;
        s.on('error', () => {});
        // the parent sends nothing; reading lets us see its close
        s.on('data', () => {});
        s.resume();
        s.once('close', () => {
          if (this.socket !== s) return;
          this.socket = undefined;
          this.waitingDrain = false;
          if (this.closed) return;
          this.down = true;
          this.log.warn({ parent: where }, 'log link down: lines wait in the buffer');
          this.retry();
        });
        s.write(encodeHello({ pid: process.pid, started: this.startedAt }));
        if (this.down) this.log.info({ parent: where }, 'log link up again');
        this.down = false;
        if (this.options.metrics) this.queueMetrics();
        this.flush();
      },
      (err: unknown) => {
        if (this.closed) return;
        if (!this.down) {
          this.log.warn(
            { parent: where, code: errorCode(err), err: errorMessage(err) },
            'log link down: lines wait in the buffer',
          );
        }
        this.down = true;
        this.retry();
      },
    );
  }

  private retry(): void {
    if (this.closed) return;
    this.retryTimer = setTimeout(() => this.connect(), this.retryDelay);
    this.retryTimer.unref();
    this.retryDelay = Math.min(this.retryDelay * 2, 5_000);
  }

  stats(): LogForwarderStats {
    return {
      records: { ...this.records },
      dropped: { ...this.dropped },
      bufferedBytes: this.queuedBytes,
      connected: this.socket !== undefined,
      connects: this.connects,
    };
  }

  /** Prometheus text of the ee_runtime_log_* metrics. */
  metricsText(): string {
    return [
      family(
        'ee_runtime_log_records_total',
        'counter',
        'Log lines queued for the parent, by stream.',
        STREAMS.map((s) => `ee_runtime_log_records_total{stream="${s}"} ${this.records[s]}`),
      ),
      family(
        'ee_runtime_log_dropped_total',
        'counter',
        'Log lines dropped because the buffer was full, by stream.',
        STREAMS.map((s) => `ee_runtime_log_dropped_total{stream="${s}"} ${this.dropped[s]}`),
      ),
      family(
        'ee_runtime_log_buffer_bytes',
        'gauge',
        'Bytes of log frames waiting for the parent.',
        [`ee_runtime_log_buffer_bytes ${this.queuedBytes}`],
      ),
      family('ee_runtime_log_connected', 'gauge', '1 while the log link to the parent is up.', [
        `ee_runtime_log_connected ${this.socket ? 1 : 0}`,
      ]),
    ].join('');
  }

  /**
   * Waits (up to timeoutMs) for the attached pipes to end and for everything queued to be
   * written to the parent, then closes the link. Resolves with whether everything went out.
   */
  async close(options: { timeoutMs?: number } = {}): Promise<{ flushed: boolean }> {
    const timeoutMs = options.timeoutMs ?? 5_000;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), timeoutMs);
    });
    const flushed = await Promise.race([
      (async () => {
        await Promise.all([...this.attached]);
        for (const s of STREAMS) this.endLine(s);
        if (this.options.metrics) this.queueMetrics();
        await new Promise<void>((r) => {
          this.idleWaiters.push(r);
          this.scheduleFlush();
        });
        return 'ok' as const;
      })(),
      deadline,
    ]);
    clearTimeout(timer);
    this.closed = true;
    if (this.metricsTimer) clearInterval(this.metricsTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const s = this.socket;
    this.socket = undefined;
    if (s) {
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          s.destroy();
          r();
        }, 1_000);
        s.end(() => {
          clearTimeout(t);
          r();
        });
      });
      s.destroy();
    }
    return { flushed: flushed === 'ok' && this.queuedBytes === 0 && !this.dropRun };
  }
}

const EMPTY = Buffer.alloc(0);

/** Creates and starts a {@link LogForwarder}. */
export function startLogForwarder(options: LogForwarderOptions): LogForwarder {
  return new LogForwarder(options).start();
}
