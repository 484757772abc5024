// The enclave's DNS stub: a resolver on 127.0.0.1:53 (UDP and TCP) that forwards each question
// over vsock to the parent DNS service (createDnsService in @enclave-extras/proxy, which applies
// the egress policy), caches answers for their TTL, and remembers address -> name so transparent
// egress can tell the parent the name the app asked for.

import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { basename, dirname, join } from 'node:path';
import {
  buildDnsError,
  DnsRcode,
  type DnsRecord,
  describeEndpoint,
  dialEndpoint,
  dnsMessageId,
  type Endpoint,
  type Logger,
  type ProxySocket,
  parseDnsQuery,
  parseDnsResponse,
  parseEndpoint,
  silentLogger,
  type VsockOptions,
} from '@enclave-extras/proxy';
import { errorCode, errorMessage, RuntimeError } from './errors.js';

export interface DnsStubOptions {
  /** The parent DNS service, normally `vsock:3:8053`. */
  parent: Endpoint | string;
  /** Listen address. Default 127.0.0.1. */
  host?: string;
  /** Listen port (UDP and TCP). Default 53; 0 picks one (both share it). */
  port?: number;
  vsock?: VsockOptions;
  logger?: Logger;
  /** Deadline of one forwarded question (ms). Default 5 000. */
  timeoutMs?: number;
  /** How long REFUSED / NXDOMAIN / empty answers are cached (ms). Default 5 000. */
  negativeTtlMs?: number;
  /** Upper bound of any cached TTL (ms). Default 300 000. */
  maxTtlMs?: number;
  /** How long an address keeps the name it was answered for, at least (ms). Default 600 000. */
  nameMemoryMs?: number;
  /** Cached answers and remembered addresses at most (oldest dropped). Default 10 000. */
  maxEntries?: number;
  /** Clock (tests). */
  now?: () => number;
}

export interface DnsStubStats {
  queries: number;
  /** Answered from the cache, without the parent. */
  cacheHits: number;
  /** Forwarded to the parent. */
  forwarded: number;
  /** The parent could not be reached or did not answer in time (answered SERVFAIL). */
  failures: number;
}

export interface DnsStub {
  /** The UDP and TCP port (the same). */
  readonly port: number;
  readonly host: string;
  /** The name the app last resolved to `address` (while remembered). */
  nameOf(address: string): string | undefined;
  stats(): DnsStubStats;
  close(): Promise<void>;
}

interface Cached {
  rcode: number;
  /** The parent's answer (id rewritten per client). */
  response: Buffer;
  expires: number;
  /** When it was stored: TTLs in the answer are decreased by the time spent in the cache. */
  stored: number;
}

/** Rewrites the TTLs of every answer record in place (decremented by `elapsedS`). */
function ageTtls(msg: Buffer, elapsedS: number): void {
  if (elapsedS <= 0 || msg.length < 12) return;
  const parsed = parseDnsResponse(msg);
  if (!parsed) return;
  // walk again to find each TTL's offset (parseDnsResponse validated the layout)
  let off = 12;
  const skipName = (o: number): number => {
    while (o < msg.length) {
      const len = msg[o] as number;
      if (len === 0) return o + 1;
      if ((len & 0xc0) === 0xc0) return o + 2;
      o += 1 + len;
    }
    return o;
  };
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  for (let i = 0; i < qd; i++) off = skipName(off) + 4;
  for (let i = 0; i < an; i++) {
    const n = skipName(off);
    const ttl = msg.readUInt32BE(n + 4);
    msg.writeUInt32BE(Math.max(0, ttl - elapsedS), n + 4);
    off = n + 10 + msg.readUInt16BE(n + 8);
  }
}

/** Sends one framed question to the parent and reads one framed answer. */
async function askParent(
  parent: Endpoint,
  msg: Buffer,
  timeoutMs: number,
  vsock: VsockOptions | undefined,
): Promise<Buffer> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let socket: ProxySocket | undefined;
  try {
    socket = await dialEndpoint(parent, {
      signal: abort.signal,
      timeoutMs,
      ...(vsock ? { vsock } : {}),
    });
    const s = socket;
    const head = Buffer.alloc(2);
    head.writeUInt16BE(msg.length, 0);
    s.write(Buffer.concat([head, msg]));
    return await new Promise<Buffer>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const onAbort = () => reject(new Error(`no answer within ${timeoutMs} ms`));
      abort.signal.addEventListener('abort', onAbort, { once: true });
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          resolve(Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0))));
        }
      });
      s.on('error', reject);
      s.on('close', () => reject(new Error('the parent closed the connection without an answer')));
      s.resume();
    });
  } finally {
    clearTimeout(timer);
    socket?.destroy();
  }
}

/**
 * Starts the stub on host:port, UDP and TCP. Rejects with RuntimeError ERR_RUNTIME_DNS_SETUP
 * (or the errno, EADDRINUSE / EACCES) when it cannot listen; nothing is left listening then.
 */
export async function startDnsStub(options: DnsStubOptions): Promise<DnsStub> {
  const log = options.logger ?? silentLogger;
  const parent =
    typeof options.parent === 'string' ? parseEndpoint(options.parent) : options.parent;
  const host = options.host ?? '127.0.0.1';
  const timeoutMs = options.timeoutMs ?? 5_000;
  const negativeTtl = options.negativeTtlMs ?? 5_000;
  const maxTtl = options.maxTtlMs ?? 300_000;
  const memoryMs = options.nameMemoryMs ?? 600_000;
  const maxEntries = options.maxEntries ?? 10_000;
  const now = options.now ?? Date.now;
  const cache = new Map<string, Cached>();
  const inflight = new Map<string, Promise<Cached | undefined>>();
  const names = new Map<string, { name: string; expires: number }>();
  const counts: DnsStubStats = { queries: 0, cacheHits: 0, forwarded: 0, failures: 0 };

  const bounded = <V>(m: Map<string, V>, k: string, v: V) => {
    m.delete(k);
    if (m.size >= maxEntries) {
      const oldest = m.keys().next();
      if (!oldest.done) m.delete(oldest.value);
    }
    m.set(k, v);
  };

  const remember = (name: string, records: DnsRecord[], ttlMs: number) => {
    for (const r of records) {
      bounded(names, r.address, { name, expires: now() + Math.max(ttlMs, memoryMs) });
    }
  };

  const forward = async (key: string, name: string, msg: Buffer): Promise<Cached | undefined> => {
    counts.forwarded++;
    let response: Buffer;
    try {
      response = await askParent(parent, msg, timeoutMs, options.vsock);
    } catch (err) {
      counts.failures++;
      log.warn(
        { name, parent: describeEndpoint(parent), err: errorMessage(err) },
        'dns: the parent did not answer',
      );
      return undefined;
    }
    const parsed = parseDnsResponse(response);
    if (!parsed) {
      counts.failures++;
      return undefined;
    }
    const positive = parsed.rcode === DnsRcode.NOERROR && parsed.records.length > 0;
    const ttlMs = positive ? Math.min(maxTtl, (parsed.minTtl ?? 0) * 1000) : negativeTtl;
    const entry: Cached = {
      rcode: parsed.rcode,
      response,
      expires: now() + ttlMs,
      stored: now(),
    };
    if (ttlMs > 0 && parsed.rcode !== DnsRcode.SERVFAIL) bounded(cache, key, entry);
    if (positive) remember(name, parsed.records, ttlMs);
    return entry;
  };

  /** The answer to one message from a client (undefined: drop it). */
  const handle = async (msg: Buffer): Promise<Buffer | undefined> => {
    counts.queries++;
    const q = parseDnsQuery(msg);
    if (!q) {
      const id = dnsMessageId(msg);
      return id === undefined ? undefined : buildDnsError(id, DnsRcode.FORMERR);
    }
    const key = `${q.name}|${q.type}|${q.qclass}`;
    let entry = cache.get(key);
    if (entry && entry.expires <= now()) {
      cache.delete(key);
      entry = undefined;
    }
    if (entry) {
      counts.cacheHits++;
    } else {
      let p = inflight.get(key);
      if (!p) {
        p = forward(key, q.name, msg);
        inflight.set(key, p);
        void p.finally(() => inflight.delete(key));
      }
      entry = await p;
    }
    if (!entry) return buildDnsError(q.id, DnsRcode.SERVFAIL);
    const out = Buffer.from(entry.response);
    out.writeUInt16BE(q.id, 0);
    ageTtls(out, Math.floor((now() - entry.stored) / 1000));
    return out;
  };

  // ---- listeners ------------------------------------------------------------------------
  const udp = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4' });
  const tcpSockets = new Set<net.Socket>();
  const tcp = net.createServer((s) => {
    tcpSockets.add(s);
    let buf = Buffer.alloc(0);
    let chain = Promise.resolve();
    s.setTimeout(30_000, () => s.destroy());
    s.on('error', () => {});
    s.on('close', () => tcpSockets.delete(s));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        const msg = Buffer.from(buf.subarray(2, 2 + len));
        buf = buf.subarray(2 + len);
        chain = chain.then(async () => {
          const out = await handle(msg).catch(() => undefined);
          if (!out || s.destroyed) return;
          const head = Buffer.alloc(2);
          head.writeUInt16BE(out.length, 0);
          s.write(Buffer.concat([head, out]));
        });
      }
    });
  });
  udp.on('message', (msg, rinfo) => {
    handle(msg)
      .then((out) => {
        if (!out) return;
        // Over UDP without EDNS a client accepts 512 bytes: truncate and let it retry over TCP.
        const reply = out.length > 512 ? truncated(out) : out;
        udp.send(reply, rinfo.port, rinfo.address);
      })
      .catch(() => {});
  });
  udp.on('error', (err) => log.warn({ err: errorMessage(err) }, 'dns stub: udp socket error'));

  const listenError = (what: string, err: unknown) => {
    const code = errorCode(err);
    return new RuntimeError(
      code === 'ERR_UNKNOWN' ? 'ERR_RUNTIME_DNS_SETUP' : code,
      `The DNS stub cannot listen on ${what} ${host}:${options.port ?? 53}: ${errorMessage(err)}. Port 53 needs root (or CAP_NET_BIND_SERVICE) and must be free; or remove dns: from the enclave config.`,
      { cause: err, address: `${host}:${options.port ?? 53}`, syscall: 'listen' },
    );
  };
  let port: number;
  try {
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen({ host, port: options.port ?? 53, exclusive: true }, () => resolve());
    });
  } catch (err) {
    throw listenError('TCP', err);
  }
  port = (tcp.address() as net.AddressInfo).port;
  try {
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind({ address: host, port, exclusive: true }, () => resolve());
    });
  } catch (err) {
    await new Promise<void>((r) => tcp.close(() => r()));
    throw listenError('UDP', err);
  }
  port = udp.address().port;
  log.info({ host, port, parent: describeEndpoint(parent) }, 'dns stub listening');

  return {
    port,
    host,
    nameOf(address: string) {
      const hit = names.get(address);
      if (!hit) return undefined;
      if (hit.expires <= now()) {
        names.delete(address);
        return undefined;
      }
      return hit.name;
    },
    stats: () => ({ ...counts }),
    async close() {
      for (const s of tcpSockets) s.destroy();
      await new Promise<void>((r) => tcp.close(() => r()));
      await new Promise<void>((r) => udp.close(() => r()));
    },
  };
}

/** The header and question of `msg` with the TC bit set and no records. */
function truncated(msg: Buffer): Buffer {
  const q = parseDnsQuery(
    Buffer.concat([msg.subarray(0, 2), Buffer.from([0, 0]), msg.subarray(4)]),
  );
  const head = Buffer.from(msg.subarray(0, 12));
  head.writeUInt16BE(head.readUInt16BE(2) | 0x0200, 2);
  head.writeUInt16BE(q ? 1 : 0, 4);
  head.writeUInt16BE(0, 6);
  head.writeUInt16BE(0, 8);
  head.writeUInt16BE(0, 10);
  return q ? Buffer.concat([head, q.questionBytes]) : head;
}

export interface ResolvConfResult {
  path: string;
  /** Puts the previous content back (in place or by rename). Idempotent. */
  restore(): Promise<void>;
}

/**
 * Points resolv.conf at the stub (`nameserver HOST`), keeping the previous content to restore
 * on exit. Atomic (temporary file + rename); when the file is a mount point (EBUSY/EXDEV, as a
 * bind-mounted /etc/resolv.conf) it is rewritten in place.
 */
export async function writeResolvConf(path: string, nameserver: string): Promise<ResolvConfResult> {
  let before: string | undefined;
  try {
    before = await readFile(path, 'utf8');
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') {
      throw new RuntimeError(
        'ERR_RUNTIME_DNS_SETUP',
        `Cannot read ${path}: ${errorMessage(err)}.`,
        {
          cause: err,
          address: path,
        },
      );
    }
  }
  const content = `# written by ee-enclave: the DNS stub, which asks the parent under the egress policy\nnameserver ${nameserver}\noptions edns0 timeout:2 attempts:2\n`;
  const put = async (text: string): Promise<void> => {
    const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await writeFile(tmp, text, { mode: 0o644 });
      await rename(tmp, path);
      return;
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {});
      const code = errorCode(err);
      if (code !== 'EBUSY' && code !== 'EXDEV' && code !== 'EACCES' && code !== 'EROFS') throw err;
    }
    await writeFile(path, text);
  };
  try {
    await put(content);
  } catch (err) {
    throw new RuntimeError(
      errorCode(err) === 'ERR_UNKNOWN' ? 'ERR_RUNTIME_DNS_SETUP' : errorCode(err),
      `Cannot write ${path}: ${errorMessage(err)}. Run as root, or set dns.resolvConf to a writable file.`,
      { cause: err, address: path, syscall: 'write' },
    );
  }
  let restored = false;
  return {
    path,
    async restore() {
      if (restored) return;
      restored = true;
      if (before === undefined) await rm(path, { force: true }).catch(() => {});
      else await put(before).catch(() => {});
    },
  };
}
