import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createEmulatedTransport } from '@enclave-extras/vsock';
import { EnvHttpProxyAgent, fetch, ProxyAgent } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createEgressGateway,
  createEgressGatewayServer,
  createResolver,
  type LookupFunction,
  type Route,
} from '../src/index.js';
import {
  connect,
  memoryLogger,
  payload,
  readAll,
  type Server,
  sha256,
  tcpServer,
  tempDir,
  waitFor,
} from './helpers.js';

// Plain-HTTP proxy requests (absolute form, `GET http://host/path HTTP/1.1`) through the enclave
// half of the egress gateway, with both halves joined over the vsock emulation (real Unix sockets).

const run = promisify(execFile);
function has(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const hasCurl = has('curl', ['--version']);
const hasPython = has('python3', ['--version']);

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** What the origin saw of one request. */
interface Seen {
  method: string;
  url: string;
  httpVersion: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
}

interface Origin {
  port: number;
  /** TCP connections the origin accepted. */
  connections: number;
  requests: Seen[];
}

const BIG = payload(5 * 1024 * 1024);

/**
 * An HTTP origin: `/upload` answers the SHA-256 and size of the request body, `/download` sends
 * BIG chunked, anything else answers what it received as JSON.
 */
async function httpOrigin(host = '127.0.0.1'): Promise<Origin> {
  const o: Origin = { port: 0, connections: 0, requests: [] };
  const server = http.createServer((req, res) => {
    o.requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      httpVersion: req.httpVersion,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
    });
    if (req.url === '/upload') {
      const h = createHash('sha256');
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        h.update(c);
        bytes += c.length;
      });
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.end(
          JSON.stringify({
            sha256: h.digest('hex'),
            bytes,
            transferEncoding: req.headers['transfer-encoding'] ?? null,
            contentLength: req.headers['content-length'] ?? null,
          }),
        );
      });
      return;
    }
    if (req.url === '/download') {
      res.setHeader('content-type', 'application/octet-stream');
      for (let i = 0; i < BIG.length; i += 256 * 1024) res.write(BIG.subarray(i, i + 256 * 1024));
      res.end();
      return;
    }
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(o.requests.at(-1)));
    });
  });
  server.on('connection', () => {
    o.connections++;
  });
  await new Promise<void>((r) => server.listen({ host, port: 0 }, r));
  o.port = (server.address() as net.AddressInfo).port;
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return o;
}

interface Setup {
  gw: Route;
  parent: Route;
  gwPort: number;
  proxyUrl: string;
  /** allowed */
  web: Origin;
  /** allowed too: a second origin that pipelined requests must never reach */
  other: Origin;
  /** on ::1, allowed */
  v6: Origin;
  /** on 127.0.0.1, denied by an explicit rule */
  denied: Origin;
  /** a raw TCP origin (allowed) recording every byte it receives */
  raw: Server & { received: Buffer[] };
  gwLog: ReturnType<typeof memoryLogger>;
  parentLog: ReturnType<typeof memoryLogger>;
}

async function setup(): Promise<Setup> {
  const web = await httpOrigin();
  const other = await httpOrigin();
  const v6 = await httpOrigin('::1');
  const denied = await httpOrigin();
  const received: Buffer[] = [];
  const rawSrv = await tcpServer((sock) => {
    let seen = Buffer.alloc(0);
    let answered = false;
    sock.on('data', (d: Buffer) => {
      received.push(d);
      seen = Buffer.concat([seen, d]);
      if (!answered && seen.includes('\r\n\r\n')) {
        answered = true;
        sock.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfirst');
      }
    });
  });
  cleanups.push(() => rawSrv.close());
  const raw = Object.assign(rawSrv, { received });
  const t = tempDir();
  cleanups.push(() => t.cleanup());
  const vsock = { transport: createEmulatedTransport({ dir: t.dir }) };
  // allowed.test -> 127.0.0.1, rebind.test -> 127.0.0.9 (denied)
  const lookup: LookupFunction = async (host) => {
    const table: Record<string, string> = {
      'allowed.test': '127.0.0.1',
      'rebind.test': '127.0.0.9',
    };
    const a = table[host];
    if (a) return { addresses: [{ address: a, family: 4 }] };
    throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  };
  const parentLog = memoryLogger();
  const parent = createEgressGatewayServer({
    listen: 'vsock:any:8001',
    vsock,
    policy: {
      allow: [
        `127.0.0.1:${web.port},${other.port},${raw.port}`,
        `*.test:${web.port}`,
        `[::1]:${v6.port}`,
      ],
      deny: [`127.0.0.1:${denied.port}`, '127.0.0.9'],
    },
    resolver: createResolver({ lookup }),
    logger: parentLog,
  });
  await parent.start();
  cleanups.push(() => parent.close({ drain: false }));
  const gwLog = memoryLogger();
  const gw = createEgressGateway({
    listen: 'tcp:127.0.0.1:0',
    parent: 'vsock:3:8001',
    vsock,
    logger: gwLog,
  });
  await gw.start();
  cleanups.push(() => gw.close({ drain: false }));
  const gwPort = (gw.endpoint as { port: number }).port;
  return {
    gw,
    parent,
    gwPort,
    proxyUrl: `http://127.0.0.1:${gwPort}`,
    web,
    other,
    v6,
    denied,
    raw,
    gwLog,
    parentLog,
  };
}

let s: Setup;
beforeEach(async () => {
  s = await setup();
});

interface RawResponse {
  status: number;
  head: string;
  body: string;
}

/** Sends bytes on one new connection to the gateway, reads until the gateway ends, then ends too. */
async function exchange(data: string | Buffer): Promise<RawResponse> {
  const c = await connect(s.gwPort);
  c.on('error', () => {});
  const got = readAll(c);
  c.write(data);
  const text = (await got).toString('latin1');
  c.end();
  const i = text.indexOf('\r\n\r\n');
  const head = i < 0 ? text : text.slice(0, i);
  return {
    status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0),
    head,
    body: i < 0 ? '' : text.slice(i + 4),
  };
}

/** One request through the gateway as an HTTP proxy with node:http (path = the absolute URL). */
function viaProxy(
  url: string,
  options: { method?: string; body?: Buffer; chunked?: boolean; agent?: http.Agent } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const headers: http.OutgoingHttpHeaders = { host: u.host };
    if (options.body && !options.chunked) headers['content-length'] = options.body.length;
    const req = http.request(
      {
        host: '127.0.0.1',
        port: s.gwPort,
        method: options.method ?? 'GET',
        path: url,
        headers,
        ...(options.agent ? { agent: options.agent } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (!options.body) {
      req.end();
      return;
    }
    const body = options.body;
    // 64 KiB writes with backpressure; without content-length node:http sends them chunked
    pipeline(
      Readable.from(
        (function* () {
          for (let i = 0; i < body.length; i += 64 * 1024) yield body.subarray(i, i + 64 * 1024);
        })(),
      ),
      req,
    ).catch(reject);
  });
}

/** Waits for the gateway to finish every connection, then returns its 'connection closed' lines. */
async function closedLines() {
  await waitFor(() => s.gw.active === 0 && s.parent.active === 0);
  return s.gwLog.lines.filter((l) => l.msg === 'connection closed').map((l) => l.obj);
}

describe('egress gateway: plain-HTTP proxy requests (absolute form)', () => {
  it('forwards a hand-written absolute-form GET in origin form: Host from the URL, proxy headers dropped, Connection: close', async () => {
    const r = await exchange(
      `GET http://127.0.0.1:${s.web.port}/echo?q=1&r=%20x#frag HTTP/1.1\r\n` +
        'Host: wrong.example\r\n' +
        'Proxy-Connection: keep-alive\r\n' +
        'Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=\r\n' +
        'Connection: keep-alive, X-Hop\r\n' +
        'Keep-Alive: timeout=5\r\n' +
        'X-Hop: per-hop\r\n' +
        'X-Keep: yes\r\n' +
        'Accept: */*\r\n\r\n',
    );
    expect(r.status).toBe(200);
    expect(r.head).toMatch(/\r\nconnection: close/i);
    const seen = JSON.parse(r.body) as Seen;
    expect(seen.method).toBe('GET');
    expect(seen.url).toBe('/echo?q=1&r=%20x');
    expect(seen.httpVersion).toBe('1.1');
    expect(seen.headers.host).toBe(`127.0.0.1:${s.web.port}`);
    expect(seen.headers.connection).toBe('close');
    expect(seen.headers['x-keep']).toBe('yes');
    expect(seen.headers.accept).toBe('*/*');
    for (const h of ['proxy-connection', 'proxy-authorization', 'keep-alive', 'x-hop']) {
      expect(seen.headers[h], h).toBeUndefined();
    }
    // one connection each side, one close line with the target and counted bytes
    const lines = await closedLines();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ target: `127.0.0.1:${s.web.port}`, reason: 'eof' });
    expect(lines[0]?.bytesUp).toBeGreaterThan(0);
    expect(lines[0]?.bytesDown).toBe(Buffer.byteLength(`${r.head}\r\n\r\n${r.body}`, 'latin1'));
    expect(s.parent.metrics.snapshot().connectionsTotal).toBe(1);
  });

  it('node:http with an http:// URL and a keep-alive agent: one request per proxy connection, names resolved by the parent', async () => {
    const agent = new http.Agent({ keepAlive: true });
    cleanups.push(() => agent.destroy());
    for (const q of ['a', 'b']) {
      const res = await viaProxy(`http://allowed.test:${s.web.port}/node?${q}=1`, { agent });
      expect(res.status).toBe(200);
      expect(res.headers.connection).toBe('close');
      const seen = JSON.parse(res.body.toString()) as Seen;
      expect(seen.url).toBe(`/node?${q}=1`);
      expect(seen.headers.host).toBe(`allowed.test:${s.web.port}`);
    }
    const lines = await closedLines();
    expect(lines.map((l) => l.target)).toEqual([
      `allowed.test:${s.web.port}`,
      `allowed.test:${s.web.port}`,
    ]);
    expect(s.web.connections).toBe(2);
  });

  it.skipIf(!hasCurl)(
    `curl -x (plain http:// proxy, HTTP/1.1 and -0 HTTP/1.0)${hasCurl ? '' : ' [SKIPPED: curl not found]'}`,
    async () => {
      const { stdout } = await run('curl', [
        '-sS',
        '-x',
        s.proxyUrl,
        `http://127.0.0.1:${s.web.port}/curl?a=b`,
      ]);
      const seen = JSON.parse(stdout) as Seen;
      expect(seen.url).toBe('/curl?a=b');
      expect(seen.headers.connection).toBe('close');
      expect(seen.headers['proxy-connection']).toBeUndefined();
      const { stdout: old } = await run('curl', [
        '-sS',
        '-0',
        '-x',
        s.proxyUrl,
        `http://127.0.0.1:${s.web.port}/curl10`,
      ]);
      expect(JSON.parse(old)).toMatchObject({ url: '/curl10', httpVersion: '1.0' });
      const denied = await run('curl', [
        '-sS',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '-x',
        s.proxyUrl,
        `http://127.0.0.1:${s.denied.port}/`,
      ]);
      expect(denied.stdout).toBe('403');
      expect(s.denied.connections).toBe(0);
    },
  );

  it.skipIf(!hasPython)(
    `Python urllib with an http proxy${hasPython ? '' : ' [SKIPPED: python3 not found]'}`,
    async () => {
      const script =
        'import sys, urllib.request\n' +
        "o = urllib.request.build_opener(urllib.request.ProxyHandler({'http': sys.argv[1]}))\n" +
        'sys.stdout.write(o.open(sys.argv[2]).read().decode())\n';
      const { stdout } = await run('python3', [
        '-c',
        script,
        s.proxyUrl,
        `http://allowed.test:${s.web.port}/py`,
      ]);
      expect(JSON.parse(stdout)).toMatchObject({
        url: '/py',
        headers: { host: `allowed.test:${s.web.port}` },
      });
    },
  );

  it('undici: ProxyAgent with proxyTunnel: false sends absolute form; EnvHttpProxyAgent (HTTP_PROXY) works too', async () => {
    const forward = new ProxyAgent({ uri: s.proxyUrl, proxyTunnel: false });
    cleanups.push(() => forward.close());
    const res = await fetch(`http://127.0.0.1:${s.web.port}/undici-forward`, {
      dispatcher: forward,
    });
    const seen = (await res.json()) as Seen;
    expect(seen.url).toBe('/undici-forward');
    expect(seen.headers.connection).toBe('close'); // added by the gateway: not a CONNECT tunnel
    const env = new EnvHttpProxyAgent({ httpProxy: s.proxyUrl, noProxy: '' });
    cleanups.push(() => env.close());
    const res2 = await fetch(`http://127.0.0.1:${s.web.port}/undici-env`, { dispatcher: env });
    expect(((await res2.json()) as Seen).url).toBe('/undici-env');
    const denied = await fetch(`http://127.0.0.1:${s.denied.port}/`, { dispatcher: forward });
    expect(denied.status).toBe(403);
    expect(s.denied.connections).toBe(0);
  });

  it('streams a 5 MiB chunked POST body and a 5 MiB chunked response, SHA-256 checked at each end', async () => {
    const up = await viaProxy(`http://127.0.0.1:${s.web.port}/upload`, {
      method: 'POST',
      body: BIG,
      chunked: true,
    });
    expect(up.status).toBe(200);
    expect(JSON.parse(up.body.toString())).toEqual({
      sha256: sha256(BIG),
      bytes: BIG.length,
      transferEncoding: 'chunked',
      contentLength: null,
    });
    const cl = payload(1024 * 1024 + 7);
    const up2 = await viaProxy(`http://127.0.0.1:${s.web.port}/upload`, {
      method: 'PUT',
      body: cl,
    });
    expect(JSON.parse(up2.body.toString())).toMatchObject({
      sha256: sha256(cl),
      contentLength: String(cl.length),
    });
    const down = await viaProxy(`http://127.0.0.1:${s.web.port}/download`);
    expect(down.status).toBe(200);
    expect(down.headers['transfer-encoding']).toBe('chunked');
    expect(down.body.length).toBe(BIG.length);
    expect(sha256(down.body)).toBe(sha256(BIG));
    const lines = await closedLines();
    expect(lines).toHaveLength(3);
    expect(Number(lines[0]?.bytesUp)).toBeGreaterThan(BIG.length);
    expect(Number(lines[2]?.bytesDown)).toBeGreaterThan(BIG.length);
  });

  it('HTTP/1.0 by hand: no Host header (added from the URL), a Content-Length body', async () => {
    const r = await exchange(`GET http://127.0.0.1:${s.web.port}/old HTTP/1.0\r\n\r\n`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({
      url: '/old',
      httpVersion: '1.0',
      headers: { host: `127.0.0.1:${s.web.port}`, connection: 'close' },
    });
    const body = 'name=value&x=1';
    const p = await exchange(
      `POST http://127.0.0.1:${s.web.port}/upload HTTP/1.0\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    expect(JSON.parse(p.body)).toMatchObject({
      sha256: sha256(Buffer.from(body)),
      bytes: body.length,
    });
  });

  it('a client that half-closes right after its request (EOF with the head) still gets the answer, body in order', async () => {
    const c = await connect(s.gwPort);
    const got = readAll(c);
    c.end(
      `POST http://127.0.0.1:${s.raw.port}/half HTTP/1.0\r\nContent-Length: 5\r\nProxy-Connection: close\r\n\r\nhello`,
    );
    const text = (await got).toString('latin1');
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nfirst$/);
    await closedLines();
    expect(Buffer.concat(s.raw.received).toString('latin1')).toBe(
      `POST /half HTTP/1.0\r\nHost: 127.0.0.1:${s.raw.port}\r\nContent-Length: 5\r\n` +
        'Connection: close\r\n\r\nhello',
    );
  });

  it('IPv6 in brackets, an empty path, and the default port 80 are parsed like CONNECT targets', async () => {
    const r = await exchange(`GET http://[::1]:${s.v6.port}?x=1 HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({
      url: '/?x=1',
      headers: { host: `[::1]:${s.v6.port}` },
    });
    // no port means 80: the parent refuses it for 127.0.0.1, naming the port (nothing dialled)
    const d = await exchange('GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(d.status).toBe(403);
    expect(d.body).toContain('no allow rule matches 127.0.0.1 port 80');
    const lines = await closedLines();
    expect(lines.map((l) => l.target)).toEqual([`[::1]:${s.v6.port}`, '127.0.0.1:80']);
  });

  it('a denied target gets 403 with the parent reason, and the origin never sees a connection', async () => {
    const r = await exchange(
      `GET http://127.0.0.1:${s.denied.port}/secret HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    expect(r.status).toBe(403);
    expect(r.head).toMatch(/\r\nX-Enclave-Extras-Error: ERR_PROXY_POLICY_DENIED\r\n/);
    expect(r.body).toContain(`127.0.0.1:${s.denied.port}`);
    const n = await exchange(
      `POST http://rebind.test:${s.web.port}/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc`,
    );
    expect(n.status).toBe(403);
    // the enclave learns that the name is refused, not what it resolved to (issue 10 item 2)
    expect(n.body).toContain(
      `rebind.test port ${s.web.port} resolves to an address a deny rule covers`,
    );
    expect(n.body).not.toContain('127.0.0.9');
    const p = await exchange(`GET http://127.0.0.1:1/ HTTP/1.1\r\n\r\n`);
    expect(p.status).toBe(403);
    expect(p.body).toContain('no allow rule matches 127.0.0.1 port 1');
    await waitFor(() => s.parent.metrics.snapshot().errors.ERR_PROXY_POLICY_DENIED === 3);
    expect(s.denied.connections).toBe(0);
    expect(s.web.connections).toBe(0);
  });

  it('refuses https:// and other schemes in absolute form with 400 naming the scheme; nothing is dialled', async () => {
    const r = await exchange(`GET https://127.0.0.1:${s.web.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(r.status).toBe(400);
    expect(r.head).toMatch(/\r\nX-Enclave-Extras-Error: ERR_PROXY_GATEWAY_PROTOCOL\r\n/);
    expect(r.body).toContain('https://');
    expect(r.body).toContain('CONNECT');
    const f = await exchange(`GET ftp://127.0.0.1:${s.web.port}/f HTTP/1.1\r\n\r\n`);
    expect(f.status).toBe(400);
    expect(f.body).toContain('ftp://');
    expect(s.parent.metrics.snapshot().connectionsTotal).toBe(0);
    expect(s.web.connections).toBe(0);
  });

  it('answers malformed absolute-form requests with 400 and dials nothing', async () => {
    const w = s.web.port;
    const cases: Array<[string, RegExp]> = [
      ['GET http:///x HTTP/1.1\r\n\r\n', /has no host/],
      ['GET http://?q HTTP/1.1\r\n\r\n', /has no host/],
      ['GET http://:8080/ HTTP/1.1\r\n\r\n', /is not host\[:port\]/],
      ['GET http://127.0.0.1:99999/ HTTP/1.1\r\n\r\n', /is not host\[:port\]/],
      ['GET http://127.0.0.1:0/ HTTP/1.1\r\n\r\n', /is not host\[:port\]/],
      [`GET http://127.0.0.1:${w}x/ HTTP/1.1\r\n\r\n`, /is not host\[:port\]/],
      [`GET http://::1:${w}/ HTTP/1.1\r\n\r\n`, /is not host\[:port\]/],
      [`GET http://[127.0.0.1]:${w}/ HTTP/1.1\r\n\r\n`, /is not host\[:port\]/],
      [`GET http://exa%6dple.test:${w}/ HTTP/1.1\r\n\r\n`, /is not host\[:port\]/],
      [`GET http://user:hunter2@127.0.0.1:${w}/ HTTP/1.1\r\n\r\n`, /userinfo/],
      [`GET http://@127.0.0.1:${w}/ HTTP/1.1\r\n\r\n`, /userinfo/],
      ['GET /just/a/path HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', /not a proxy request/],
      ['OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', /not a proxy request/],
      [`GET 127.0.0.1:${w} HTTP/1.1\r\n\r\n`, /not an absolute http:\/\/ URL/],
      [`GET http://127.0.0.1:${w}/ HTTP/2.0\r\n\r\n`, /malformed HTTP request line/],
      [`GET  http://127.0.0.1:${w}/ HTTP/1.1\r\n\r\n`, /malformed HTTP request line/],
      [`GET http://127.0.0.1:${w}/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`, /more than one Host/],
      [`GET http://127.0.0.1:${w}/ HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n`, /malformed header/],
      [`GET http://127.0.0.1:${w}/ HTTP/1.1\r\nX-A : 1\r\n\r\n`, /malformed header/],
      [`GET http://127.0.0.1:${w}/ HTTP/1.1\r\nno colon\r\n\r\n`, /malformed header/],
      [`GET http://127.0.0.1:${w}/ HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n`, /control character/],
      [`GET http://127.0.0.1:${w}/a\x01b HTTP/1.1\r\n\r\n`, /control character/],
    ];
    for (const [request, reason] of cases) {
      const r = await exchange(request);
      expect(r.status, request).toBe(400);
      expect(r.head, request).toMatch(/\r\nX-Enclave-Extras-Error: ERR_PROXY_GATEWAY_PROTOCOL\r\n/);
      expect(r.body, request).toMatch(reason);
      expect(r.body, request).not.toContain('hunter2');
    }
    expect(s.parent.metrics.snapshot().connectionsTotal).toBe(0);
    expect(s.web.connections).toBe(0);
    const warned = s.gwLog.lines.filter((l) => l.obj.code === 'ERR_PROXY_GATEWAY_PROTOCOL');
    expect(warned).toHaveLength(cases.length);
    expect(JSON.stringify(s.gwLog.lines)).not.toContain('hunter2');
  });

  it('answers an oversize request head with 431 (complete or never ending) and dials nothing', async () => {
    const big = `GET http://127.0.0.1:${s.web.port}/ HTTP/1.1\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`;
    const r = await exchange(big);
    expect(r.status).toBe(431);
    expect(r.body).toMatch(/longer than 16384 bytes/);
    const endless = await exchange(
      `GET http://127.0.0.1:${s.web.port}/ HTTP/1.1\r\nX-Big: ${'b'.repeat(64 * 1024)}`,
    );
    expect(endless.status).toBe(431);
    // just under the limit is fine
    const ok = await exchange(
      `GET http://127.0.0.1:${s.web.port}/ HTTP/1.1\r\nX-Big: ${'c'.repeat(15 * 1024)}\r\n\r\n`,
    );
    expect(ok.status).toBe(200);
    expect(s.parent.metrics.snapshot().connectionsTotal).toBe(1);
    expect(s.web.connections).toBe(1);
  });

  it('a second request pipelined on the same connection with another Host never reaches another origin', async () => {
    const first = `GET http://127.0.0.1:${s.raw.port}/first HTTP/1.1\r\nHost: 127.0.0.1:${s.raw.port}\r\n\r\n`;
    const second = `GET http://127.0.0.1:${s.other.port}/second HTTP/1.1\r\nHost: 127.0.0.1:${s.other.port}\r\n\r\n`;
    const r = await exchange(first + second);
    expect(r.status).toBe(200);
    expect(r.body).toBe('first');
    await closedLines();
    await waitFor(
      () => Buffer.concat(s.raw.received).includes(second),
      5000,
      'the pipelined bytes',
    );
    // the gateway asked the parent for one target only, and the other origin saw nothing
    expect(s.parent.metrics.snapshot().connectionsTotal).toBe(1);
    expect(
      s.parentLog.lines.filter((l) => l.msg === 'connection open').map((l) => l.obj.target),
    ).toEqual([`127.0.0.1:${s.raw.port}`]);
    expect(s.other.connections).toBe(0);
    // the pipelined bytes went, unchanged, to the origin the first request was allowed to reach
    const got = Buffer.concat(s.raw.received).toString('latin1');
    expect(got.startsWith('GET /first HTTP/1.1\r\n')).toBe(true);
    expect(got.endsWith(second)).toBe(true);
  });
});
