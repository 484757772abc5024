import { createEmulatedTransport } from '@enclave-extras/vsock';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createEgressGateway,
  createEgressGatewayServer,
  createRoute,
  httpConnectDialer,
  type Route,
} from '../src/index.js';
import {
  closed,
  connect,
  echo,
  memoryLogger,
  payload,
  readAll,
  sha256,
  tcpServer,
  tempDir,
  waitFor,
} from './helpers.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
async function started(r: Route): Promise<Route> {
  await r.start();
  cleanups.push(() => r.close({ drain: false }));
  return r;
}

describe('vsock endpoints over the @enclave-extras/vsock emulation (real Unix sockets)', () => {
  it('TCP -> vsock -> TCP both directions, half-close, 100 concurrent SHA-256-checked streams', async () => {
    const t = tempDir();
    cleanups.push(() => t.cleanup());
    const vsock = { transport: createEmulatedTransport({ dir: t.dir }) };
    const up = await tcpServer(echo);
    cleanups.push(() => up.close());
    const log = memoryLogger();
    // "parent": vsock:any:8000 -> TCP server; "enclave": local TCP -> vsock:3:8000
    const parent = await started(
      createRoute({
        name: 'parent',
        listen: 'vsock:any:8000',
        dial: `tcp:127.0.0.1:${up.port}`,
        vsock,
        logger: log,
      }),
    );
    const enclave = await started(
      createRoute({ name: 'enclave', listen: 'tcp:127.0.0.1:0', dial: 'vsock:3:8000', vsock }),
    );
    const port = (enclave.endpoint as { port: number }).port;
    const ok = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const c = await connect(port);
        const data = payload(32 * 1024 + i);
        const got = readAll(c);
        c.end(data);
        return sha256(await got) === sha256(data);
      }),
    );
    expect(ok.every(Boolean)).toBe(true);
    await waitFor(() => parent.active === 0 && enclave.active === 0);
    expect(parent.metrics.snapshot().connectionsTotal).toBe(100);
    expect(String(log.lines.find((l) => l.msg === 'connection open')?.obj.peer)).toMatch(
      /^vm\(\d+\):\d+$/,
    );
  });

  it('a refused vsock dial keeps the errno code', async () => {
    const t = tempDir();
    cleanups.push(() => t.cleanup());
    const vsock = { transport: createEmulatedTransport({ dir: t.dir }) };
    const r = await started(
      createRoute({ name: 'nobody', listen: 'tcp:127.0.0.1:0', dial: 'vsock:3:9999', vsock }),
    );
    const c = await connect((r.endpoint as { port: number }).port);
    c.on('error', () => {});
    await closed(c);
    await waitFor(() => r.active === 0);
    // the kernel says ECONNREFUSED; the emulation currently reports the Unix socket's ENOENT
    expect(Object.keys(r.metrics.snapshot().errors)).toEqual([
      expect.stringMatching(/^(ECONNREFUSED|ENOENT)$/),
    ]);
  });

  it('egress gateway over one vsock port: enclave CONNECT -> vsock -> parent policy -> TCP', async () => {
    const t = tempDir();
    cleanups.push(() => t.cleanup());
    const vsock = { transport: createEmulatedTransport({ dir: t.dir }) };
    const up = await tcpServer(echo);
    cleanups.push(() => up.close());
    await started(
      createEgressGatewayServer({
        listen: 'vsock:any:8001',
        policy: { allow: [`127.0.0.1:${up.port}`] },
        vsock,
      }),
    );
    const gw = await started(
      createEgressGateway({ listen: 'tcp:127.0.0.1:0', parent: 'vsock:3:8001', vsock }),
    );
    const dial = httpConnectDialer(`http://127.0.0.1:${(gw.endpoint as { port: number }).port}`);
    const s = await dial({ host: '127.0.0.1', port: up.port });
    const data = payload(1024 * 1024);
    const got = readAll(s);
    s.end(data);
    expect(sha256(await got)).toBe(sha256(data));
    await expect(
      dial({ host: '127.0.0.1', port: up.port === 65535 ? 1 : up.port + 1 }),
    ).rejects.toMatchObject({
      code: 'ERR_PROXY_POLICY_DENIED',
    });
  });
});

describe('reload of a vsock listener (emulation)', () => {
  it('re-binds the same vsock port when a route changes, old connections keep working', async () => {
    const { createProxyRuntime, parseEndpoint } = await import('../src/index.js');
    const t = tempDir();
    cleanups.push(() => t.cleanup());
    const vsock = { transport: createEmulatedTransport({ dir: t.dir }) };
    const one = await tcpServer((s) => s.on('data', (d: Buffer) => s.write(`one:${d}`)));
    const two = await tcpServer((s) => s.on('data', (d: Buffer) => s.write(`two:${d}`)));
    cleanups.push(() => one.close());
    cleanups.push(() => two.close());
    const rt = createProxyRuntime({ vsock });
    cleanups.push(() => rt.close({ drain: false }));
    const route = (port: number) => ({
      name: 'in',
      listen: parseEndpoint('vsock:any:7000'),
      dial: parseEndpoint(`tcp:127.0.0.1:${port}`),
    });
    const front = {
      name: 'front',
      listen: parseEndpoint('tcp:127.0.0.1:0'),
      dial: parseEndpoint('vsock:1:7000'),
    };
    await rt.apply({ routes: [route(one.port), front] });
    const fport = (rt.route('front')!.endpoint as { port: number }).port;
    const ask = (s: import('node:net').Socket, m: string) =>
      new Promise<string>((resolve) => {
        s.once('data', (d: Buffer) => resolve(d.toString()));
        s.write(m);
      });
    const old = await connect(fport);
    expect(await ask(old, 'a')).toBe('one:a');
    const r = await rt.apply({ routes: [route(two.port), front] });
    expect(r).toEqual({ started: ['in'], kept: ['front'], drained: ['in'] });
    expect(await ask(old, 'b')).toBe('one:b');
    const fresh = await connect(fport);
    expect(await ask(fresh, 'c')).toBe('two:c');
    old.destroy();
    fresh.destroy();
  });
});
