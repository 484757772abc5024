// /healthz reports what really listens: 503 "degraded" with the route's reason when a configured
// route lost its listener (a failed reload whose rollback could not bind the old address again).
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Logger, ProxyRuntime, parseEndpoint, type RouteConfig } from '@enclave-extras/proxy';
import { afterEach, describe, expect, it } from 'vitest';
import { startMetricsServer } from '../src/metrics-server.js';
import { echoServer, httpGet } from './helpers.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function listen(server: net.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts, () => resolve());
  });
}

describe('/healthz', () => {
  it('is 503 "degraded" and names the route that is not listening', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ee-healthz-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const echo = await echoServer();
    cleanups.push(() => echo.close());
    const sock = join(dir, 'c.sock');
    // Someone holds 127.0.0.1:T; route f listens on 127.0.0.2:T.
    const holder = net.createServer();
    await listen(holder, { host: '127.0.0.1', port: 0 });
    const t = (holder.address() as net.AddressInfo).port;
    cleanups.push(() => new Promise((r) => holder.close(r)));
    // When the prepared route "d" closes during the rollback, an intruder takes c's socket path,
    // so c cannot listen again.
    const intruder = net.createServer();
    cleanups.push(() => new Promise((r) => intruder.close(r)));
    const noop = () => {};
    const logger: Logger = {
      debug: noop,
      warn: noop,
      error: noop,
      info: (obj: object, msg?: string) => {
        if (msg === 'route closed' && (obj as { route?: string }).route === 'd') {
          intruder.listen({ path: sock });
        }
      },
    };
    const rt = new ProxyRuntime({ logger });
    cleanups.push(() => rt.close({ drain: false }));
    const route = (name: string, l: string): RouteConfig => ({
      name,
      listen: parseEndpoint(l),
      dial: parseEndpoint(`tcp:127.0.0.1:${echo.port}`),
    });
    await rt.apply({ routes: [route('c', `unix:${sock}`), route('f', `tcp:127.0.0.2:${t}`)] });
    const metrics = await startMetricsServer(
      rt,
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
      { isDraining: () => false, lastReload: () => undefined },
    );
    cleanups.push(() => metrics.close());
    expect((await httpGet(metrics.port, '/healthz')).status).toBe(200);

    // d takes over c's path (swap), e takes over f's port on 0.0.0.0 and fails: roll back.
    await expect(
      rt.apply({ routes: [route('d', `unix:${sock}`), route('e', `tcp:0.0.0.0:${t}`)] }),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
    const health = await httpGet(metrics.port, '/healthz');
    expect(health.status).toBe(503);
    expect(JSON.parse(health.body)).toEqual({
      status: 'degraded',
      routes: [
        {
          name: 'c',
          listen: `unix:${sock}`,
          state: 'failed',
          code: 'EADDRINUSE',
          error: expect.stringContaining(sock),
        },
        { name: 'f', listen: `127.0.0.2:${t}`, state: 'listening', bound: `127.0.0.2:${t}` },
      ],
    });

    // Once the address is free, a reload brings c back and /healthz is 200 again.
    await new Promise((r) => intruder.close(r));
    await rt.apply({ routes: [route('c', `unix:${sock}`), route('f', `tcp:127.0.0.2:${t}`)] });
    const healed = await httpGet(metrics.port, '/healthz');
    expect(healed.status).toBe(200);
    expect(JSON.parse(healed.body).routes.map((r: { state: string }) => r.state)).toEqual([
      'listening',
      'listening',
    ]);
  });

  it('is 503 "draining" while draining', async () => {
    const echo = await echoServer();
    cleanups.push(() => echo.close());
    const rt = new ProxyRuntime();
    cleanups.push(() => rt.close({ drain: false }));
    await rt.apply({
      routes: [
        {
          name: 'a',
          listen: parseEndpoint('tcp:127.0.0.1:0'),
          dial: parseEndpoint(`tcp:127.0.0.1:${echo.port}`),
        },
      ],
    });
    let draining = false;
    const metrics = await startMetricsServer(
      rt,
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
      { isDraining: () => draining, lastReload: () => undefined },
    );
    cleanups.push(() => metrics.close());
    expect(JSON.parse((await httpGet(metrics.port, '/healthz')).body)).toMatchObject({
      status: 'ok',
      routes: [{ name: 'a', state: 'listening' }],
    });
    draining = true;
    const h = await httpGet(metrics.port, '/healthz');
    expect(h.status).toBe(503);
    expect(JSON.parse(h.body)).toEqual({ status: 'draining', routes: [] });
  });
});
