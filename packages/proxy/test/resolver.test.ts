import { describe, expect, it } from 'vitest';
import {
  createResolver,
  getaddrinfoLookup,
  type LookupFunction,
  ProxyError,
  parseHostsFile,
  systemLookup,
} from '../src/index.js';

describe('createResolver', () => {
  it('caches a name for its TTL, re-resolves after it, and shares concurrent lookups', async () => {
    let now = 1_000_000;
    const calls: string[] = [];
    let answer = '10.0.0.1';
    const lookup: LookupFunction = async (host) => {
      calls.push(host);
      return { addresses: [{ address: answer, family: 4 }], ttlMs: 5_000 };
    };
    const r = createResolver({ lookup, now: () => now });
    const [a, b] = await Promise.all([r.resolve('Svc.Test'), r.resolve('svc.test')]);
    expect(a).toEqual([{ address: '10.0.0.1', family: 4 }]);
    expect(b).toEqual(a);
    expect(calls).toEqual(['svc.test']);
    answer = '10.0.0.2';
    now += 4_999;
    expect((await r.resolve('svc.test'))[0]?.address).toBe('10.0.0.1');
    now += 2;
    expect((await r.resolve('svc.test'))[0]?.address).toBe('10.0.0.2');
    expect(calls).toHaveLength(2);
  });

  it('uses the default TTL when the lookup has none, caps long TTLs, skips DNS for IP literals', async () => {
    let now = 0;
    let n = 0;
    const r = createResolver({
      lookup: async () => {
        n++;
        return {
          addresses: [{ address: '192.0.2.1', family: 4 }],
          ...(n === 1 ? {} : { ttlMs: 86_400_000 }),
        };
      },
      defaultTtlMs: 1000,
      maxTtlMs: 10_000,
      now: () => now,
    });
    await r.resolve('a.test');
    now += 1001;
    await r.resolve('a.test'); // expired (default TTL) -> second lookup, TTL capped at 10 s
    now += 10_001;
    await r.resolve('a.test');
    expect(n).toBe(3);
    expect(await r.resolve('::FFFF:10.0.0.1')).toEqual([{ address: '10.0.0.1', family: 4 }]);
    expect(await r.resolve('[2001:DB8::1]')).toEqual([{ address: '2001:db8::1', family: 6 }]);
    expect(n).toBe(3);
  });

  it('turns a failed lookup into ERR_PROXY_DNS naming the host, and does not cache it', async () => {
    let fail = true;
    const r = createResolver({
      lookup: async () => {
        if (fail)
          throw Object.assign(new Error('getaddrinfo ENOTFOUND x.test'), { code: 'ENOTFOUND' });
        return { addresses: [{ address: '192.0.2.9', family: 4 }] };
      },
    });
    const err = await r.resolve('x.test').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProxyError);
    expect(err).toMatchObject({ code: 'ERR_PROXY_DNS', address: 'x.test', syscall: 'lookup' });
    expect((err as ProxyError).message).toContain('ENOTFOUND');
    fail = false;
    expect((await r.resolve('x.test'))[0]?.address).toBe('192.0.2.9');
  });

  it('fails a lookup past the deadline with ERR_PROXY_DNS_TIMEOUT (aborting it) and does not cache it', async () => {
    const signals: AbortSignal[] = [];
    let hang = true;
    const r = createResolver({
      timeoutMs: 50,
      lookup: (_host, opts) => {
        if (opts?.signal) signals.push(opts.signal);
        if (hang) return new Promise(() => {});
        return Promise.resolve({ addresses: [{ address: '192.0.2.7', family: 4 }] });
      },
    });
    await expect(r.resolve('slow.test')).rejects.toMatchObject({
      name: 'ProxyError',
      code: 'ERR_PROXY_DNS_TIMEOUT',
      address: 'slow.test',
      message: expect.stringContaining('50 ms'),
    });
    expect(signals[0]?.aborted).toBe(true);
    hang = false;
    expect((await r.resolve('slow.test'))[0]?.address).toBe('192.0.2.7');
  });

  it('caps the resolutions one peer has waiting (ERR_PROXY_DNS_LIMIT), not other peers, and frees the slot', async () => {
    const gates = new Map<string, () => void>();
    const r = createResolver({
      maxLookupsPerPeer: 2,
      lookup: (host) =>
        new Promise((resolve) => {
          gates.set(host, () => resolve({ addresses: [{ address: '192.0.2.1', family: 4 }] }));
        }),
    });
    const a = r.resolve('a.test', { peer: 'vm(16)' });
    const b = r.resolve('b.test', { peer: 'vm(16)' });
    await expect(r.resolve('c.test', { peer: 'vm(16)' })).rejects.toMatchObject({
      code: 'ERR_PROXY_DNS_LIMIT',
      details: { peer: 'vm(16)', maxLookupsPerPeer: 2 },
    });
    const other = r.resolve('d.test', { peer: 'vm(17)' });
    gates.get('d.test')?.();
    expect(await other).toHaveLength(1);
    gates.get('a.test')?.();
    await a;
    const c = r.resolve('c.test', { peer: 'vm(16)' }); // a slot is free again
    gates.get('b.test')?.();
    gates.get('c.test')?.();
    await Promise.all([b, c]);
    // cached names need no slot
    await Promise.all([1, 2, 3].map(() => r.resolve('a.test', { peer: 'vm(16)' })));
  });

  it('parses hosts(5) files: comments, aliases, IPv6, case, first address kept once', () => {
    const t = parseHostsFile(
      '# c\n127.0.0.1\tlocalhost Local.Test\n::1 localhost ip6-localhost # x\n10.0.0.1 local.test.\nbad line\n127.0.0.1 localhost\n',
    );
    expect(t.get('localhost')).toEqual([
      { address: '127.0.0.1', family: 4 },
      { address: '::1', family: 6 },
    ]);
    expect(t.get('local.test')).toEqual([
      { address: '127.0.0.1', family: 4 },
      { address: '10.0.0.1', family: 4 },
    ]);
    expect(t.has('line')).toBe(false);
  });

  it('systemLookup answers localhost from /etc/hosts without DNS', async () => {
    const res = await systemLookup('localhost');
    expect(res.addresses.length).toBeGreaterThan(0);
    for (const a of res.addresses) expect(['127.0.0.1', '::1']).toContain(a.address);
  });

  // getaddrinfo answers localhost from /etc/hosts: no packet leaves the machine
  it('the getaddrinfo lookup resolves localhost', async () => {
    const res = await getaddrinfoLookup('localhost');
    expect(res.addresses.length).toBeGreaterThan(0);
    for (const a of res.addresses) expect(['127.0.0.1', '::1']).toContain(a.address);
  });
});
