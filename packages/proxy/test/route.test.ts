import type net from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createRoute, type Route } from '../src/index.js';
import {
  connect,
  echo,
  memoryLogger,
  payload,
  readAll,
  type Server,
  sha256,
  tcpServer,
  tempDir,
  waitFor,
} from './helpers.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startRoute(opts: Parameters<typeof createRoute>[0]): Promise<Route> {
  const r = createRoute(opts);
  await r.start();
  cleanups.push(() => r.close({ drain: false }));
  return r;
}
async function server(fn: (s: net.Socket) => void, host?: string): Promise<Server> {
  const s = await tcpServer(fn, host);
  cleanups.push(() => s.close());
  return s;
}
function portOf(r: Route): number {
  const e = r.endpoint;
  if (e.kind !== 'tcp') throw new Error('not tcp');
  return e.port;
}

describe('route forwarding', () => {
  it('forwards TCP -> TCP with SHA-256-checked payload both ways and logs open/close', async () => {
    const up = await server(echo);
    const log = memoryLogger();
    const r = await startRoute({
      name: 'a',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${up.port}`,
      logger: log,
    });
    const c = await connect(portOf(r));
    const data = payload(3 * 1024 * 1024 + 17);
    const got = readAll(c);
    c.end(data);
    expect(sha256(await got)).toBe(sha256(data));
    await waitFor(() => r.metrics.connectionsActive === 0);
    const s = r.metrics.snapshot();
    expect(s.connectionsTotal).toBe(1);
    expect(s.bytesUp).toBe(data.length);
    expect(s.bytesDown).toBe(data.length);
    const close = log.lines.find((l) => l.msg === 'connection closed');
    expect(close?.obj).toMatchObject({
      route: 'a',
      bytesUp: data.length,
      bytesDown: data.length,
      reason: 'eof',
    });
    expect(typeof close?.obj.durationMs).toBe('number');
    expect(String(close?.obj.peer)).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(log.lines.some((l) => l.msg === 'connection open')).toBe(true);
  });

  it('chains TCP -> Unix -> TCP over IPv6 loopback', async () => {
    const t = tempDir();
    cleanups.push(() => t.cleanup());
    const sock = join(t.dir, 'mid.sock');
    const up = await server(echo, '::1');
    await startRoute({ name: 'b', listen: `unix:${sock}`, dial: `tcp:[::1]:${up.port}` });
    const a = await startRoute({ name: 'a', listen: 'tcp:[::1]:0', dial: `unix:${sock}` });
    const c = await connect(portOf(a), '::1');
    const data = payload(1024 * 1024);
    const got = readAll(c);
    c.end(data);
    expect(sha256(await got)).toBe(sha256(data));
  });

  it('propagates half-close client -> server (server still answers after our FIN)', async () => {
    const up = await server((s) => {
      const chunks: Buffer[] = [];
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('end', () => {
        // the request is complete only at EOF; answer afterwards
        s.end(
          Buffer.concat([Buffer.from('len='), Buffer.from(String(Buffer.concat(chunks).length))]),
        );
      });
    });
    const r = await startRoute({
      name: 'hc',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${up.port}`,
    });
    const c = await connect(portOf(r));
    const got = readAll(c);
    c.end(payload(100_000));
    expect((await got).toString()).toBe('len=100000');
  });

  it('propagates half-close server -> client (client still sends after server FIN)', async () => {
    let received = 0;
    const serverDone = new Promise<number>((resolve) => {
      void server((s) => {
        s.end('banner');
        s.on('data', (d: Buffer) => {
          received += d.length;
        });
        s.on('end', () => resolve(received));
      }).then((srv) => {
        void startRoute({
          name: 'hs',
          listen: 'tcp:127.0.0.1:0',
          dial: `tcp:127.0.0.1:${srv.port}`,
        }).then(async (r) => {
          const c = await connect(portOf(r));
          const got = await readAll(c); // server FIN reached us
          expect(got.toString()).toBe('banner');
          c.end(payload(50_000)); // our side is still writable
        });
      });
    });
    expect(await serverDone).toBe(50_000);
  });

  it('bounds memory with backpressure when the receiver stalls, then delivers everything', async () => {
    let serverSocket: net.Socket | undefined;
    const received: Buffer[] = [];
    const done = new Promise<void>((resolve) => {
      void server((s) => {
        serverSocket = s;
        s.pause();
        s.on('data', (d: Buffer) => received.push(d));
        s.on('end', () => {
          s.end();
          resolve();
        });
      }).then(async (srv) => {
        const r = await startRoute({
          name: 'bp',
          listen: 'tcp:127.0.0.1:0',
          dial: `tcp:127.0.0.1:${srv.port}`,
        });
        const c = await connect(portOf(r));
        const data = payload(64 * 1024 * 1024);
        let offset = 0;
        const chunk = 256 * 1024;
        await new Promise<void>((res) => {
          const pump = () => {
            while (offset < data.length) {
              const ok = c.write(data.subarray(offset, offset + chunk));
              offset += chunk;
              if (!ok) return;
            }
            res();
          };
          c.on('drain', pump);
          pump();
          // once writes stall, the proxy must hold back: forwarded bytes stay far below what we want to send
          setTimeout(() => res(), 1500);
        });
        const stalledAt = r.metrics.bytesUp;
        expect(offset).toBeLessThan(data.length);
        expect(stalledAt).toBeLessThan(24 * 1024 * 1024);
        // resume the receiver: everything arrives intact
        serverSocket?.resume();
        await new Promise<void>((res) => {
          const pump = () => {
            while (offset < data.length) {
              const ok = c.write(data.subarray(offset, offset + chunk));
              offset += chunk;
              if (!ok) return;
            }
            c.end();
            res();
          };
          c.removeAllListeners('drain');
          c.on('drain', pump);
          pump();
        });
        await done;
        expect(sha256(Buffer.concat(received))).toBe(sha256(data));
      });
    });
    await done;
    await waitFor(() => received.length > 0 && Buffer.concat(received).length === 64 * 1024 * 1024);
  }, 60_000);
});
