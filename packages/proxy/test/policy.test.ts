import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createResolver,
  createRoute,
  dialTcp,
  type LookupFunction,
  Policy,
  ProxyError,
  type Route,
} from '../src/index.js';
import { closed, connect, echo, memoryLogger, type Server, tcpServer, waitFor } from './helpers.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
async function server(fn: (s: net.Socket) => void, host?: string): Promise<Server> {
  const s = await tcpServer(fn, host);
  cleanups.push(() => s.close());
  return s;
}

describe('Policy rules', () => {
  const p = new Policy({
    allow: [
      'kms.eu-west-1.amazonaws.com:443',
      '*.example.com:443,8443',
      '10.1.0.0/16:1000-2000',
      '[2001:db8::/32]:443',
      { address: 'api.internal', port: 8080 },
      '192.0.2.7',
    ],
    deny: ['10.1.2.0/24', 'bad.example.com', '[::1]'],
  });
  const ok = (h: string, port: number, addrs: string[]) => p.check(h, port, addrs).allowed;

  it('matches names exactly, wildcards as suffixes, case-insensitively, trailing dot ignored', () => {
    expect(ok('kms.eu-west-1.amazonaws.com', 443, ['52.0.0.1'])).toBe(true);
    expect(ok('KMS.EU-WEST-1.AMAZONAWS.COM.', 443, ['52.0.0.1'])).toBe(true);
    expect(ok('kms.eu-west-1.amazonaws.com', 80, ['52.0.0.1'])).toBe(false);
    expect(ok('evilkms.eu-west-1.amazonaws.com', 443, ['52.0.0.1'])).toBe(false);
    expect(ok('a.b.example.com', 8443, ['52.0.0.1'])).toBe(true);
    expect(ok('example.com', 443, ['52.0.0.1'])).toBe(false);
    expect(ok('example.com.evil.net', 443, ['52.0.0.1'])).toBe(false);
    expect(ok('api.internal', 8080, ['172.16.0.1'])).toBe(true);
  });

  it('deny wins over allow, by name and by resolved address', () => {
    expect(ok('bad.example.com', 443, ['52.0.0.1'])).toBe(false);
    expect(p.check('bad.example.com', 443, ['52.0.0.1'])).toMatchObject({
      reason: expect.stringContaining('deny rule'),
    });
    // an allowed name that resolves into a denied range is refused
    expect(ok('a.example.com', 443, ['10.1.2.3'])).toBe(false);
    // ... and so is a name with one good and one denied address
    expect(ok('a.example.com', 443, ['52.0.0.1', '10.1.2.3'])).toBe(false);
  });

  it('compares IP literals in every form', () => {
    expect(ok('10.1.5.5', 1500, ['10.1.5.5'])).toBe(true);
    expect(ok('10.1.2.9', 1500, ['10.1.2.9'])).toBe(false);
    expect(ok('::ffff:10.1.2.9', 1500, ['::ffff:10.1.2.9'])).toBe(false);
    expect(ok('::ffff:a01:209', 1500, ['::ffff:a01:209'])).toBe(false);
    expect(ok('[0:0:0:0:0:ffff:10.1.2.9]', 1500, ['0:0:0:0:0:ffff:10.1.2.9'])).toBe(false);
    expect(ok('::ffff:10.1.5.5', 1500, ['::ffff:10.1.5.5'])).toBe(true);
    expect(ok('2001:DB8::1', 443, ['2001:db8:0:0:0:0:0:1'])).toBe(true);
    expect(ok('2001:0db8:0000::0001', 443, ['2001:db8::1'])).toBe(true);
    expect(ok('::1', 443, ['::1'])).toBe(false);
    expect(ok('0:0:0:0:0:0:0:1', 443, ['0:0:0:0:0:0:0:1'])).toBe(false);
    expect(ok('192.0.2.7', 9, ['192.0.2.7'])).toBe(true);
  });

  it('decides IPv4-mapped, IPv4-compatible and NAT64 spellings as the IPv4 address they embed', () => {
    const lo = new Policy({ allow: ['*:80'], deny: ['127.0.0.0/8', '[::1]'] });
    for (const a of ['::ffff:127.0.0.1', '::127.0.0.1', '::7f00:1', '64:ff9b::7f00:1', '127.1']) {
      expect(lo.check(a, 80, [a])).toMatchObject({
        allowed: false,
        code: 'ERR_PROXY_POLICY_DENIED',
        rule: '127.0.0.0/8',
      });
      // ... also when a name resolves to that spelling
      expect(lo.check('name.test', 80, [a])).toMatchObject({ allowed: false, rule: '127.0.0.0/8' });
    }
    // an allow rule for the IPv4 address allows its spellings; a deny of the NAT64 prefix denies it
    const v4 = new Policy({
      allow: ['192.0.2.0/24:443', '[64:ff9b::/96]:443'],
      deny: ['[64:ff9b::/96]:80'],
    });
    expect(v4.check('::192.0.2.5', 443, ['::192.0.2.5']).allowed).toBe(true);
    expect(v4.check('64:ff9b::c000:205', 443, ['64:ff9b::c000:205']).allowed).toBe(true);
    expect(v4.check('64:ff9b::c000:205', 80, ['64:ff9b::c000:205']).allowed).toBe(false);
    expect(v4.check('::ffff:192.0.3.1', 443, ['::ffff:192.0.3.1']).allowed).toBe(false);
  });

  it('refuses every spelling of the unspecified address with its own code, whatever the rules', () => {
    const all = new Policy({ allow: ['*', '0.0.0.0/0', '[::/0]'] });
    for (const a of ['0.0.0.0', '0', '0x0', '00000000', '0.0', '0.1.2.3', '::', '[::]', '0::0']) {
      expect(all.check(a, 80, [a])).toMatchObject({
        allowed: false,
        code: 'ERR_PROXY_UNSPECIFIED_ADDRESS',
      });
    }
    for (const a of ['0.0.0.0', '::', '::ffff:0.0.0.0', '::ffff:0:0', '::0.0.0.2', '64:ff9b::']) {
      expect(all.check('name.test', 80, [a])).toMatchObject({
        allowed: false,
        code: 'ERR_PROXY_UNSPECIFIED_ADDRESS',
      });
    }
    expect(all.check('::1', 80, ['::1']).allowed).toBe(true);
  });

  it.each([['127.1'], ['10/8'], ['0x7f000001:443'], ['010.0.0.1'], ['010.0.0.0/8']])(
    'rejects the ambiguous numeric rule %s (the system reads it as another address)',
    (rule) => {
      expect(() => new Policy({ deny: [rule] })).toThrow(/shorthand or leading-zero IPv4 form/);
    },
  );

  it('prechecks names no rule can allow, before any DNS', () => {
    const strict = new Policy({ allow: ['kms.eu-west-1.amazonaws.com:443'] });
    expect(strict.precheck('other.example.org', 443)).toMatchObject({ allowed: false });
    expect(strict.precheck('kms.eu-west-1.amazonaws.com', 443)).toBeUndefined();
  });

  it('reads the AWS vsock-proxy allowlist format', () => {
    const aws = Policy.fromAwsAllowlist({
      allowlist: [
        { address: 'kms.us-east-1.amazonaws.com', port: 443 },
        { address: 'kms-fips.us-east-1.amazonaws.com', port: 443 },
      ],
    });
    expect(aws.check('kms.us-east-1.amazonaws.com', 443, ['1.2.3.4']).allowed).toBe(true);
    expect(aws.check('kms.us-east-1.amazonaws.com', 444, ['1.2.3.4']).allowed).toBe(false);
  });

  it.each([['bad host!'], ['10.0.0.0/33'], ['a.com:0'], ['a.com:70000'], ['a.com:5-1'], ['[::1']])(
    'rejects the malformed rule %s',
    (rule) => {
      expect(() => new Policy({ allow: [rule] })).toThrow(
        expect.objectContaining({ code: 'ERR_PROXY_BAD_POLICY' }) as unknown as Error,
      );
    },
  );
});

describe('policy on real dials', () => {
  /** A test-local resolver: names the test controls, each with a TTL. */
  function fakeDns(table: Record<string, string[]>, calls: string[] = []): LookupFunction {
    return async (host) => {
      calls.push(host);
      const a = table[host];
      if (!a) throw Object.assign(new Error(`queryA ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      return {
        addresses: a.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })),
        ttlMs: 60_000,
      };
    };
  }

  async function routeWith(
    policy: Policy,
    target: string,
    lookup: LookupFunction,
  ): Promise<{ r: Route; log: ReturnType<typeof memoryLogger> }> {
    const log = memoryLogger();
    const r = createRoute({
      name: 'egress',
      listen: 'tcp:127.0.0.1:0',
      dial: target,
      policy,
      resolver: createResolver({ lookup }),
      logger: log,
    });
    await r.start();
    cleanups.push(() => r.close({ drain: false }));
    return { r, log };
  }
  async function refused(r: Route): Promise<void> {
    const port = (r.endpoint as { port: number }).port;
    const c = await connect(port);
    c.on('error', () => {});
    await closed(c);
  }

  it('refuses a name that resolves to a denied address, logging the reason', async () => {
    const up = await server(echo);
    const policy = new Policy({ allow: [`*.test:${up.port}`], deny: ['127.0.0.0/8'] });
    const { r, log } = await routeWith(
      policy,
      `tcp:sneaky.test:${up.port}`,
      fakeDns({ 'sneaky.test': ['127.0.0.1'] }),
    );
    await refused(r);
    await waitFor(() => r.active === 0);
    expect(r.metrics.snapshot().errors).toEqual({ ERR_PROXY_POLICY_DENIED: 1 });
    expect(r.metrics.snapshot().refused).toEqual({ policy: 1 });
    const line = log.lines.find((l) => l.msg === 'connection refused by policy');
    expect(String(line?.obj.err)).toContain(
      `sneaky.test port ${up.port} resolves to an address a deny rule covers`,
    );
    // the log (not the message a gateway would send back) names the address and the rule
    expect(line?.obj.details).toMatchObject({ rule: '127.0.0.0/8', resolved: '127.0.0.1' });
    expect(up.sockets.size).toBe(0);
  });

  it('allows and forwards a permitted name, trying records in order when the first is refused', async () => {
    const up = await server(echo, '::1');
    const calls: string[] = [];
    // first record: 127.0.0.1 where nothing listens on that port; second: ::1 where the server is
    const policy = new Policy({ allow: [`good.test:${up.port}`] });
    const { r } = await routeWith(
      policy,
      `tcp:GOOD.TEST.:${up.port}`,
      fakeDns({ 'good.test': ['127.0.0.1', '::1'] }, calls),
    );
    const c = await connect((r.endpoint as { port: number }).port);
    const echoed = await new Promise<string>((resolve) => {
      c.once('data', (d: Buffer) => resolve(d.toString()));
      c.write('hi');
    });
    expect(echoed).toBe('hi');
    c.destroy();
    // normalised name, cached by TTL across connections
    const c2 = await connect((r.endpoint as { port: number }).port);
    c2.write('again');
    await new Promise((res) => c2.once('data', res));
    c2.destroy();
    expect(calls).toEqual(['good.test']);
  });

  it('a DNS failure fails that connection only (ERR_PROXY_DNS), the route keeps serving', async () => {
    const up = await server(echo);
    const policy = new Policy({ allow: [`*:${up.port}`] });
    const { r } = await routeWith(policy, `tcp:missing.test:${up.port}`, fakeDns({}));
    await refused(r);
    await refused(r);
    await waitFor(() => r.active === 0);
    expect(r.metrics.snapshot().errors).toEqual({ ERR_PROXY_DNS: 2 });
  });

  it('dialTcp refuses IP literals of denied hosts, IPv6 forms and ports not allowed', async () => {
    const up = await server(echo);
    const policy = new Policy({
      allow: ['localhost', `127.0.0.1:${up.port}`],
      deny: ['[::1]', '127.0.0.2'],
    });
    const attempts: Array<[string, number]> = [
      ['127.0.0.2', up.port],
      ['::1', up.port],
      ['0:0:0:0:0:0:0:1', up.port],
      ['::ffff:127.0.0.2', up.port],
      ['127.0.0.1', up.port + 1 > 65535 ? 1 : up.port + 1],
    ];
    for (const [host, port] of attempts) {
      const err = await dialTcp(host, port, { policy }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ProxyError);
      expect((err as ProxyError).code).toBe('ERR_PROXY_POLICY_DENIED');
      expect((err as ProxyError).message).toContain('refused by policy');
    }
    // the system resolver: localhost resolves to loopback addresses, ::1 is denied -> refused when it is among them
    const s = await dialTcp('127.0.0.1', up.port, { policy });
    s.destroy();
  });

  it('a numeric host the system resolver reads as a number (inet_aton) is decided as that address, never looked up', async () => {
    const up = await server(echo);
    // 2130706433 == 0x7f000001 == 127.1 == 0177.0.0.1 == 127.0.0.1 for getaddrinfo
    const policy = new Policy({ allow: [`*:${up.port}`], deny: ['127.0.0.0/8'] });
    const calls: string[] = [];
    for (const host of ['2130706433', '0x7f000001', '127.1', '0177.0.0.1', '0x7f.1']) {
      const err = await dialTcp(host, up.port, {
        policy,
        resolver: createResolver({ lookup: fakeDns({}, calls) }),
      }).catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: 'ERR_PROXY_POLICY_DENIED',
        message: expect.stringContaining(
          `127.0.0.1 port ${up.port} matches deny rule "127.0.0.0/8"`,
        ),
      });
    }
    expect(calls).toEqual([]);
    expect(up.sockets.size).toBe(0);
  });
});
