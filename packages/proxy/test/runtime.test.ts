import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createProxyRuntime, parseEndpoint, type RouteConfig } from '../src/index.js';
import { closed, connect, echo, memoryLogger, type Server, tcpServer, waitFor } from './helpers.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
async function server(fn: (s: net.Socket) => void): Promise<Server> {
  const s = await tcpServer(fn);
  cleanups.push(() => s.close());
  return s;
}
function roundTrip(s: net.Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    s.once('data', (d: Buffer) => resolve(d.toString()));
    s.write(text);
  });
}
function tagged(tag: string) {
  return (s: net.Socket) => {
    s.on('data', (d: Buffer) => s.write(`${tag}:${d.toString()}`));
    s.on('end', () => s.end());
  };
}
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => tcpServer(() => {})));
  const ports = servers.map((s) => s.port);
  await Promise.all(servers.map((s) => s.close()));
  return ports;
}
function route(
  name: string,
  listen: number,
  dial: number,
  extra: Partial<RouteConfig> = {},
): RouteConfig {
  return {
    name,
    listen: parseEndpoint(`tcp:127.0.0.1:${listen}`),
    dial: parseEndpoint(`tcp:127.0.0.1:${dial}`),
    ...extra,
  };
}

describe('ProxyRuntime', () => {
  it('reload keeps unchanged routes and their connections, drains changed/removed ones, starts new ones', async () => {
    const one = await server(tagged('one'));
    const two = await server(tagged('two'));
    const [pa, pb, pc] = await freePorts(3);
    const log = memoryLogger();
    const rt = createProxyRuntime({ logger: log, drainTimeoutMs: 10_000 });
    cleanups.push(() => rt.close({ drain: false }));
    const r1 = await rt.apply({ routes: [route('a', pa!, one.port), route('b', pb!, one.port)] });
    expect(r1.started).toEqual(['a', 'b']);

    const ca = await connect(pa!);
    const cb = await connect(pb!);
    expect(await roundTrip(ca, 'x')).toBe('one:x');
    expect(await roundTrip(cb, 'y')).toBe('one:y');

    // a unchanged, b re-pointed to server two, c new
    const r2 = await rt.apply({
      routes: [route('a', pa!, one.port), route('b', pb!, two.port), route('c', pc!, two.port)],
    });
    expect(r2).toEqual({ started: ['b', 'c'], kept: ['a'], drained: ['b'] });
    // old connections live on: a untouched, old b draining on its old target
    expect(await roundTrip(ca, 'x2')).toBe('one:x2');
    expect(await roundTrip(cb, 'y2')).toBe('one:y2');
    // new connections to b reach the new target
    const cb2 = await connect(pb!);
    expect(await roundTrip(cb2, 'z')).toBe('two:z');
    const cc = await connect(pc!);
    expect(await roundTrip(cc, 'w')).toBe('two:w');

    // remove c: its listener goes, its open connection drains
    const r3 = await rt.apply({ routes: [route('a', pa!, one.port), route('b', pb!, two.port)] });
    expect(r3.drained).toEqual(['c']);
    await expect(connect(pc!)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(await roundTrip(cc, 'w2')).toBe('two:w2');

    // counters survive reloads and render as Prometheus text
    const text = rt.metricsText();
    expect(text).toContain('# TYPE ee_proxy_connections_total counter');
    expect(text).toContain('ee_proxy_connections_total{route="b"} 2');
    expect(text).toMatch(/ee_proxy_connections_active\{route="a"\} 1/);
    expect(text).toMatch(/ee_proxy_bytes_total\{route="a",direction="up"\} 3/);
    for (const s of [ca, cb, cb2, cc]) s.destroy();
    await waitFor(() => rt.snapshot().every((m) => m.connectionsActive === 0));
  });

  it('rejects duplicate names; a failing listener applies nothing (all or nothing)', async () => {
    const up = await server(echo);
    const [p1, p2] = await freePorts(2);
    const rt = createProxyRuntime();
    cleanups.push(() => rt.close({ drain: false }));
    await expect(
      rt.apply({ routes: [route('x', p1!, up.port), route('x', p1!, up.port)] }),
    ).rejects.toMatchObject({ code: 'ERR_PROXY_BAD_OPTION' });
    await expect(
      rt.apply({ routes: [route('ok', p1!, up.port), route('taken', up.port, up.port)] }),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(rt.routes()).toEqual([]);
    expect(rt.status()).toEqual([]);
    // The listener prepared for "ok" was closed: its address is free again.
    await expect(connect(p1!)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await rt.apply({ routes: [route('ok', p1!, up.port), route('ok2', p2!, up.port)] });
    const c = await connect(p1!);
    expect(await roundTrip(c, 'still')).toBe('still');
    c.destroy();
    await closed(c);
  });
});
