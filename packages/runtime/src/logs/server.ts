// The parent half of log shipping: reads framed log records from enclaves over vsock and writes
// them as JSON lines (with the peer's CID, the stream and the sequence number) to `output`.
// When `output` is slow the connections stop being read (the enclave's buffer absorbs it, then
// drops and counts); an enclave's pushed metrics are kept for ee-parent's /metrics.
import type net from 'node:net';
import type { Writable } from 'node:stream';
import { type Logger, silentLogger } from '@enclave-extras/proxy';
import { createServer, type VsockServer, type VsockTransport } from '@enclave-extras/vsock';
import { errorMessage, RuntimeError } from '../errors.js';
import { escapeLabel, family, type PrometheusSource } from '../prometheus.js';
import { listenVsockService } from '../vsock-listen.js';
import {
  type LogFrame,
  LogFrameDecoder,
  type LogStream,
  MAX_FRAME_BYTES,
  STREAMS,
} from './protocol.js';

export interface LogServerOptions {
  /** vsock port to listen on (ee-parent's default 7101). */
  port: number;
  /** CID to bind (default any). */
  cid?: number;
  transport?: VsockTransport;
  /** Where the JSON lines go (default process.stdout). */
  output?: Writable;
  /** Connections held at once (default 64); more are closed at accept. */
  maxConnections?: number;
  /** Largest frame accepted (default 1 MiB); a larger one closes the connection. */
  maxFrameBytes?: number;
  /** ee-parent's own logger (connections, protocol errors). */
  logger?: Logger;
}

export interface EnclaveMetrics {
  cid: number | null;
  text: string;
  /** When they arrived (ms since the epoch). */
  receivedAt: number;
}

export interface LogServer {
  readonly port: number;
  /** Prometheus text of ee_parent_log_* (not the enclaves' own metrics). */
  metricsText(): string;
  /** The latest metrics pushed by each connected enclave. */
  enclaveMetrics(): EnclaveMetrics[];
  /**
   * Sources for `mergePrometheus`: this server's metrics, then each connected enclave's pushed
   * metrics labelled `cid`.
   */
  prometheusSources(): PrometheusSource[];
  /** Resolves once no enclave is connected (at once when none is): everything sent was written. */
  whenIdle(): Promise<void>;
  close(): Promise<void>;
}

interface PerCid {
  records: Record<LogStream, number>;
  dropped: Record<LogStream, number>;
}

function isoFromNs(ns: bigint): string {
  const ms = ns / 1_000_000n;
  const d = new Date(Number(ms));
  return Number.isNaN(d.getTime()) ? new Date(0).toISOString() : d.toISOString();
}

/**
 * One JSON line per frame (without the newline), or undefined for frames that print nothing.
 * `msg` holds an app line as text; a runtime line that is a JSON object is nested as `log`.
 */
export function formatLogFrame(cid: number | null, frame: LogFrame): string | undefined {
  switch (frame.type) {
    case 'record': {
      const base = {
        time: isoFromNs(frame.timeNs),
        cid,
        stream: frame.stream,
        seq: Number(frame.seq),
        ...(frame.partial ? { partial: true } : {}),
      };
      const text = frame.line.toString('utf8');
      if (frame.stream === 'runtime') {
        try {
          const obj: unknown = JSON.parse(text);
          if (obj && typeof obj === 'object' && !Array.isArray(obj)) {
            return JSON.stringify({ ...base, log: obj });
          }
        } catch {
          // not JSON: as text
        }
      }
      return JSON.stringify({ ...base, msg: text });
    }
    case 'dropped': {
      const count = frame.counts.runtime + frame.counts.stdout + frame.counts.stderr;
      return JSON.stringify({
        time: new Date().toISOString(),
        cid,
        event: 'dropped',
        count,
        seq: [Number(frame.firstSeq), Number(frame.lastSeq)],
        streams: frame.counts,
      });
    }
    case 'hello':
      return JSON.stringify({
        time: new Date().toISOString(),
        cid,
        event: 'connected',
        ...(typeof frame.info.pid === 'number' ? { pid: frame.info.pid } : {}),
        ...(typeof frame.info.started === 'string' ? { started: frame.info.started } : {}),
      });
    default:
      return undefined;
  }
}

/** Starts the log service; resolves once it listens. */
export async function createLogServer(options: LogServerOptions): Promise<LogServer> {
  const log = options.logger ?? silentLogger;
  const output = options.output ?? process.stdout;
  const maxConnections = options.maxConnections ?? 64;
  const maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
  const sockets = new Set<net.Socket>();
  const paused = new Set<net.Socket>();
  const perCid = new Map<string, PerCid>();
  const metrics = new Map<net.Socket, EnclaveMetrics>();
  let idleWaiters: Array<() => void> = [];
  let protocolErrors = 0;
  let refused = 0;

  const onDrain = () => {
    for (const s of paused) s.resume();
    paused.clear();
  };
  output.on('drain', onDrain);

  const counters = (cid: number | null): PerCid => {
    const k = String(cid ?? 'unknown');
    let c = perCid.get(k);
    if (!c) {
      c = {
        records: { runtime: 0, stdout: 0, stderr: 0 },
        dropped: { runtime: 0, stdout: 0, stderr: 0 },
      };
      perCid.set(k, c);
    }
    return c;
  };

  const onConnection = (socket: net.Socket & { remoteCid?: number }) => {
    if (sockets.size >= maxConnections) {
      refused++;
      log.warn({ peer: socket.remoteCid, maxConnections }, 'logs: too many connections, closing');
      socket.destroy();
      return;
    }
    const cid = typeof socket.remoteCid === 'number' ? socket.remoteCid : null;
    sockets.add(socket);
    const decoder = new LogFrameDecoder(maxFrameBytes);
    const c = counters(cid);
    let hello = false;
    socket.on('error', () => {});
    socket.once('close', () => {
      sockets.delete(socket);
      paused.delete(socket);
      metrics.delete(socket);
      if (hello) {
        output.write(
          `${JSON.stringify({ time: new Date().toISOString(), cid, event: 'disconnected' })}\n`,
        );
      }
      log.info({ cid }, 'logs: enclave disconnected');
      if (sockets.size === 0) {
        const w = idleWaiters;
        idleWaiters = [];
        for (const f of w) f();
      }
    });
    socket.on('data', (chunk: Buffer) => {
      let frames: LogFrame[];
      try {
        frames = decoder.push(chunk);
        if (!hello && frames.length > 0 && frames[0]?.type !== 'hello') {
          throw new RuntimeError('ERR_RUNTIME_LOGS_PROTOCOL', 'the first log frame is not HELLO');
        }
      } catch (err) {
        protocolErrors++;
        log.warn({ cid, err: errorMessage(err) }, 'logs: protocol error, closing the connection');
        socket.destroy();
        return;
      }
      const lines: string[] = [];
      for (const f of frames) {
        if (f.type === 'hello') {
          hello = true;
          log.info({ cid, ...f.info }, 'logs: enclave connected');
        } else if (f.type === 'record') {
          c.records[f.stream]++;
        } else if (f.type === 'dropped') {
          for (const s of STREAMS) c.dropped[s] += f.counts[s];
        } else if (f.type === 'metrics') {
          metrics.set(socket, { cid, text: f.text, receivedAt: Date.now() });
        }
        const line = formatLogFrame(cid, f);
        if (line !== undefined) lines.push(line);
      }
      if (lines.length === 0) return;
      if (!output.write(`${lines.join('\n')}\n`)) {
        socket.pause();
        paused.add(socket);
      }
    });
  };

  const server: VsockServer = createServer(
    options.transport !== undefined ? { transport: options.transport } : {},
    onConnection,
  );
  const { port, where } = await listenVsockService(
    server,
    options,
    'log service',
    'logs.listen',
  ).catch((err: unknown) => {
    output.removeListener('drain', onDrain);
    throw err;
  });
  server.on('error', (err) => log.error({ err: err.message, listen: where }, 'log service error'));
  log.info({ listen: `vsock:${options.cid ?? 'any'}:${port}` }, 'log service listening');

  const metricsText = () => {
    const rows = (m: 'records' | 'dropped', name: string) =>
      [...perCid].flatMap(([cid, v]) =>
        STREAMS.map((s) => `${name}{cid="${escapeLabel(cid)}",stream="${s}"} ${v[m][s]}`),
      );
    return [
      family(
        'ee_parent_log_records_total',
        'counter',
        'Log lines received from enclaves, by CID and stream.',
        rows('records', 'ee_parent_log_records_total'),
      ),
      family(
        'ee_parent_log_dropped_total',
        'counter',
        'Log lines enclaves reported dropped (their buffer was full), by CID and stream.',
        rows('dropped', 'ee_parent_log_dropped_total'),
      ),
      family('ee_parent_log_connections', 'gauge', 'Enclave log connections open now.', [
        `ee_parent_log_connections ${sockets.size}`,
      ]),
      family(
        'ee_parent_log_protocol_errors_total',
        'counter',
        'Log connections closed for a malformed frame.',
        [`ee_parent_log_protocol_errors_total ${protocolErrors}`],
      ),
      family(
        'ee_parent_log_connections_refused_total',
        'counter',
        'Log connections closed at accept (maxConnections reached).',
        [`ee_parent_log_connections_refused_total ${refused}`],
      ),
    ].join('');
  };

  return {
    port,
    metricsText,
    enclaveMetrics: () => [...metrics.values()],
    prometheusSources: () => [
      { text: metricsText() },
      ...[...metrics.values()].map((m) => ({
        text: m.text,
        labels: { cid: String(m.cid ?? 'unknown') },
      })),
    ],
    whenIdle: () =>
      sockets.size === 0 ? Promise.resolve() : new Promise<void>((r) => idleWaiters.push(r)),
    close: () =>
      new Promise<void>((resolve) => {
        output.removeListener('drain', onDrain);
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
