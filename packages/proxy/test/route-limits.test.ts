import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createRoute, type Route } from '../src/index.js';
import {
  closed,
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
async function server(fn: (s: net.Socket) => void): Promise<Server> {
  const s = await tcpServer(fn);
  cleanups.push(() => s.close());
  return s;
}
function portOf(r: Route): number {
  const e = r.endpoint;
  if (e.kind !== 'tcp') throw new Error('not tcp');
  return e.port;
}
async function roundTrip(s: net.Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    s.once('data', (d: Buffer) => resolve(d.toString()));
    s.write(text);
  });
}
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('limits, timeouts, retries, drain', () => {
  it('refuses connections over maxConnections: closed, counted, logged', async () => {
    const up = await server(echo);
    const log = memoryLogger();
    const r = await startRoute({
      name: 'max',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${up.port}`,
      maxConnections: 2,
      logger: log,
    });
    const a = await connect(portOf(r));
    const b = await connect(portOf(r));
    expect(await roundTrip(a, 'a')).toBe('a');
    expect(await roundTrip(b, 'b')).toBe('b');
    const c = await connect(portOf(r));
    c.on('error', () => {});
    let got = 0;
    c.on('data', (d: Buffer) => {
      got += d.length;
    });
    c.write('x');
    await closed(c);
    expect(got).toBe(0);
    expect(r.metrics.snapshot().refused).toEqual({ max_connections: 1 });
    expect(r.metrics.snapshot().errors.ERR_PROXY_MAX_CONNECTIONS).toBe(1);
    expect(
      log.lines.some((l) => l.level === 'warn' && l.obj.code === 'ERR_PROXY_MAX_CONNECTIONS'),
    ).toBe(true);
    a.destroy();
    await waitFor(() => r.active === 1);
    const d = await connect(portOf(r));
    expect(await roundTrip(d, 'd')).toBe('d');
    b.destroy();
    d.destroy();
  });

  it('closes idle connections after idleTimeoutMs with reason idle_timeout', async () => {
    const up = await server(() => {});
    const log = memoryLogger();
    const r = await startRoute({
      name: 'idle',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${up.port}`,
      idleTimeoutMs: 200,
      logger: log,
    });
    const c = await connect(portOf(r));
    c.on('error', () => {});
    await closed(c);
    await waitFor(() => log.lines.some((l) => l.msg === 'connection closed'));
    expect(log.lines.find((l) => l.msg === 'connection closed')?.obj.reason).toBe('idle_timeout');
  });

  it('times out a dial to a peer that never answers the SYN (connectTimeoutMs)', async () => {
    // A listener with a full accept queue drops further SYNs: the connect hangs for real.
    const py = spawn('python3', [
      '-c',
      'import socket,sys,time\ns=socket.socket();s.bind(("127.0.0.1",0));s.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)',
    ]);
    cleanups.push(() => {
      py.kill();
    });
    const port = await new Promise<number>((resolve) =>
      py.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
    );
    const fillers: net.Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const f = net.connect({ host: '127.0.0.1', port });
      f.on('error', () => {});
      fillers.push(f);
    }
    cleanups.push(() => {
      for (const f of fillers) f.destroy();
    });
    await new Promise((r) => setTimeout(r, 200));
    const log = memoryLogger();
    const r = await startRoute({
      name: 'ct',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${port}`,
      connectTimeoutMs: 300,
      logger: log,
    });
    const c = await connect(portOf(r));
    c.on('error', () => {});
    await closed(c);
    expect(r.metrics.snapshot().errors).toEqual({ ERR_PROXY_DIAL_TIMEOUT: 1 });
    const warn = log.lines.find((l) => l.msg === 'dial failed');
    expect(warn?.obj.code).toBe('ERR_PROXY_DIAL_TIMEOUT');
    expect(String(warn?.obj.err)).toContain(`127.0.0.1:${port}`);
  });

  it('retries the dial with backoff until the target comes up', async () => {
    const port = await freePort();
    const r = await startRoute({
      name: 'retry',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${port}`,
      dialRetries: { attempts: 20, delayMs: 50, backoff: 1.5, maxDelayMs: 200 },
    });
    const c = await connect(portOf(r));
    await waitFor(() => r.metrics.dialRetries >= 1);
    const late = net.createServer({ allowHalfOpen: true }, echo);
    await new Promise<void>((res) => late.listen({ host: '127.0.0.1', port }, res));
    cleanups.push(() => new Promise<void>((res) => late.close(() => res())));
    expect(await roundTrip(c, 'late')).toBe('late');
    c.destroy();
  });

  it('gives up after the attempts and counts the errno code once', async () => {
    const port = await freePort();
    const log = memoryLogger();
    const r = await startRoute({
      name: 'giveup',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${port}`,
      dialRetries: { attempts: 3, delayMs: 10 },
      logger: log,
    });
    const c = await connect(portOf(r));
    c.on('error', () => {});
    await closed(c);
    await waitFor(() => r.active === 0);
    const s = r.metrics.snapshot();
    expect(s.dialRetries).toBe(2);
    expect(s.errors).toEqual({ ECONNREFUSED: 1 });
    expect(log.lines.find((l) => l.msg === 'connection closed')?.obj.reason).toBe(
      'dial_failed:ECONNREFUSED',
    );
  });

  it('drains: stops accepting, lets open connections finish, then resolves', async () => {
    const up = await server(echo);
    const r = createRoute({
      name: 'drain',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${up.port}`,
    });
    await r.start();
    const port = portOf(r);
    const c = await connect(port);
    expect(await roundTrip(c, '1')).toBe('1');
    let drained = false;
    const closing = r.close({ drain: true, timeoutMs: 10_000 }).then(() => {
      drained = true;
    });
    await new Promise((res) => setTimeout(res, 50));
    await expect(connect(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(await roundTrip(c, '2')).toBe('2');
    expect(drained).toBe(false);
    const data = payload(200_000);
    const got = readAll(c);
    c.end(data);
    expect(sha256(await got)).toBe(sha256(data));
    await closing;
    expect(drained).toBe(true);
  });

  it('drain timeout closes what is left with reason drain_timeout', async () => {
    const up = await server(() => {});
    const log = memoryLogger();
    const r = createRoute({
      name: 'dt',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${up.port}`,
      logger: log,
    });
    await r.start();
    const c = await connect(portOf(r));
    c.on('error', () => {});
    await waitFor(() => log.lines.some((l) => l.msg === 'connection open'));
    await r.close({ drain: true, timeoutMs: 150 });
    await closed(c);
    expect(log.lines.find((l) => l.msg === 'connection closed')?.obj.reason).toBe('drain_timeout');
  });

  it('reports a taken address with its errno code and the address', async () => {
    const up = await server(echo);
    const r = createRoute({
      name: 'dup',
      listen: `tcp:127.0.0.1:${up.port}`,
      dial: 'tcp:127.0.0.1:1',
    });
    await expect(r.start()).rejects.toMatchObject({
      name: 'ProxyError',
      code: 'EADDRINUSE',
      syscall: 'listen',
      address: `127.0.0.1:${up.port}`,
    });
  });

  it('carries 300 concurrent connections through a two-hop TCP -> Unix -> TCP chain, SHA-256 checked', async () => {
    const t = tempDir();
    cleanups.push(() => t.cleanup());
    const sock = join(t.dir, 'chain.sock');
    const up = await server(echo);
    const b = await startRoute({
      name: 'b',
      listen: `unix:${sock}`,
      dial: `tcp:127.0.0.1:${up.port}`,
    });
    const a = await startRoute({ name: 'a', listen: 'tcp:127.0.0.1:0', dial: `unix:${sock}` });
    const n = 300;
    const results = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const data = payload(16 * 1024 + i);
        const c = await connect(portOf(a));
        const got = readAll(c);
        c.end(data);
        return sha256(await got) === sha256(data);
      }),
    );
    expect(results.filter(Boolean).length).toBe(n);
    await waitFor(() => a.active === 0 && b.active === 0);
    expect(a.metrics.snapshot().connectionsTotal).toBe(n);
    expect(b.metrics.snapshot().connectionsTotal).toBe(n);
    expect(a.metrics.snapshot().errors).toEqual({});
  }, 60_000);

  it('a killed upstream resets the client side and is counted', async () => {
    const up = await server((s) => {
      s.once('data', () => s.resetAndDestroy());
    });
    const r = await startRoute({
      name: 'kill',
      listen: 'tcp:127.0.0.1:0',
      dial: `tcp:127.0.0.1:${up.port}`,
    });
    const c = await connect(portOf(r));
    c.on('error', () => {});
    c.write('boom');
    await closed(c);
    await waitFor(() => r.active === 0);
    expect(r.metrics.snapshot().errors.ECONNRESET).toBe(1);
  });
});

export type { ChildProcess };
