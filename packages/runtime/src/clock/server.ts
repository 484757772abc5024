// The parent half of clock sync: answers time requests on a vsock port (ee-parent `time:`).
import type net from 'node:net';
import { type Logger, silentLogger } from '@enclave-extras/proxy';
import { createServer, type VsockServer, type VsockTransport } from '@enclave-extras/vsock';
import { errorMessage } from '../errors.js';
import { family } from '../prometheus.js';
import { listenVsockService } from '../vsock-listen.js';
import { systemClock } from './native.js';
import { decodeTimeRequest, encodeTimeResponse, TIME_REQUEST_BYTES } from './protocol.js';

export interface TimeServerOptions {
  /** vsock port to listen on (ee-parent's default 7100). */
  port: number;
  /** CID to bind (default any). */
  cid?: number;
  /** vsock transport (default: the kernel, or the emulation under ENCLAVE_EXTRAS_VSOCK_DIR). */
  transport?: VsockTransport;
  /** The clock served, ns since the Unix epoch (default CLOCK_REALTIME through koffi). */
  now?: () => bigint;
  /** Connections held at once; more are closed at accept (default 256). */
  maxConnections?: number;
  /** A connection idle this long is closed (ms, default 30 000). */
  idleTimeoutMs?: number;
  logger?: Logger;
}

export interface TimeServer {
  /** The bound port. */
  readonly port: number;
  /** Requests answered so far. */
  readonly requests: number;
  /** Prometheus text: ee_parent_time_requests_total, ee_parent_time_connections. */
  metricsText(): string;
  close(): Promise<void>;
}

/** Starts the time service; resolves once it listens (ERR_RUNTIME_LISTEN otherwise). */
export async function createTimeServer(options: TimeServerOptions): Promise<TimeServer> {
  const log = options.logger ?? silentLogger;
  const now = options.now ?? (await systemClock()).now;
  const maxConnections = options.maxConnections ?? 256;
  const idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
  const sockets = new Set<net.Socket>();
  let requests = 0;
  let refused = 0;

  const onConnection = (socket: net.Socket & { remoteCid?: number }) => {
    if (sockets.size >= maxConnections) {
      refused++;
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.setTimeout(idleTimeoutMs, () => socket.destroy());
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      const t1 = now();
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      const out: Buffer[] = [];
      let off = 0;
      try {
        for (; off + TIME_REQUEST_BYTES <= pending.length; off += TIME_REQUEST_BYTES) {
          const seq = decodeTimeRequest(pending, off);
          out.push(encodeTimeResponse(seq, t1, 0n));
        }
      } catch (err) {
        log.warn({ peer: socket.remoteCid, err: errorMessage(err) }, 'time: bad request, closing');
        socket.destroy();
        return;
      }
      pending = pending.subarray(off);
      if (out.length === 0) return;
      requests += out.length;
      const t2 = now();
      for (const b of out) b.writeBigUInt64BE(t2, 16);
      const ok = socket.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out));
      if (!ok) {
        // a client that sends without reading: stop reading until it does
        socket.pause();
        socket.once('drain', () => socket.resume());
      }
    });
  };

  const server: VsockServer = createServer(
    options.transport !== undefined ? { transport: options.transport } : {},
    onConnection,
  );
  const { port, where } = await listenVsockService(server, options, 'time service', 'time.listen');
  server.on('error', (err) => log.error({ err: err.message, listen: where }, 'time service error'));
  log.info({ listen: `vsock:${options.cid ?? 'any'}:${port}` }, 'time service listening');
  return {
    port,
    get requests() {
      return requests;
    },
    metricsText: () =>
      family('ee_parent_time_requests_total', 'counter', 'Time requests answered.', [
        `ee_parent_time_requests_total ${requests}`,
      ]) +
      family('ee_parent_time_connections', 'gauge', 'Time connections open now.', [
        `ee_parent_time_connections ${sockets.size}`,
      ]) +
      family(
        'ee_parent_time_connections_refused_total',
        'counter',
        'Time connections closed at accept (maxConnections reached).',
        [`ee_parent_time_connections_refused_total ${refused}`],
      ),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
