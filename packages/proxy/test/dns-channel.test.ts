// Issue 10 item 2: no DNS channel out of (or into) a confined enclave. A name reaches the parent's
// resolver only when an allow rule could match that NAME (IP/CIDR rules allow IPs asked for as
// IPs, never names), and a refusal sent back to the enclave never carries an address the name
// resolved to (the parent's log does).
import type net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createEgressGateway,
  createEgressGatewayServer,
  createResolver,
  createRoute,
  httpConnectDialer,
  type LookupFunction,
  Policy,
} from '../src/index.js';
import { closed, connect, memoryLogger, tcpServer, tempDir, waitFor } from './helpers.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** What the parent's resolver was asked, in order. */
const asked: string[] = [];
const DNS: Record<string, string[]> = {
  'ok.allowed.test': ['127.0.0.1'],
  'denied.allowed.test': ['198.51.100.77'],
  'zero.allowed.test': ['0.1.2.3'],
  'closed.allowed.test': ['127.0.0.3'],
  'multi.allowed.test': ['127.0.0.4', '127.0.0.5'],
  'exact.test': ['198.51.100.78'],
  'x.any-port.test': ['127.0.0.6'],
};
/** Every address the DNS above can answer: none may reach the enclave in a refusal. */
const ANSWERS = [...new Set(Object.values(DNS).flat())].filter((a) => a !== '127.0.0.1');
const lookup: LookupFunction = async (host) => {
  asked.push(host);
  const a = DNS[host];
  if (!a) throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return { addresses: a.map((address) => ({ address, family: 4 as const })) };
};

let port = 0; // the echo origin on 127.0.0.1
let closedPort = 0; // nothing listens here
let anyPort = 0; // `*:anyPort` is allowed
let gwPort = 0;
let proxyUrl = '';
const parentLog = memoryLogger();

beforeAll(async () => {
  const echo = await tcpServer((s) => s.pipe(s));
  cleanups.push(() => echo.close());
  port = echo.port;
  // a port where nothing listens: bind one, note it, close it
  const gone = await tcpServer(() => {});
  closedPort = gone.port;
  await gone.close();
  const other = await tcpServer(() => {});
  anyPort = other.port;
  cleanups.push(() => other.close());
  const t = tempDir();
  cleanups.push(() => t.cleanup());
  const parent = createEgressGatewayServer({
    listen: `unix:${join(t.dir, 'gw.sock')}`,
    policy: {
      allow: [
        // address rules for the ports: they must not make any name resolvable
        `127.0.0.0/8:${port},${closedPort}`,
        `10.0.0.0/8:${port}`,
        `[2001:db8::/32]:${port}`,
        // name rules: only these names (and *.allowed.test) are ever looked up
        `*.allowed.test:${port},${closedPort}`,
        `exact.test:${port}`,
        // `*` allows every destination on its port: every name asked for there is resolved
        `*:${anyPort}`,
      ],
      deny: ['198.51.100.0/24'],
    },
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
  proxyUrl = `http://127.0.0.1:${gwPort}`;
});

async function exchange(text: string): Promise<string> {
  const c = await connect(gwPort);
  const chunks: Buffer[] = [];
  c.on('data', (d: Buffer) => chunks.push(d));
  c.on('error', () => {});
  c.end(text); // half-close: a tunnel that opens (to the echo) closes after the echo
  await closed(c);
  return Buffer.concat(chunks).toString('latin1');
}

async function socksDomain(host: string, p: number): Promise<number> {
  const c: net.Socket = await connect(gwPort);
  c.on('error', () => {});
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => got.push(d));
  c.write(Buffer.from([0x05, 0x01, 0x00]));
  await waitFor(() => Buffer.concat(got).length >= 2, 5000, 'SOCKS5 method reply');
  const pb = Buffer.alloc(2);
  pb.writeUInt16BE(p);
  c.write(
    Buffer.concat([Buffer.from([0x05, 0x01, 0x00, 0x03, host.length]), Buffer.from(host), pb]),
  );
  await waitFor(() => Buffer.concat(got).length >= 12, 5000, 'SOCKS5 reply');
  const rep = Buffer.concat(got)[3] ?? -1;
  c.destroy();
  return rep;
}

describe('a name is resolved only when a rule could allow that name', () => {
  it.each([
    ['a name under no name rule, on a port with IP and CIDR rules', 'data-6b6579.exfil.example'],
    ['a name one label off an exact rule', 'exact.test.evil'],
    ['the wildcard suffix itself (subdomains only)', 'allowed.test'],
    ['a name ending like the wildcard without the dot', 'notallowed.test'],
    ['a numeric-looking name that is not a number', '1e1'],
  ])('%s (%s): refused by CONNECT, absolute form and SOCKS5, never looked up', async (_, name) => {
    const start = asked.length;
    const c = await exchange(`CONNECT ${name}:${port} HTTP/1.1\r\nHost: ${name}:${port}\r\n\r\n`);
    expect(c).toMatch(/^HTTP\/1\.1 403 /);
    expect(c).toContain('(IP and CIDR rules allow addresses asked for as IPs, not names)');
    const a = await exchange(`GET http://${name}:${port}/ HTTP/1.1\r\nHost: ${name}\r\n\r\n`);
    expect(a).toMatch(/^HTTP\/1\.1 403 /);
    expect(await socksDomain(name, port)).toBe(0x02);
    expect(asked.slice(start)).toEqual([]);
  });

  it('names a rule could allow are looked up (exact, *.suffix, and any name on a `*` port)', async () => {
    const start = asked.length;
    const names = ['ok.allowed.test', 'exact.test', 'x.any-port.test', 'whatever.example'];
    const ports = [port, port, anyPort, anyPort];
    for (const [i, name] of names.entries()) {
      await exchange(`CONNECT ${name}:${ports[i]} HTTP/1.1\r\nHost: x\r\n\r\n`);
    }
    expect(asked.slice(start)).toEqual(names);
  });

  it('IP literals are allowed by the address rules and need no lookup', async () => {
    const start = asked.length;
    const dial = httpConnectDialer(proxyUrl);
    const s = await dial({ host: '127.0.0.1', port });
    s.destroy();
    const s2 = await dial({ host: '::ffff:127.0.0.1', port });
    s2.destroy();
    expect(asked.slice(start)).toEqual([]);
  });

  it('the AWS allowlist keeps its meaning: an IP entry allows the operator-given name resolving to it', () => {
    const aws = Policy.fromAwsAllowlist({ allowlist: [{ address: '10.0.0.5', port: 443 }] });
    expect(aws.precheck('kms.internal', 443)).toBeUndefined();
    expect(aws.check('kms.internal', 443, ['10.0.0.5']).allowed).toBe(true);
    expect(aws.check('kms.internal', 443, ['10.0.0.6']).allowed).toBe(false);
    const strict = new Policy({ allow: ['10.0.0.5:443'] });
    expect(strict.precheck('kms.internal', 443)).toMatchObject({ allowed: false });
    expect(strict.check('kms.internal', 443, ['10.0.0.5']).allowed).toBe(false);
  });
});

describe("a route's policy: the dial target is the operator's name", () => {
  it('an IP/CIDR rule allows the configured name that resolves into it, and only then', async () => {
    const routeTo = async (name: string) => {
      const r = createRoute({
        name: `db-${name}`,
        listen: 'tcp:127.0.0.1:0',
        dial: `tcp:${name}:${port}`,
        policy: { allow: [`127.0.0.0/8:${port}`] },
        resolver: createResolver({
          lookup: async (h) => ({
            addresses: [{ address: h === 'db.test' ? '127.0.0.1' : '10.9.9.9', family: 4 }],
          }),
        }),
      });
      await r.start();
      cleanups.push(() => r.close({ drain: false }));
      const c = await connect((r.endpoint as { port: number }).port);
      c.on('error', () => {});
      const chunks: Buffer[] = [];
      c.on('data', (d: Buffer) => chunks.push(d));
      c.end('ping');
      await closed(c);
      return { r, echoed: Buffer.concat(chunks).toString() };
    };
    expect((await routeTo('db.test')).echoed).toBe('ping');
    const elsewhere = await routeTo('moved.test');
    expect(elsewhere.echoed).toBe('');
    await waitFor(() => elsewhere.r.metrics.snapshot().errors.ERR_PROXY_POLICY_DENIED === 1);
  });
});

describe('refusals sent to the enclave carry no resolved address', () => {
  const cases: Array<[string, string, number, string]> = [
    ['resolves into a denied range', 'denied.allowed.test', 0, 'ERR_PROXY_POLICY_DENIED'],
    ['resolves to an unspecified address', 'zero.allowed.test', 0, 'ERR_PROXY_UNSPECIFIED_ADDRESS'],
    ['resolves to an address where nothing listens', 'closed.allowed.test', 1, 'ECONNREFUSED'],
    ['resolves to two addresses that both refuse', 'multi.allowed.test', 1, 'ECONNREFUSED'],
  ];

  it.each(cases)('a name that %s (%s)', async (_, name, which, code) => {
    const p = which === 0 ? port : closedPort;
    const before = parentLog.lines.filter((l) => l.level === 'warn').length;
    const c = await exchange(`CONNECT ${name}:${p} HTTP/1.1\r\nHost: ${name}:${p}\r\n\r\n`);
    const a = await exchange(`GET http://${name}:${p}/ HTTP/1.1\r\nHost: ${name}\r\n\r\n`);
    const err = await httpConnectDialer(proxyUrl)({ host: name, port: p }).catch(
      (e: unknown) => e as Error,
    );
    const fromDialer = `${(err as { code?: string }).code} ${(err as Error).message}`;
    for (const text of [c, a, fromDialer]) {
      expect(text).toContain(code);
      expect(text).toContain(name);
      for (const address of ANSWERS) expect(text).not.toContain(address);
    }
    // the parent's own log keeps what it resolved and dialled
    await waitFor(
      () => parentLog.lines.filter((l) => l.level === 'warn').length >= before + 3,
      5000,
      'the parent log lines',
    );
    const logged = JSON.stringify(parentLog.lines.slice(-1)[0]?.obj);
    expect(DNS[name]?.some((address) => logged.includes(address))).toBe(true);
  });
});
