import { promises as dns } from 'node:dns';
import { errorCode, errorMessage, ProxyError } from './errors.js';
import { formatIp, parseIp } from './ip.js';

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** What a lookup returns; `ttlMs` undefined = unknown (the resolver's default TTL applies). */
export interface LookupResult {
  addresses: ResolvedAddress[];
  ttlMs?: number;
}
export type LookupFunction = (host: string) => Promise<LookupResult>;

/** Resolves a host name to the addresses to try, in order. */
export interface Resolver {
  resolve(host: string): Promise<ResolvedAddress[]>;
}

export interface ResolverOptions {
  /** Injected lookup (tests, custom DNS). Default: the system resolver (getaddrinfo, honours /etc/hosts) plus the DNS TTL. */
  lookup?: LookupFunction;
  /** TTL used when the lookup does not report one. Default 30 000 ms. */
  defaultTtlMs?: number;
  /** Upper bound on any TTL. Default 300 000 ms. */
  maxTtlMs?: number;
  /** Cached names at most (oldest evicted). Default 1000. */
  maxEntries?: number;
  /** Clock, for tests. */
  now?: () => number;
}

/** getaddrinfo only (dns.lookup all:true, system order, /etc/hosts); reports no TTL. */
export const getaddrinfoLookup: LookupFunction = async (host) => {
  const records = await dns.lookup(host, { all: true, verbatim: true });
  return {
    addresses: records.map((r) => ({ address: r.address, family: r.family === 6 ? 6 : 4 })),
  };
};

/**
 * The system lookup: getaddrinfo through dns.lookup({ all: true }) gives the addresses in the
 * order the system prefers; the TTL comes from a parallel A/AAAA query when DNS answers it
 * (names from /etc/hosts have none, so the default TTL applies).
 */
export const systemLookup: LookupFunction = async (host) => {
  const ttlQuery = Promise.allSettled([
    dns.resolve4(host, { ttl: true }),
    dns.resolve6(host, { ttl: true }),
  ]);
  const records = await dns.lookup(host, { all: true, verbatim: true });
  const settled = await ttlQuery;
  let ttl: number | undefined;
  for (const s of settled) {
    if (s.status !== 'fulfilled') continue;
    for (const r of s.value) ttl = ttl === undefined ? r.ttl : Math.min(ttl, r.ttl);
  }
  return {
    addresses: records.map((r) => ({ address: r.address, family: r.family === 6 ? 6 : 4 })),
    ...(ttl === undefined ? {} : { ttlMs: ttl * 1000 }),
  };
};

interface Entry {
  addresses: ResolvedAddress[];
  expires: number;
}

/** A resolver caching each name for its TTL; concurrent lookups of one name share one query. */
export function createResolver(options: ResolverOptions = {}): Resolver {
  const lookup = options.lookup ?? systemLookup;
  const defaultTtl = options.defaultTtlMs ?? 30_000;
  const maxTtl = options.maxTtlMs ?? 300_000;
  const maxEntries = options.maxEntries ?? 1000;
  const now = options.now ?? Date.now;
  const cache = new Map<string, Entry>();
  const inflight = new Map<string, Promise<ResolvedAddress[]>>();

  return {
    async resolve(host: string): Promise<ResolvedAddress[]> {
      const ip = parseIp(host);
      if (ip) return [{ address: formatIp(ip), family: ip.family }];
      const key = host.toLowerCase();
      const hit = cache.get(key);
      if (hit && hit.expires > now()) return hit.addresses;
      if (hit) cache.delete(key);
      const pending = inflight.get(key);
      if (pending) return pending;
      const p = (async () => {
        let result: LookupResult;
        try {
          result = await lookup(key);
        } catch (err) {
          throw new ProxyError(
            'ERR_PROXY_DNS',
            `Resolving ${host} failed (${errorCode(err)}: ${errorMessage(err)}); check the name and the system resolver.`,
            { cause: err, address: host, syscall: 'getaddrinfo' },
          );
        }
        if (result.addresses.length === 0) {
          throw new ProxyError('ERR_PROXY_DNS', `Resolving ${host} returned no address.`, {
            address: host,
            syscall: 'getaddrinfo',
          });
        }
        const ttl = Math.min(maxTtl, Math.max(0, result.ttlMs ?? defaultTtl));
        if (ttl > 0) {
          if (cache.size >= maxEntries) {
            const oldest = cache.keys().next();
            if (!oldest.done) cache.delete(oldest.value);
          }
          cache.set(key, { addresses: result.addresses, expires: now() + ttl });
        }
        return result.addresses;
      })();
      inflight.set(key, p);
      try {
        return await p;
      } finally {
        inflight.delete(key);
      }
    },
  };
}
