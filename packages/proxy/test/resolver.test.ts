import { describe, expect, it } from 'vitest';
import {
  createResolver,
  getaddrinfoLookup,
  type LookupFunction,
  ProxyError,
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
    expect(err).toMatchObject({ code: 'ERR_PROXY_DNS', address: 'x.test', syscall: 'getaddrinfo' });
    expect((err as ProxyError).message).toContain('ENOTFOUND');
    fail = false;
    expect((await r.resolve('x.test'))[0]?.address).toBe('192.0.2.9');
  });

  // getaddrinfo answers localhost from /etc/hosts: no packet leaves the machine
  it('the getaddrinfo lookup resolves localhost', async () => {
    const res = await getaddrinfoLookup('localhost');
    expect(res.addresses.length).toBeGreaterThan(0);
    for (const a of res.addresses) expect(['127.0.0.1', '::1']).toContain(a.address);
  });
});
