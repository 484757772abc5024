import { type ResolverOptions as DnsResolverOptions, promises as dns } from 'node:dns';
import { readFileSync, statSync } from 'node:fs';
import { errorCode, errorMessage, ProxyError } from './errors.js';
import { formatIp, parseIp, parseNumericHost } from './ip.js';

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** What a lookup returns; `ttlMs` undefined = unknown (the resolver's default TTL applies). */
export interface LookupResult {
  addresses: ResolvedAddress[];
  ttlMs?: number;
}

/** What the resolver tells a lookup: its deadline, and a signal aborted when the deadline passes. */
export interface LookupOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}
export type LookupFunction = (host: string, options?: LookupOptions) => Promise<LookupResult>;

/** Who asks: per-peer lookup limits are keyed by `peer` (`vm(16)`, `10.0.0.5`, `local`). */
export interface ResolveOptions {
  peer?: string;
}

/** Resolves a host name to the addresses to try, in order. */
export interface Resolver {
  resolve(host: string, options?: ResolveOptions): Promise<ResolvedAddress[]>;
  /** How long the cached answer for `host` stays valid (ms); undefined when not cached. Optional. */
  remainingTtlMs?(host: string): number | undefined;
}

/** The DNS limits a route or gateway config can set (`dns:` in YAML). */
export interface DnsLimits {
  /** Deadline of one name resolution; past it the connection is refused with ERR_PROXY_DNS_TIMEOUT. Default 5 000 ms. */
  timeoutMs?: number;
  /** Resolutions one peer may have waiting at once; more are refused with ERR_PROXY_DNS_LIMIT (0 = no cap). Default 8. */
  maxLookupsPerPeer?: number;
}

export interface ResolverOptions extends DnsLimits {
  /** Injected lookup (tests, custom DNS). Default: systemLookup (/etc/hosts, then DNS through c-ares, off the thread pool). */
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

export const DEFAULT_DNS_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_LOOKUPS_PER_PEER = 8;

const toResolved = (r: { address: string; family: number }): ResolvedAddress => ({
  address: r.address,
  family: r.family === 6 ? 6 : 4,
});

/**
 * getaddrinfo only (dns.lookup all:true, system order, every NSS source); reports no TTL. It runs
 * on libuv's thread pool (4 threads by default) and cannot be cancelled: a lookup past the
 * resolver's deadline still holds a pool thread until the system resolver gives up. Prefer
 * systemLookup for anything an untrusted peer can name.
 */
export const getaddrinfoLookup: LookupFunction = async (host) => {
  const records = await dns.lookup(host, { all: true, verbatim: true });
  return { addresses: records.map(toResolved) };
};

// ---- /etc/hosts ---------------------------------------------------------------------------

interface HostsTable {
  mtimeMs: number;
  size: number;
  names: Map<string, ResolvedAddress[]>;
}

/** Parses hosts(5): `address name [aliases...]`, `#` comments; names compared lower case. */
export function parseHostsFile(text: string): Map<string, ResolvedAddress[]> {
  const names = new Map<string, ResolvedAddress[]>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') continue;
    const [addr, ...aliases] = line.split(/\s+/);
    const ip = addr ? parseIp(addr.replace(/%.*$/, '')) : undefined;
    if (!ip) continue;
    const entry: ResolvedAddress = { address: formatIp(ip), family: ip.family };
    for (const a of aliases) {
      const key = a.toLowerCase().replace(/\.$/, '');
      const list = names.get(key) ?? [];
      if (!list.some((x) => x.address === entry.address)) list.push(entry);
      names.set(key, list);
    }
  }
  return names;
}

const hostsTables = new Map<string, { checked: number; table?: HostsTable }>();

/** The hosts file's entries for `host`, re-read when the file changes (checked at most once a second). */
function hostsEntries(path: string, host: string): ResolvedAddress[] | undefined {
  const now = Date.now();
  let state = hostsTables.get(path);
  if (!state) {
    state = { checked: 0 };
    hostsTables.set(path, state);
  }
  if (now - state.checked >= 1000) {
    state.checked = now;
    try {
      // sync on purpose: a small local file, and the thread pool may be what is congested
      const st = statSync(path);
      if (!state.table || st.mtimeMs !== state.table.mtimeMs || st.size !== state.table.size) {
        state.table = {
          mtimeMs: st.mtimeMs,
          size: st.size,
          names: parseHostsFile(readFileSync(path, 'utf8')),
        };
      }
    } catch {
      state.table = undefined;
    }
  }
  return state.table?.names.get(host);
}

// ---- DNS through c-ares --------------------------------------------------------------------

const RESOLV_CONF = '/etc/resolv.conf';
interface AresState {
  checked: number;
  stamp: string;
  resolvers: Map<number, dns.Resolver>;
}
const ares: AresState = { checked: 0, stamp: '', resolvers: new Map() };

/**
 * A c-ares resolver whose retries fit in `timeoutMs`. c-ares reads /etc/resolv.conf when a
 * resolver is created, so they are recreated when that file changes (checked at most once a second).
 */
function aresResolver(timeoutMs: number): dns.Resolver {
  const now = Date.now();
  if (now - ares.checked >= 1000) {
    ares.checked = now;
    let stamp = '';
    try {
      const st = statSync(RESOLV_CONF);
      stamp = `${st.mtimeMs}:${st.size}:${st.ino}`;
    } catch {
      stamp = 'missing';
    }
    if (stamp !== ares.stamp) {
      ares.stamp = stamp;
      ares.resolvers.clear();
    }
  }
  let r = ares.resolvers.get(timeoutMs);
  if (!r) {
    // c-ares doubles the per-try timeout on each round; two tries of a third each fit the deadline
    const opts: DnsResolverOptions = { timeout: Math.max(50, Math.floor(timeoutMs / 3)), tries: 2 };
    r = new dns.Resolver(opts);
    ares.resolvers.set(timeoutMs, r);
  }
  return r;
}

/** After one family answered, how long the other may still take before it is given up. */
const OTHER_FAMILY_GRACE_MS = 250;

function syscallOf(err: unknown): string {
  const s = err && typeof err === 'object' ? (err as { syscall?: unknown }).syscall : undefined;
  return typeof s === 'string' && s.length > 0 ? s : 'lookup';
}

const NO_ANSWER = new Set(['ENODATA', 'ENOTFOUND', 'ENONAME']);

async function aresLookup(host: string, timeoutMs: number): Promise<LookupResult> {
  const r = aresResolver(timeoutMs);
  type Family = { family: 4 | 6; records: Array<{ address: string; ttl: number }> };
  const queries: Array<Promise<Family>> = [
    r.resolve4(host, { ttl: true }).then((records) => ({ family: 4 as const, records })),
    r.resolve6(host, { ttl: true }).then((records) => ({ family: 6 as const, records })),
  ];
  const results: Array<Family | undefined> = [undefined, undefined];
  const errors: unknown[] = [];
  await new Promise<void>((resolve) => {
    let pending = queries.length;
    let grace: NodeJS.Timeout | undefined;
    const done = () => {
      if (grace) clearTimeout(grace);
      resolve();
    };
    queries.forEach((q, i) => {
      q.then(
        (f) => {
          results[i] = f;
          if (--pending === 0) return done();
          grace ??= setTimeout(done, OTHER_FAMILY_GRACE_MS);
        },
        (err: unknown) => {
          errors.push(err);
          if (--pending === 0) done();
        },
      );
    });
  });
  const answered = results.filter((f): f is Family => f !== undefined);
  const addresses: ResolvedAddress[] = [];
  let ttl: number | undefined;
  for (const f of answered) {
    for (const rec of f.records) {
      addresses.push({ address: rec.address, family: f.family });
      ttl = ttl === undefined ? rec.ttl : Math.min(ttl, rec.ttl);
    }
  }
  if (addresses.length > 0)
    return { addresses, ...(ttl === undefined ? {} : { ttlMs: ttl * 1000 }) };
  // No address: report the most telling failure (a timeout or server failure over "no such name").
  const hard = errors.find((e) => !NO_ANSWER.has(errorCode(e)));
  if (hard) throw hard;
  if (errors[0]) throw errors[0];
  return { addresses: [] };
}

export interface SystemLookupOptions {
  /** The hosts(5) file consulted before DNS. Default /etc/hosts. */
  hostsFile?: string;
}

/**
 * The default lookup, off libuv's thread pool: names in the hosts file (default /etc/hosts)
 * answer from it like getaddrinfo's `files` source; other names go to the DNS servers of
 * /etc/resolv.conf through c-ares (A and AAAA in parallel, IPv4 addresses first, the TTL from the
 * answer), with per-try timeouts that fit the resolver's deadline. Not consulted: other NSS
 * sources (mDNS, LDAP ...) and the resolv.conf search list (names are resolved as given).
 */
export function createSystemLookup(options: SystemLookupOptions = {}): LookupFunction {
  const hostsFile = options.hostsFile ?? '/etc/hosts';
  return async (host, opts) => {
    const key = host.toLowerCase().replace(/\.$/, '');
    const fromHosts = hostsEntries(hostsFile, key);
    if (fromHosts && fromHosts.length > 0) {
      return { addresses: [...fromHosts].sort((a, b) => a.family - b.family) };
    }
    return aresLookup(key, opts?.timeoutMs ?? DEFAULT_DNS_TIMEOUT_MS);
  };
}

/** createSystemLookup() with the default hosts file. */
export const systemLookup: LookupFunction = createSystemLookup();

interface Entry {
  addresses: ResolvedAddress[];
  expires: number;
}

/**
 * A resolver caching each name for its TTL; concurrent lookups of one name share one query.
 * Every resolution has a deadline (`timeoutMs`, ERR_PROXY_DNS_TIMEOUT past it) and each peer may
 * have at most `maxLookupsPerPeer` resolutions waiting (ERR_PROXY_DNS_LIMIT beyond), so a peer
 * asking for names that never answer cannot delay the names other peers ask for.
 */
export function createResolver(options: ResolverOptions = {}): Resolver {
  const lookup = options.lookup ?? systemLookup;
  const defaultTtl = options.defaultTtlMs ?? 30_000;
  const maxTtl = options.maxTtlMs ?? 300_000;
  const maxEntries = options.maxEntries ?? 1000;
  const timeoutMs = options.timeoutMs ?? DEFAULT_DNS_TIMEOUT_MS;
  const perPeer = options.maxLookupsPerPeer ?? DEFAULT_MAX_LOOKUPS_PER_PEER;
  const now = options.now ?? Date.now;
  const cache = new Map<string, Entry>();
  const inflight = new Map<string, Promise<ResolvedAddress[]>>();
  const waiting = new Map<string, number>();

  const start = (host: string, key: string): Promise<ResolvedAddress[]> =>
    new Promise<ResolvedAddress[]>((resolve, reject) => {
      const abort = new AbortController();
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              const err = new ProxyError(
                'ERR_PROXY_DNS_TIMEOUT',
                `Resolving ${host} did not finish within ${timeoutMs} ms (the DNS deadline); the name's DNS servers do not answer. Check the name, or raise dns.timeoutMs.`,
                { address: host, syscall: 'lookup', details: { timeoutMs } },
              );
              abort.abort(err);
              reject(err);
            }, timeoutMs)
          : undefined;
      lookup(key, { timeoutMs, signal: abort.signal }).then(
        (result) => {
          if (timer) clearTimeout(timer);
          if (abort.signal.aborted) return;
          if (result.addresses.length === 0) {
            reject(
              new ProxyError('ERR_PROXY_DNS', `Resolving ${host} returned no address.`, {
                address: host,
                syscall: 'lookup',
              }),
            );
            return;
          }
          const ttl = Math.min(maxTtl, Math.max(0, result.ttlMs ?? defaultTtl));
          if (ttl > 0) {
            if (cache.size >= maxEntries) {
              const oldest = cache.keys().next();
              if (!oldest.done) cache.delete(oldest.value);
            }
            cache.set(key, { addresses: result.addresses, expires: now() + ttl });
          }
          resolve(result.addresses);
        },
        (err: unknown) => {
          if (timer) clearTimeout(timer);
          if (abort.signal.aborted) return;
          const code = errorCode(err);
          reject(
            new ProxyError(
              code === 'ETIMEOUT' ? 'ERR_PROXY_DNS_TIMEOUT' : 'ERR_PROXY_DNS',
              `Resolving ${host} failed (${code}: ${errorMessage(err)}); check the name and the system resolver.`,
              { cause: err, address: host, syscall: syscallOf(err) },
            ),
          );
        },
      );
    });

  return {
    remainingTtlMs(host: string): number | undefined {
      const hit = cache.get(host.toLowerCase());
      const left = hit ? hit.expires - now() : 0;
      return left > 0 ? left : undefined;
    },
    async resolve(host: string, opts: ResolveOptions = {}): Promise<ResolvedAddress[]> {
      // numeric hosts as getaddrinfo reads them (`0x7f.1`, `2130706433`) are never DNS queries
      const ip = parseNumericHost(host);
      if (ip) return [{ address: formatIp(ip), family: ip.family }];
      const key = host.toLowerCase();
      const hit = cache.get(key);
      if (hit && hit.expires > now()) return hit.addresses;
      if (hit) cache.delete(key);
      const peer = opts.peer ?? 'local';
      const held = waiting.get(peer) ?? 0;
      if (perPeer > 0 && held >= perPeer) {
        throw new ProxyError(
          'ERR_PROXY_DNS_LIMIT',
          `Resolving ${host} refused: peer ${peer} already has ${held} name resolutions waiting (dns.maxLookupsPerPeer ${perPeer}); retry when they finish.`,
          { address: host, details: { peer, maxLookupsPerPeer: perPeer } },
        );
      }
      waiting.set(peer, held + 1);
      try {
        let p = inflight.get(key);
        if (!p) {
          const started = start(host, key);
          p = started;
          inflight.set(key, started);
          started.then(
            () => inflight.delete(key),
            () => inflight.delete(key),
          );
        }
        return await p;
      } finally {
        const n = (waiting.get(peer) ?? 1) - 1;
        if (n <= 0) waiting.delete(peer);
        else waiting.set(peer, n);
      }
    },
  };
}
