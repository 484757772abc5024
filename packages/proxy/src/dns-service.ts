// The parent half of enclave DNS: answers the enclave stub's queries (DNS over a stream, RFC 1035
// 4.2.2 framing: a 2-byte length before each message) under the egress policy. A name the policy
// can never allow (Policy.precheckName) is answered REFUSED before any resolver sees it; other
// A/AAAA questions go through the same kind of Resolver as the gateway (deadline, per-peer cap,
// TTL cache) and are answered with the addresses and the remaining TTL.

import {
  buildDnsError,
  buildDnsResponse,
  DNS_CLASS_IN,
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  type DnsQuestion,
  DnsRcode,
  dnsMessageId,
  parseDnsQuery,
} from './dns-message.js';
import { describeEndpoint, type Endpoint, toEndpoint } from './endpoint.js';
import { errorCode, errorMessage, ProxyError } from './errors.js';
import { type Logger, silentLogger } from './logger.js';
import { Policy, type PolicyConfig } from './policy.js';
import { createResolver, type DnsLimits, type Resolver } from './resolver.js';
import { peerIdOf } from './route.js';
import { type Listener, listenEndpoint, type ProxySocket, type VsockOptions } from './transport.js';

export interface DnsServiceOptions {
  /** Where the enclave stubs connect, normally `vsock:any:8053`. */
  listen: Endpoint | string;
  /** The egress policy (the gateway's): names it can never allow are REFUSED unresolved. */
  policy: Policy | PolicyConfig;
  /** Default: createResolver({ ...dns }) (/etc/hosts, then c-ares, TTL cache). */
  resolver?: Resolver;
  dns?: DnsLimits;
  logger?: Logger;
  vsock?: VsockOptions;
  /** A connection idle this long is closed (ms). Default 30 000. */
  idleTimeoutMs?: number;
  /** Open connections at most. Default 256. */
  maxConnections?: number;
}

/** Counters by outcome: answered (NOERROR), refused (policy), nxdomain, servfail, notimp, formerr. */
export interface DnsServiceStats {
  queries: number;
  answered: number;
  refused: number;
  nxdomain: number;
  servfail: number;
  notimp: number;
  formerr: number;
  /** Queries that reached the resolver (the rest were refused or malformed first). */
  resolved: number;
}

export interface DnsService {
  start(): Promise<void>;
  readonly endpoint: Endpoint;
  /** Replaces the policy (a reload); open connections use it from their next query. */
  setPolicy(policy: Policy | PolicyConfig): void;
  stats(): DnsServiceStats;
  /** Prometheus text: ee_dns_queries_total{result}. */
  metricsText(): string;
  close(): Promise<void>;
}

const MAX_MESSAGE = 4096;

/** Creates the parent DNS service; `start()` listens. */
export function createDnsService(options: DnsServiceOptions): DnsService {
  const log = options.logger ?? silentLogger;
  let endpoint = toEndpoint(options.listen);
  let policy = options.policy instanceof Policy ? options.policy : new Policy(options.policy);
  const resolver = options.resolver ?? createResolver({ ...(options.dns ?? {}) });
  const idleMs = options.idleTimeoutMs ?? 30_000;
  const maxConnections = options.maxConnections ?? 256;
  const counts: DnsServiceStats = {
    queries: 0,
    answered: 0,
    refused: 0,
    nxdomain: 0,
    servfail: 0,
    notimp: 0,
    formerr: 0,
    resolved: 0,
  };
  const sockets = new Set<ProxySocket>();
  let listener: Listener | undefined;

  const answer = async (msg: Buffer, peer: string): Promise<Buffer | undefined> => {
    counts.queries++;
    const q = parseDnsQuery(msg);
    if (!q) {
      counts.formerr++;
      const id = dnsMessageId(msg);
      return id === undefined ? undefined : buildDnsError(id, DnsRcode.FORMERR);
    }
    const reply = (
      rcode: number,
      q2: DnsQuestion,
      records = [] as Array<{ address: string; family: 4 | 6 }>,
      ttl = 0,
    ) => buildDnsResponse(q2, { rcode, records, ttlSeconds: ttl });
    if (q.opcode !== 0) {
      counts.notimp++;
      return reply(DnsRcode.NOTIMP, q);
    }
    const pre = policy.precheckName(q.name);
    if (q.qclass !== DNS_CLASS_IN || pre) {
      counts.refused++;
      log.info(
        {
          peer,
          name: q.name,
          type: q.type,
          reason: pre && !pre.allowed ? pre.reason : 'not an IN question',
        },
        'dns query refused by policy',
      );
      return reply(DnsRcode.REFUSED, q);
    }
    if (q.type !== DNS_TYPE_A && q.type !== DNS_TYPE_AAAA) {
      counts.notimp++;
      return reply(DnsRcode.NOTIMP, q);
    }
    counts.resolved++;
    try {
      const addresses = await resolver.resolve(q.name, { peer });
      const left = resolver.remainingTtlMs?.(q.name);
      counts.answered++;
      return reply(DnsRcode.NOERROR, q, addresses, left === undefined ? 0 : Math.ceil(left / 1000));
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause;
      const code = errorCode(cause ?? err);
      if (code === 'ENOTFOUND' || code === 'ERR_PROXY_DNS' || code === 'ENODATA') {
        // no such name (or no address at all for it)
        counts.nxdomain++;
        return reply(DnsRcode.NXDOMAIN, q);
      }
      counts.servfail++;
      log.warn(
        { peer, name: q.name, code: errorCode(err), err: errorMessage(err) },
        'dns query failed',
      );
      return reply(DnsRcode.SERVFAIL, q);
    }
  };

  const serve = (socket: ProxySocket): void => {
    if (sockets.size >= maxConnections) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    const peer = peerIdOf(socket);
    let buf = Buffer.alloc(0);
    let busy = Promise.resolve();
    let idle: NodeJS.Timeout | undefined;
    const touch = () => {
      if (idle) clearTimeout(idle);
      idle = idleMs > 0 ? setTimeout(() => socket.destroy(), idleMs) : undefined;
      idle?.unref();
    };
    touch();
    socket.on('error', () => {});
    socket.on('close', () => {
      if (idle) clearTimeout(idle);
      sockets.delete(socket);
    });
    socket.on('end', () => {
      busy = busy.then(() => {
        socket.end();
      });
    });
    socket.on('data', (d: Buffer) => {
      touch();
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (len === 0 || len > MAX_MESSAGE) {
          socket.destroy();
          return;
        }
        if (buf.length < 2 + len) break;
        const msg = Buffer.from(buf.subarray(2, 2 + len));
        buf = buf.subarray(2 + len);
        // answered in order, one at a time per connection (the stub opens one per query)
        busy = busy.then(async () => {
          const out = await answer(msg, peer).catch(() => undefined);
          if (!out || socket.destroyed) return;
          const head = Buffer.alloc(2);
          head.writeUInt16BE(out.length, 0);
          socket.write(Buffer.concat([head, out]));
        });
      }
    });
    socket.resume();
  };

  return {
    get endpoint() {
      return endpoint;
    },
    async start() {
      if (listener) return;
      try {
        listener = await listenEndpoint(endpoint, serve, {
          ...(options.vsock ? { vsock: options.vsock } : {}),
        });
      } catch (err) {
        if (err instanceof ProxyError) throw err;
        throw new ProxyError(
          'ERR_PROXY_LISTEN_FAILED',
          `The DNS service cannot listen on ${describeEndpoint(endpoint)}: ${errorMessage(err)}`,
          { cause: err, address: describeEndpoint(endpoint) },
        );
      }
      endpoint = listener.endpoint;
      log.info({ listen: describeEndpoint(endpoint) }, 'dns service listening');
    },
    setPolicy(p) {
      policy = p instanceof Policy ? p : new Policy(p);
    },
    stats: () => ({ ...counts }),
    metricsText() {
      const lines = [
        '# HELP ee_dns_queries_total DNS queries from enclaves by result.',
        '# TYPE ee_dns_queries_total counter',
      ];
      for (const k of [
        'answered',
        'refused',
        'nxdomain',
        'servfail',
        'notimp',
        'formerr',
      ] as const) {
        lines.push(`ee_dns_queries_total{result="${k}"} ${counts[k]}`);
      }
      return `${lines.join('\n')}\n`;
    },
    async close() {
      const l = listener;
      listener = undefined;
      for (const s of sockets) s.destroy();
      await l?.close();
    },
  };
}
