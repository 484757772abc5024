import { execFile } from 'node:child_process';
import http from 'node:http';
import type net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fetch, ProxyAgent } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createEgressGateway,
  createEgressGatewayServer,
  createResolver,
  httpConnectDialer,
  type LookupFunction,
  type Route,
} from '../src/index.js';
import {
  closed,
  connect,
  memoryLogger,
  payload,
  readAll,
  sha256,
  tcpServer,
  tempDir,
  waitFor,
} from './helpers.js';

const run = promisify(execFile);
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Setup {
  gw: Route;
  parent: Route;
  proxyUrl: string;
  gwPort: number;
  httpPort: number;
  echoPort: number;
  parentLog: ReturnType<typeof memoryLogger>;
}

/** A tiny HTTP server, an echo server, the parent gateway on a Unix socket, the enclave gateway on TCP. */
async function setup(): Promise<Setup> {
  const web = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(`hello ${req.url}`);
  });
  await new Promise<void>((r) => web.listen({ host: '127.0.0.1', port: 0 }, r));
  cleanups.push(() => new Promise<void>((r) => web.close(() => r())));
  web.closeAllConnections?.();
  const httpPort = (web.address() as net.AddressInfo).port;
  const echoSrv = await tcpServer((s) => {
    s.pipe(s);
  });
  cleanups.push(() => echoSrv.close());
  const t = tempDir();
  cleanups.push(() => t.cleanup());
  const parentLog = memoryLogger();
  // names for the test: allowed.test -> 127.0.0.1, rebind.test -> 127.0.0.9 (denied)
  const lookup: LookupFunction = async (host) => {
    const table: Record<string, string> = {
      'allowed.test': '127.0.0.1',
      'rebind.test': '127.0.0.9',
    };
    const a = table[host];
    if (a) return { addresses: [{ address: a, family: 4 }] };
    throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  };
  const parent = createEgressGatewayServer({
    listen: `unix:${join(t.dir, 'gw.sock')}`,
    policy: {
      allow: [
        `127.0.0.1:${httpPort},${echoSrv.port}`,
        `*.test:${httpPort},${echoSrv.port}`,
        `localhost:${httpPort}`,
      ],
      deny: ['127.0.0.9', '[::1]'],
    },
    resolver: createResolver({ lookup }),
    logger: parentLog,
  });
  await parent.start();
  cleanups.push(() => parent.close({ drain: false }));
  const gw = createEgressGateway({ listen: 'tcp:127.0.0.1:0', parent: parent.endpoint });
  await gw.start();
  cleanups.push(() => gw.close({ drain: false }));
  const gwPort = (gw.endpoint as { port: number }).port;
  return {
    gw,
    parent,
    proxyUrl: `http://127.0.0.1:${gwPort}`,
    gwPort,
    httpPort,
    echoPort: echoSrv.port,
    parentLog,
  };
}

let s: Setup;
beforeEach(async () => {
  s = await setup();
});

describe('egress gateway', () => {
  it('curl through HTTP CONNECT (-p -x) reaches an allowed target', async () => {
    const { stdout } = await run('curl', [
      '-sS',
      '-p',
      '-x',
      s.proxyUrl,
      `http://127.0.0.1:${s.httpPort}/x`,
    ]);
    expect(stdout).toBe('hello /x');
  });

  it('curl through SOCKS5 with remote name resolution reaches an allowed name', async () => {
    const { stdout } = await run('curl', [
      '-sS',
      '--socks5-hostname',
      `127.0.0.1:${s.gwPort}`,
      `http://allowed.test:${s.httpPort}/y`,
    ]);
    expect(stdout).toBe('hello /y');
    const { stdout: v4 } = await run('curl', [
      '-sS',
      '--socks5',
      `127.0.0.1:${s.gwPort}`,
      `http://127.0.0.1:${s.httpPort}/z`,
    ]);
    expect(v4).toBe('hello /z');
  });

  it('curl gets 403 with the reason for a port not allowed, and SOCKS reply 2', async () => {
    const r = await run('curl', ['-sS', '-p', '-x', s.proxyUrl, 'http://127.0.0.1:1/']).catch(
      (e: { stderr: string; code: number }) => e,
    );
    expect((r as { stderr: string }).stderr).toMatch(/403/);
    const r2 = await run('curl', [
      '-sS',
      '--socks5-hostname',
      `127.0.0.1:${s.gwPort}`,
      `http://rebind.test:${s.httpPort}/`,
    ]).catch((e: { stderr: string; code: number }) => e);
    expect((r2 as { stderr: string }).stderr).toMatch(/not allowed|\(2\)|denied|ruleset/i);
    await waitFor(() => s.parent.metrics.snapshot().errors.ERR_PROXY_POLICY_DENIED === 2);
    const reasons = s.parentLog.lines
      .filter((l) => l.msg === 'connection refused by policy')
      .map((l) => String(l.obj.err));
    expect(reasons[0]).toContain('no allow rule matches 127.0.0.1 port 1');
    // the parent's log names the resolved address and the rule; the refusal message does not
    expect(reasons[1]).toContain('rebind.test port');
    expect(reasons[1]).not.toContain('127.0.0.9');
    const details = s.parentLog.lines.filter((l) => l.msg === 'connection refused by policy')[1]
      ?.obj.details;
    expect(details).toMatchObject({ rule: '127.0.0.9', resolved: '127.0.0.9' });
  });

  it('undici ProxyAgent works unchanged', async () => {
    const agent = new ProxyAgent(s.proxyUrl);
    cleanups.push(() => agent.close());
    const res = await fetch(`http://127.0.0.1:${s.httpPort}/undici`, { dispatcher: agent });
    expect(await res.text()).toBe('hello /undici');
    await expect(fetch('http://127.0.0.1:2/', { dispatcher: agent })).rejects.toThrow();
  });

  it('httpConnectDialer tunnels bytes (SHA-256, half-close) and maps a refusal to ERR_PROXY_POLICY_DENIED', async () => {
    const dial = httpConnectDialer(s.proxyUrl);
    const sock = await dial({ host: '127.0.0.1', port: s.echoPort });
    const data = payload(2 * 1024 * 1024);
    const got = readAll(sock);
    sock.end(data);
    expect(sha256(await got)).toBe(sha256(data));
    const denied = await dial({ host: 'rebind.test', port: s.echoPort }).catch((e: unknown) => e);
    expect(denied).toMatchObject({
      name: 'ProxyError',
      code: 'ERR_PROXY_POLICY_DENIED',
      message: expect.stringContaining('resolves to an address a deny rule covers'),
    });
    expect((denied as Error).message).not.toContain('127.0.0.9');
    await expect(dial({ host: '::1', port: s.echoPort })).rejects.toMatchObject({
      code: 'ERR_PROXY_POLICY_DENIED',
    });
    await expect(dial({ host: 'missing.test', port: s.echoPort })).rejects.toMatchObject({
      code: 'ERR_PROXY_DNS',
    });
  });

  it('the enclave side cannot widen the policy: a raw request to the parent is checked too', async () => {
    // speak the parent's framed protocol directly, as a compromised enclave would
    const ep = s.parent.endpoint;
    if (ep.kind !== 'unix') throw new Error('unix expected');
    const { connectUnix } = await import('./helpers.js');
    const c = await connectUnix(ep.path);
    const answer = readAll(c);
    c.end(`${JSON.stringify({ v: 1, host: '127.0.0.9', port: s.echoPort })}\n`);
    const line = JSON.parse((await answer).toString().trim()) as {
      ok: boolean;
      code: string;
      reason: string;
    };
    expect(line).toMatchObject({ ok: false, code: 'ERR_PROXY_POLICY_DENIED' });
    expect(line.reason).toContain('127.0.0.9');
    const bad = await connectUnix(ep.path);
    const a2 = readAll(bad);
    bad.end('not json\n');
    expect(JSON.parse((await a2).toString())).toMatchObject({
      ok: false,
      code: 'ERR_PROXY_GATEWAY_PROTOCOL',
    });
  });

  it('checks plain-HTTP proxy requests against the policy too (port 80 not allowed: 403) and answers malformed input with 400', async () => {
    // absolute-form requests are forwarded (see gateway-http.test.ts), so the parent decides
    const c = await connect(s.gwPort);
    const got = readAll(c);
    c.write('GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n');
    expect((await got).toString()).toMatch(/^HTTP\/1\.1 403/);
    await closed(c);
    const d = await connect(s.gwPort);
    const got2 = readAll(d);
    d.write('garbage\r\n\r\n');
    expect((await got2).toString()).toMatch(/^HTTP\/1\.1 400/);
  });
});
