// Issue 10 item 1: no spelling of the unspecified address (0.0.0.0/8, ::) is ever dialled, and
// IPv4-mapped / IPv4-compatible / NAT64 spellings are decided as the IPv4 address they embed.
// A real loopback service on 127.0.0.1:P and [::1]:P must never see a connection, whatever the
// request kind (CONNECT, absolute-form http://, SOCKS5 atyp 1/3/4) or the route.
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createEgressGateway,
  createEgressGatewayServer,
  createResolver,
  createRoute,
  type LookupFunction,
  type Route,
} from '../src/index.js';
import { closed, connect, memoryLogger, tempDir, waitFor } from './helpers.js';

const U = 'ERR_PROXY_UNSPECIFIED_ADDRESS';
const D = 'ERR_PROXY_POLICY_DENIED';

interface Row {
  host: string;
  code: typeof U | typeof D;
  /** SOCKS5 atyp 1 payload (4 bytes, hex) when the spelling is an IPv4 address. */
  v4?: string;
  /** SOCKS5 atyp 4 payload (16 bytes, hex) when the spelling is an IPv6 address. */
  v6?: string;
}

const Z16 = '0'.repeat(32);
const ROWS: Row[] = [
  // every spelling of the unspecified address the system accepts
  { host: '0.0.0.0', code: U, v4: '00000000' },
  { host: '0', code: U, v4: '00000000' },
  { host: '0.0', code: U, v4: '00000000' },
  { host: '0.0.0', code: U, v4: '00000000' },
  { host: '0x0', code: U, v4: '00000000' },
  { host: '0X0', code: U, v4: '00000000' },
  { host: '00000000', code: U, v4: '00000000' },
  { host: '0.0x0.00', code: U, v4: '00000000' },
  { host: '0.1.2.3', code: U, v4: '00010203' },
  { host: '::', code: U, v6: Z16 },
  { host: '[::]', code: U, v6: Z16 },
  { host: '0::0', code: U, v6: Z16 },
  { host: '0:0:0:0:0:0:0:0', code: U, v6: Z16 },
  { host: '::0.0.0.0', code: U, v6: Z16 },
  { host: '::ffff:0.0.0.0', code: U, v6: '00000000000000000000ffff00000000' },
  { host: '::ffff:0:0', code: U, v6: '00000000000000000000ffff00000000' },
  { host: '64:ff9b::', code: U, v6: '0064ff9b000000000000000000000000' },
  // loopback embedded in IPv6 spellings, and inet_aton spellings: denied by 127.0.0.0/8
  { host: '::ffff:127.0.0.1', code: D, v6: '00000000000000000000ffff7f000001' },
  { host: '::ffff:7f00:1', code: D, v6: '00000000000000000000ffff7f000001' },
  { host: '::127.0.0.1', code: D, v6: '0000000000000000000000007f000001' },
  { host: '::7f00:1', code: D, v6: '0000000000000000000000007f000001' },
  { host: '64:ff9b::7f00:1', code: D, v6: '0064ff9b00000000000000007f000001' },
  { host: '64:ff9b::127.0.0.1', code: D, v6: '0064ff9b00000000000000007f000001' },
  { host: '127.1', code: D, v4: '7f000001' },
  { host: '0x7f000001', code: D, v4: '7f000001' },
  { host: '2130706433', code: D, v4: '7f000001' },
  { host: '0177.0.0.1', code: D, v4: '7f000001' },
  // allowed names whose DNS answer is one of the above (an injected resolver: no DNS involved)
  { host: 'zero.test', code: U },
  { host: 'zero6.test', code: U },
  { host: 'mapped-zero.test', code: U },
  { host: 'zero-net.test', code: U },
  { host: 'good-then-zero.test', code: U },
  { host: 'compat-loop.test', code: D },
  { host: 'nat64-loop.test', code: D },
];

const DNS: Record<string, string[]> = {
  'zero.test': ['0.0.0.0'],
  'zero6.test': ['::'],
  'mapped-zero.test': ['::ffff:0.0.0.0'],
  'zero-net.test': ['0.1.2.3'],
  'good-then-zero.test': ['192.0.2.1', '0.0.0.0'],
  'compat-loop.test': ['::127.0.0.1'],
  'nat64-loop.test': ['64:ff9b::7f00:1'],
};
const lookup: LookupFunction = async (host) => {
  const a = DNS[host];
  if (!a) throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return { addresses: a.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })) };
};

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The parent's own services: 127.0.0.1:P and [::1]:P on one port, counting every connection. */
let port = 0;
let seen = 0;
async function loopbackService(): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const servers: net.Server[] = [];
    try {
      for (const host of ['127.0.0.1', '::1']) {
        const srv = net.createServer((s) => {
          seen++;
          s.destroy();
        });
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen({ host, port, ipv6Only: true }, resolve);
        });
        servers.push(srv);
        port = (srv.address() as net.AddressInfo).port;
      }
      cleanups.push(() =>
        Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r())))).then(),
      );
      return;
    } catch {
      for (const s of servers) s.close();
      port = 0;
    }
  }
  throw new Error('no port free on both 127.0.0.1 and ::1');
}

const bracket = (h: string) => (h.includes(':') && !h.startsWith('[') ? `[${h}]` : h);

/** Sends `text`, returns everything until the gateway closes. */
async function exchange(gw: number, text: string): Promise<string> {
  const c = await connect(gw);
  const chunks: Buffer[] = [];
  c.on('data', (d: Buffer) => chunks.push(d));
  c.on('error', () => {});
  c.write(text);
  await closed(c);
  return Buffer.concat(chunks).toString('latin1');
}

/** A SOCKS5 CONNECT; returns the reply code. */
async function socks(gw: number, atyp: number, addr: Buffer): Promise<number> {
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  const c = await connect(gw);
  c.on('error', () => {});
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => got.push(d));
  c.write(Buffer.from([0x05, 0x01, 0x00]));
  await waitFor(() => Buffer.concat(got).length >= 2, 5000, 'SOCKS5 method reply');
  c.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x00, atyp]), addr, p]));
  await closed(c);
  const all = Buffer.concat(got);
  return all[3] ?? -1;
}

type Kind = 'CONNECT' | 'absolute-form' | 'SOCKS5 atyp 1' | 'SOCKS5 atyp 3' | 'SOCKS5 atyp 4';
const CASES: Array<[Kind, Row]> = ROWS.flatMap((row) => {
  const out: Array<[Kind, Row]> = [
    ['CONNECT', row],
    ['absolute-form', row],
    ['SOCKS5 atyp 3', row],
  ];
  if (row.v4) out.push(['SOCKS5 atyp 1', row]);
  if (row.v6) out.push(['SOCKS5 atyp 4', row]);
  return out;
});

describe('egress gateway: unspecified and embedded-loopback spellings (policy allows *:PORT)', () => {
  let gwPort = 0;
  const parentLog = memoryLogger();

  beforeAll(async () => {
    await loopbackService();
    const t = tempDir();
    cleanups.push(() => t.cleanup());
    const parent = createEgressGatewayServer({
      listen: `unix:${join(t.dir, 'gw.sock')}`,
      policy: { allow: [`*:${port}`], deny: ['127.0.0.0/8', '[::1]'] },
      resolver: createResolver({ lookup }),
      connectTimeoutMs: 2000,
      logger: parentLog,
    });
    await parent.start();
    cleanups.push(() => parent.close({ drain: false }));
    const gw = createEgressGateway({ listen: 'tcp:127.0.0.1:0', parent: parent.endpoint });
    await gw.start();
    cleanups.push(() => gw.close({ drain: false }));
    gwPort = (gw.endpoint as { port: number }).port;
  });

  it.each(CASES)('%s %j is refused and dials nothing', async (kind, row) => {
    const before = parentLog.lines.filter((l) => l.level === 'warn').length;
    const seenBefore = seen;
    const authority = `${bracket(row.host)}:${port}`;
    if (kind === 'CONNECT' || kind === 'absolute-form') {
      const head =
        kind === 'CONNECT'
          ? `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`
          : `GET http://${authority}/ HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;
      const answer = await exchange(gwPort, head);
      expect(answer).toMatch(/^HTTP\/1\.1 403 /);
      expect(answer).toContain(`X-Enclave-Extras-Error: ${row.code}\r\n`);
    } else {
      const addr =
        kind === 'SOCKS5 atyp 1'
          ? Buffer.from(row.v4 ?? '', 'hex')
          : kind === 'SOCKS5 atyp 4'
            ? Buffer.from(row.v6 ?? '', 'hex')
            : Buffer.concat([Buffer.from([row.host.length]), Buffer.from(row.host, 'latin1')]);
      const atyp = kind === 'SOCKS5 atyp 1' ? 1 : kind === 'SOCKS5 atyp 4' ? 4 : 3;
      expect(await socks(gwPort, atyp, addr)).toBe(0x02); // "not allowed by ruleset"
    }
    await waitFor(
      () => parentLog.lines.filter((l) => l.level === 'warn').length > before,
      5000,
      'the parent refusal log line',
    );
    const line = parentLog.lines.filter((l) => l.level === 'warn').at(-1);
    expect(line?.obj.code).toBe(row.code);
    expect(seen - seenBefore).toBe(0);
  });

  it('the loopback service saw no connection at all', async () => {
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toBe(0);
  });
});

describe('routes: a dial target spelled as the unspecified address is never dialled', () => {
  async function route(host: string, withPolicy: boolean): Promise<Route> {
    const r = createRoute({
      name: `r-${host}`,
      listen: 'tcp:127.0.0.1:0',
      dial: { kind: 'tcp', host, port },
      ...(withPolicy ? { policy: { allow: [`*:${port}`], deny: ['127.0.0.0/8', '[::1]'] } } : {}),
      resolver: createResolver({ lookup }),
      connectTimeoutMs: 2000,
    });
    await r.start();
    cleanups.push(() => r.close({ drain: false }));
    return r;
  }

  beforeAll(async () => {
    if (port === 0) await loopbackService();
  });

  it.each(ROWS)('$host: refused with $code (policy allowing *:PORT)', async (row) => {
    const seenBefore = seen;
    const r = await route(row.host, true);
    const c = await connect((r.endpoint as { port: number }).port);
    c.on('error', () => {});
    await closed(c);
    await waitFor(() => Object.keys(r.metrics.snapshot().errors).length > 0, 5000, 'the refusal');
    expect(r.metrics.snapshot().errors).toEqual({ [row.code]: 1 });
    expect(seen - seenBefore).toBe(0);
  });

  it.each(ROWS.filter((r) => r.code === U))('$host: refused with no policy at all', async (row) => {
    const seenBefore = seen;
    const r = await route(row.host, false);
    const c = await connect((r.endpoint as { port: number }).port);
    c.on('error', () => {});
    await closed(c);
    await waitFor(() => Object.keys(r.metrics.snapshot().errors).length > 0, 5000, 'refusal');
    expect(r.metrics.snapshot().errors).toEqual({ [U]: 1 });
    expect(seen - seenBefore).toBe(0);
  });
});
