// Issue 10 item 7: a reload that cannot bind a listener leaves the previous routes listening
// (prepare, then swap; roll back on failure), and status() tells what really listens.
import type net from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createProxyRuntime, parseEndpoint, type RouteConfig } from '../src/index.js';
import { connect, connectUnix, memoryLogger, type Server, tcpServer, tempDir } from './helpers.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
async function server(tag: string): Promise<Server> {
  const s = await tcpServer((sock) => {
    sock.on('data', (d: Buffer) => sock.write(`${tag}:${d.toString()}`));
    sock.on('end', () => sock.end());
  });
  cleanups.push(() => s.close());
  return s;
}
function ask(s: net.Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    s.once('data', (d: Buffer) => resolve(d.toString()));
    s.once('error', reject);
    s.write(text);
  });
}
async function askNew(port: number, text: string, host = '127.0.0.1'): Promise<string> {
  const s = await connect(port, host);
  try {
    return await ask(s, text);
  } finally {
    s.destroy();
  }
}
function route(name: string, listen: string, dial: number): RouteConfig {
  return {
    name,
    listen: parseEndpoint(listen),
    dial: parseEndpoint(`tcp:127.0.0.1:${dial}`),
  };
}
async function freePort(): Promise<number> {
  const s = await tcpServer(() => {});
  const p = s.port;
  await s.close();
  return p;
}

describe('ProxyRuntime.apply is all or nothing', () => {
  it('a changed route whose new listener cannot bind keeps the old one listening', async () => {
    const one = await server('one');
    const taken = await server('other');
    const pa = await freePort();
    const log = memoryLogger();
    const rt = createProxyRuntime({ logger: log });
    cleanups.push(() => rt.close({ drain: false }));
    await rt.apply({ routes: [route('a', `tcp:127.0.0.1:${pa}`, one.port)] });
    const open = await connect(pa);
    expect(await ask(open, 'x')).toBe('one:x');

    // "a" moves to a port someone else holds.
    await expect(
      rt.apply({ routes: [route('a', `tcp:127.0.0.1:${taken.port}`, one.port)] }),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(await askNew(pa, 'y')).toBe('one:y');
    expect(await ask(open, 'z')).toBe('one:z');
    expect(rt.status()).toEqual([
      { name: 'a', listen: `127.0.0.1:${pa}`, state: 'listening', bound: `127.0.0.1:${pa}` },
    ]);
    expect(log.lines.some((l) => /configuration not applied/.test(l.msg ?? ''))).toBe(true);
    open.destroy();
  });

  it('a failing new route leaves the kept, changed and removed routes as they were', async () => {
    const one = await server('one');
    const two = await server('two');
    const taken = await server('other');
    const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
    const rt = createProxyRuntime();
    cleanups.push(() => rt.close({ drain: false }));
    await rt.apply({
      routes: [
        route('a', `tcp:127.0.0.1:${pa}`, one.port),
        route('b', `tcp:127.0.0.1:${pb}`, one.port),
        route('c', `tcp:127.0.0.1:${pc}`, one.port),
      ],
    });
    // a kept, b re-pointed on the same address (a swap), c removed, d new on a taken port.
    await expect(
      rt.apply({
        routes: [
          route('a', `tcp:127.0.0.1:${pa}`, one.port),
          route('b', `tcp:127.0.0.1:${pb}`, two.port),
          route('d', `tcp:127.0.0.1:${taken.port}`, two.port),
        ],
      }),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(await askNew(pa, '1')).toBe('one:1');
    expect(await askNew(pb, '2')).toBe('one:2');
    expect(await askNew(pc, '3')).toBe('one:3');
    expect(rt.status().map((s) => [s.name, s.state])).toEqual([
      ['a', 'listening'],
      ['b', 'listening'],
      ['c', 'listening'],
    ]);
  });

  it('a failed swap binds the old listener again (rollback)', async () => {
    const one = await server('one');
    const two = await server('two');
    // 127.0.0.1:P is held by someone else; the route listens on 127.0.0.2:P. A new route on
    // 0.0.0.0:P conflicts with it, so it is swapped in: the old listener stops, the bind fails
    // (127.0.0.1:P is taken), and the old listener must come back.
    const blocker = await tcpServer(() => {});
    cleanups.push(() => blocker.close());
    const p = blocker.port;
    const rt = createProxyRuntime();
    cleanups.push(() => rt.close({ drain: false }));
    await rt.apply({ routes: [route('c', `tcp:127.0.0.2:${p}`, one.port)] });
    expect(await askNew(p, 'before', '127.0.0.2')).toBe('one:before');
    await expect(
      rt.apply({ routes: [route('d', `tcp:0.0.0.0:${p}`, two.port)] }),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(await askNew(p, 'after', '127.0.0.2')).toBe('one:after');
    expect(rt.status()).toEqual([
      { name: 'c', listen: `127.0.0.2:${p}`, state: 'listening', bound: `127.0.0.2:${p}` },
    ]);
    // And a good reload still works afterwards.
    const r = await rt.apply({ routes: [route('c', `tcp:127.0.0.2:${p}`, two.port)] });
    expect(r).toEqual({ started: ['c'], kept: [], drained: ['c'] });
    expect(await askNew(p, 'swapped', '127.0.0.2')).toBe('two:swapped');
  });

  it('swaps a changed route on the same Unix socket path', async () => {
    const one = await server('one');
    const two = await server('two');
    const tmp = tempDir();
    cleanups.push(() => tmp.cleanup());
    const path = join(tmp.dir, 'r.sock');
    const rt = createProxyRuntime();
    cleanups.push(() => rt.close({ drain: false }));
    await rt.apply({ routes: [route('u', `unix:${path}`, one.port)] });
    const unixAsk = async (text: string) => {
      const s = await connectUnix(path);
      try {
        return await ask(s, text);
      } finally {
        s.destroy();
      }
    };
    expect(await unixAsk('a')).toBe('one:a');
    await rt.apply({ routes: [route('u', `unix:${path}`, two.port)] });
    expect(await unixAsk('b')).toBe('two:b');
  });
});
