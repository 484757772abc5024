import { describeEndpoint, type Endpoint, toEndpoint } from './endpoint.js';
import { errorCode, errorMessage, ProxyError } from './errors.js';
import { pipeOneWay } from './forward.js';
import {
  DEFAULT_FD_RESERVE,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS_PER_PEER_VSOCK,
  LIGHT_PEER_CONNECTIONS,
  processFds,
} from './limits.js';
import { type Logger, silentLogger } from './logger.js';
import { MetricsRegistry, type RouteMetrics } from './metrics.js';
import { Policy, type PolicyConfig } from './policy.js';
import { createResolver, type DnsLimits, type Resolver } from './resolver.js';
import {
  dialEndpoint,
  type Listener,
  listenEndpoint,
  literalTcpDialer,
  type ProxySocket,
  type VsockOptions,
} from './transport.js';

export interface DialRetries {
  /** Total attempts including the first (>= 1). Default 1. */
  attempts: number;
  /** Delay before the second attempt. Default 100 ms. */
  delayMs?: number;
  /** Factor applied to the delay after each failure (1 = fixed). Default 2. */
  backoff?: number;
  /** Upper bound of one delay. Default 10 000 ms. */
  maxDelayMs?: number;
}

/** What a custom dialer receives for each accepted connection. */
export interface DialContext {
  route: string;
  /** The accepted peer, printed (`127.0.0.1:5000`, `vm(16):1234`, `unix`). */
  peer: string;
  /** The accepted peer without its port (`vm(16)`, `127.0.0.1`, `local`): the key of per-peer limits. */
  peerId: string;
  /** The accepted socket, paused. A dialer may read a handshake from it (unshift what it over-read). */
  socket: ProxySocket;
  /** Aborted when the accepted side goes away or the route is closed without drain. */
  signal: AbortSignal;
  /** Per-attempt connect timeout of the route. */
  connectTimeoutMs: number;
  logger: Logger;
  /** Set a short description of the dialled target for the close log line. */
  setTarget(target: string): void;
}

/** Opens the outbound side of one connection. */
export type RouteDialer = (ctx: DialContext) => Promise<ProxySocket>;

/** Connection limits every route kind accepts (routes, both gateway halves). */
export interface RouteLimits {
  /** Close a connection after this long with no byte in either direction (0 = never). Default 600 000 ms (10 min). */
  idleTimeoutMs?: number;
  /** Open connections at most; more are closed at once and counted. Default 4096. */
  maxConnections?: number;
  /**
   * Open connections one peer (`peerId`: enclave CID, client IP) may hold on this route; more are
   * closed at once and counted (0 = no cap). Default 1024 on vsock listeners, no cap otherwise.
   */
  maxConnectionsPerPeer?: number;
  /**
   * File descriptors kept free for the rest of the process (0 = off). Default 128. With fewer
   * free, peers holding 8 or more connections here are refused; with fewer than a quarter of it
   * free, every new connection is.
   */
  fdReserve?: number;
}

/** The limits set in `o`, for passing on to a Route. */
export function routeLimits(o: RouteLimits): RouteLimits {
  const out: RouteLimits = {};
  if (o.idleTimeoutMs !== undefined) out.idleTimeoutMs = o.idleTimeoutMs;
  if (o.maxConnections !== undefined) out.maxConnections = o.maxConnections;
  if (o.maxConnectionsPerPeer !== undefined) out.maxConnectionsPerPeer = o.maxConnectionsPerPeer;
  if (o.fdReserve !== undefined) out.fdReserve = o.fdReserve;
  return out;
}

export interface RouteOptions extends RouteLimits {
  /** Unique route name (label in metrics and logs). */
  name: string;
  listen: Endpoint | string;
  /** Where to forward; or give `dialer`. */
  dial?: Endpoint | string;
  dialer?: RouteDialer;
  /** Per-attempt connect timeout. Default 10 000 ms. */
  connectTimeoutMs?: number;
  dialRetries?: DialRetries;
  logger?: Logger;
  /** Outbound policy, checked on every connection for TCP `dial` targets. */
  policy?: Policy | PolicyConfig;
  resolver?: Resolver;
  /** DNS deadline and per-peer lookup cap of the resolver this route creates when no `resolver` is given. */
  dns?: DnsLimits;
  vsock?: VsockOptions;
  /** Where the counters live; a runtime passes its registry so counters survive reloads. */
  metrics?: MetricsRegistry;
  backlog?: number;
}

export interface CloseOptions {
  /** Let open connections finish (default true); false closes them at once. */
  drain?: boolean;
  /** After this long, remaining connections are closed. Default 30 000 ms. */
  timeoutMs?: number;
}

interface Conn {
  inbound: ProxySocket;
  outbound?: ProxySocket;
  abort: AbortController;
  reason?: string;
  destroy(reason: string): void;
}

const NO_RETRY = new Set([
  'ERR_PROXY_POLICY_DENIED',
  'ERR_PROXY_UNSPECIFIED_ADDRESS',
  'ERR_PROXY_ABORTED',
  'ERR_PROXY_GATEWAY_PROTOCOL',
  'ERR_PROXY_BAD_ENDPOINT',
  'ERR_PROXY_VSOCK_UNAVAILABLE',
  'ERR_PROXY_CLOSED',
]);

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The peer without its port: per-peer limits count by this. */
export function peerIdOf(s: ProxySocket): string {
  const v = s as ProxySocket & { remoteCid?: number };
  if (typeof v.remoteCid === 'number') return `vm(${v.remoteCid})`;
  return s.remoteAddress ?? 'local';
}

/** Counted in ee_proxy_connections_refused_total{reason} when a dial fails with this code. */
const REFUSAL_REASON: Record<string, string> = {
  ERR_PROXY_POLICY_DENIED: 'policy',
  ERR_PROXY_UNSPECIFIED_ADDRESS: 'policy',
  ERR_PROXY_DNS_TIMEOUT: 'dns_timeout',
  ERR_PROXY_DNS_LIMIT: 'dns_limit',
};

function peerOf(s: ProxySocket): string {
  const v = s as ProxySocket & { remoteCid?: number };
  if (typeof v.remoteCid === 'number') return `vm(${v.remoteCid}):${s.remotePort ?? '?'}`;
  const a = s.remoteAddress;
  if (!a) return 'local';
  return a.includes(':') ? `[${a}]:${s.remotePort}` : `${a}:${s.remotePort}`;
}

/** One listener forwarding each accepted connection to a dialled one. */
export class Route {
  readonly name: string;
  readonly listen: Endpoint;
  readonly metrics: RouteMetrics;
  private readonly opts: RouteOptions;
  private readonly log: Logger;
  private readonly dialer: RouteDialer;
  private readonly connectTimeoutMs: number;
  /** The idle timeout in effect (ms, 0 = none). */
  readonly idleTimeoutMs: number;
  private readonly maxConnections: number;
  /** The per-peer cap in effect (0 = none). */
  readonly maxConnectionsPerPeer: number;
  private readonly fdReserve: number;
  private readonly perPeer = new Map<string, number>();
  private listener?: Listener;
  private readonly conns = new Set<Conn>();
  private closing = false;
  private idleWaiters: Array<() => void> = [];

  constructor(options: RouteOptions) {
    if (!options || typeof options.name !== 'string' || options.name.length === 0) {
      throw new ProxyError(
        'ERR_PROXY_BAD_OPTION',
        'Route option "name" is required (a non-empty string).',
      );
    }
    this.opts = options;
    this.name = options.name;
    this.listen = toEndpoint(options.listen);
    this.log = options.logger ?? silentLogger;
    this.metrics = (options.metrics ?? new MetricsRegistry()).route(this.name);
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.maxConnections = options.maxConnections ?? 4096;
    this.maxConnectionsPerPeer =
      options.maxConnectionsPerPeer ??
      (this.listen.kind === 'vsock' ? DEFAULT_MAX_CONNECTIONS_PER_PEER_VSOCK : 0);
    this.fdReserve = options.fdReserve ?? DEFAULT_FD_RESERVE;
    if (options.dialer) {
      this.dialer = options.dialer;
    } else if (options.dial !== undefined) {
      const target = toEndpoint(options.dial);
      if (options.policy !== undefined && target.kind !== 'tcp') {
        throw new ProxyError(
          'ERR_PROXY_BAD_OPTION',
          `Route "${this.name}" has a policy but dials ${describeEndpoint(target)}: a policy applies to tcp: dial targets only. Remove the policy or dial a TCP address.`,
        );
      }
      const policy =
        options.policy === undefined
          ? undefined
          : options.policy instanceof Policy
            ? options.policy
            : // the dial target is the operator's, not a client's: like AWS's allowlist, an IP rule
              // also allows the configured name that resolves into it (no DNS channel to close here)
              new Policy(options.policy, { addressRulesAllowNames: true });
      const resolver = options.resolver ?? (options.dns ? createResolver(options.dns) : undefined);
      // an IP literal without a policy: nothing to resolve or check per connection
      const literal =
        target.kind === 'tcp' && !policy && !options.resolver
          ? literalTcpDialer(target.host, target.port)
          : undefined;
      this.dialer = literal
        ? (ctx) => literal({ signal: ctx.signal, timeoutMs: ctx.connectTimeoutMs })
        : (ctx) =>
            dialEndpoint(target, {
              signal: ctx.signal,
              timeoutMs: ctx.connectTimeoutMs,
              peer: ctx.peerId,
              ...(policy ? { policy } : {}),
              ...(resolver ? { resolver } : {}),
              ...(options.vsock ? { vsock: options.vsock } : {}),
            });
      this.targetText = describeEndpoint(target);
    } else {
      throw new ProxyError(
        'ERR_PROXY_BAD_OPTION',
        `Route "${this.name}" needs "dial" (an endpoint) or "dialer" (a function).`,
      );
    }
  }

  private targetText = 'custom';

  /** Open connections now. */
  get active(): number {
    return this.conns.size;
  }

  /** The bound endpoint after start() (port 0 replaced by the real port). */
  get endpoint(): Endpoint {
    return this.listener?.endpoint ?? this.listen;
  }

  /** Starts listening. Rejects with ProxyError (errno code, `address`) when the address is taken. */
  async start(): Promise<void> {
    if (this.listener) return;
    if (this.closing)
      throw new ProxyError(
        'ERR_PROXY_CLOSED',
        `Route "${this.name}" was closed; create a new one.`,
      );
    this.listener = await listenEndpoint(this.listen, (s) => this.accept(s), {
      ...(this.opts.vsock ? { vsock: this.opts.vsock } : {}),
      ...(this.opts.backlog ? { backlog: this.opts.backlog } : {}),
    });
    this.log.info(
      { route: this.name, listen: describeEndpoint(this.endpoint), dial: this.targetText },
      'route listening',
    );
  }

  /** Stops accepting new connections; open ones continue. */
  async stopListening(): Promise<void> {
    this.closing = true;
    const l = this.listener;
    if (l) await l.close();
  }

  /** Stops accepting, then drains (or closes) the open connections. Resolves when none is left. */
  async close(options: CloseOptions = {}): Promise<void> {
    const drain = options.drain ?? true;
    const timeoutMs = options.timeoutMs ?? 30_000;
    await this.stopListening();
    if (!drain) {
      for (const c of this.conns) c.destroy('route_closed');
    } else if (this.conns.size > 0) {
      this.log.info({ route: this.name, active: this.conns.size, timeoutMs }, 'route draining');
      const timer = setTimeout(() => {
        for (const c of this.conns) c.destroy('drain_timeout');
      }, timeoutMs);
      await this.whenIdle();
      clearTimeout(timer);
    }
    await this.whenIdle();
    this.log.info({ route: this.name }, 'route closed');
  }

  private whenIdle(): Promise<void> {
    if (this.conns.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private accept(inbound: ProxySocket): void {
    const peer = peerOf(inbound);
    const m = this.metrics;
    if (this.closing) {
      inbound.destroy();
      return;
    }
    const refuse = (reason: string, code: string, fields: Record<string, unknown>, msg: string) => {
      m.countRefused(reason);
      m.countError(code);
      this.log.warn({ route: this.name, peer, code, reason, ...fields }, msg);
      inbound.on('error', () => {});
      inbound.destroy();
    };
    if (this.conns.size >= this.maxConnections) {
      refuse(
        'max_connections',
        'ERR_PROXY_MAX_CONNECTIONS',
        { maxConnections: this.maxConnections },
        'connection refused: route at maxConnections',
      );
      return;
    }
    const peerId = peerIdOf(inbound);
    const held = this.perPeer.get(peerId) ?? 0;
    if (this.maxConnectionsPerPeer > 0 && held >= this.maxConnectionsPerPeer) {
      refuse(
        'max_connections_per_peer',
        'ERR_PROXY_MAX_CONNECTIONS_PER_PEER',
        { peerId, maxConnectionsPerPeer: this.maxConnectionsPerPeer },
        'connection refused: peer at maxConnectionsPerPeer',
      );
      return;
    }
    if (this.fdReserve > 0) {
      const short = (f: number) =>
        f < this.fdReserve / 4 || (f < this.fdReserve && held >= LIGHT_PEER_CONNECTIONS);
      let fds = processFds.status();
      let free = fds ? fds.limit - fds.open : Number.POSITIVE_INFINITY;
      if (short(free)) {
        // the estimate says refuse: count for real before refusing
        fds = processFds.status(true);
        free = fds ? fds.limit - fds.open : Number.POSITIVE_INFINITY;
      }
      if (short(free)) {
        refuse(
          free < this.fdReserve / 4 ? 'fd_exhausted' : 'fd_headroom',
          'ERR_PROXY_FD_HEADROOM',
          { peerId, held, fdsOpen: fds?.open, fdLimit: fds?.limit, fdReserve: this.fdReserve },
          'connection refused: keeping file descriptors in reserve (RLIMIT_NOFILE nearly reached)',
        );
        return;
      }
    }
    this.perPeer.set(peerId, held + 1);
    // an accepted connection holds two descriptors once dialled
    processFds.track(2);
    // a proxy should not add Nagle delays of its own (no-op on Unix and vsock sockets)
    (inbound as ProxySocket & { setNoDelay?: (v: boolean) => unknown }).setNoDelay?.(true);
    m.connectionsTotal++;
    m.connectionsActive++;
    const started = Date.now();
    let bytesUp = 0;
    let bytesDown = 0;
    let target = this.targetText;
    let closedSides = 0;
    let idleTimer: NodeJS.Timeout | undefined;
    const abort = new AbortController();
    const conn: Conn = {
      inbound,
      abort,
      destroy: (reason) => {
        conn.reason ??= reason;
        abort.abort(new ProxyError('ERR_PROXY_ABORTED', `connection closed: ${reason}`));
        inbound.destroy();
        conn.outbound?.destroy();
      },
    };
    this.conns.add(conn);

    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      if (idleTimer) clearTimeout(idleTimer);
      this.conns.delete(conn);
      m.connectionsActive--;
      processFds.track(-2);
      const n = (this.perPeer.get(peerId) ?? 1) - 1;
      if (n <= 0) this.perPeer.delete(peerId);
      else this.perPeer.set(peerId, n);
      this.log.info(
        {
          route: this.name,
          peer,
          target,
          bytesUp,
          bytesDown,
          durationMs: Date.now() - started,
          reason: conn.reason ?? 'eof',
        },
        'connection closed',
      );
      if (this.conns.size === 0) {
        const w = this.idleWaiters;
        this.idleWaiters = [];
        for (const f of w) f();
      }
    };
    const onSideError = (side: string) => (err: Error) => {
      const code = errorCode(err);
      m.countError(code);
      conn.destroy(`${side}_error:${code}`);
    };
    inbound.on('error', onSideError('client'));
    const onEarlyClose = () => {
      if (!conn.outbound) {
        conn.reason ??= 'client_closed_before_dial';
        abort.abort(new ProxyError('ERR_PROXY_ABORTED', 'client went away'));
      }
    };
    inbound.once('close', onEarlyClose);

    this.log.debug({ route: this.name, peer, target }, 'connection accepted');
    this.dialWithRetries({
      route: this.name,
      peer,
      peerId,
      socket: inbound,
      signal: abort.signal,
      connectTimeoutMs: this.connectTimeoutMs,
      logger: this.log,
      setTarget: (t) => {
        target = t;
      },
    }).then(
      (outbound) => {
        inbound.removeListener('close', onEarlyClose);
        if (abort.signal.aborted || inbound.destroyed) {
          outbound.on('error', () => {});
          outbound.destroy();
          conn.reason ??= 'client_closed_before_dial';
          finish();
          return;
        }
        conn.outbound = outbound;
        // debug: the 'connection closed' line (info) is the access log, with target, bytes,
        // duration and reason; a second info line per connection added nothing to it and was
        // a synchronous stderr write on every accept in ee-enclave/ee-parent run
        this.log.debug({ route: this.name, peer, target }, 'connection open');
        outbound.on('error', onSideError('target'));
        const touch =
          this.idleTimeoutMs > 0
            ? () => {
                idleTimer?.refresh();
              }
            : () => {};
        if (this.idleTimeoutMs > 0) {
          idleTimer = setTimeout(() => conn.destroy('idle_timeout'), this.idleTimeoutMs);
          idleTimer.unref();
        }
        const sideClosed = () => {
          closedSides++;
          if (closedSides === 2) finish();
        };
        inbound.once('close', sideClosed);
        outbound.once('close', sideClosed);
        // A side that closed with an error resets the other one.
        inbound.once('close', (hadError: boolean) => {
          if (hadError) outbound.destroy();
        });
        outbound.once('close', (hadError: boolean) => {
          if (hadError) inbound.destroy();
        });
        pipeOneWay(inbound, outbound, (n) => {
          bytesUp += n;
          m.bytesUp += n;
          touch();
        });
        pipeOneWay(outbound, inbound, (n) => {
          bytesDown += n;
          m.bytesDown += n;
          touch();
        });
      },
      (err: unknown) => {
        inbound.removeListener('close', onEarlyClose);
        const code = errorCode(err);
        if (!abort.signal.aborted || code !== 'ERR_PROXY_ABORTED') {
          m.countError(code);
          const refusal = REFUSAL_REASON[code];
          if (refusal) m.countRefused(refusal);
          const details = err instanceof ProxyError ? err.details : undefined;
          this.log.warn(
            {
              route: this.name,
              peer,
              target,
              code,
              err: errorMessage(err),
              ...(details ? { details } : {}),
            },
            refusal === 'policy' ? 'connection refused by policy' : 'dial failed',
          );
        }
        conn.reason ??= `dial_failed:${code}`;
        if (inbound.destroyed) finish();
        else {
          inbound.once('close', finish);
          if (inbound.writableEnded) {
            // The dialer answered the client (HTTP 403, SOCKS reply ...): let the answer flush.
            const t = setTimeout(() => inbound.destroy(), 2000);
            t.unref();
            inbound.on('data', () => {});
            inbound.resume();
          } else {
            inbound.destroy();
          }
        }
      },
    );
  }

  private dialWithRetries(ctx: DialContext): Promise<ProxySocket> {
    if ((this.opts.dialRetries?.attempts ?? 1) <= 1) {
      // one attempt: no retry loop (and no extra promise) on the accept path
      try {
        return this.dialer(ctx);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return withRetries(
      () => this.dialer(ctx),
      this.opts.dialRetries,
      ctx.signal,
      (attempt, code, delayMs) => {
        this.metrics.dialRetries++;
        this.log.debug(
          { route: this.name, peer: ctx.peer, attempt, code, delayMs },
          'dial failed, retrying',
        );
      },
    );
  }
}

/** Runs `fn` up to `retries.attempts` times with backoff; errors that retrying cannot fix are thrown at once. */
export async function withRetries<T>(
  fn: () => Promise<T>,
  retries: DialRetries | undefined,
  signal: AbortSignal,
  onRetry: (attempt: number, code: string, delayMs: number) => void,
): Promise<T> {
  const attempts = Math.max(1, retries?.attempts ?? 1);
  let wait = retries?.delayMs ?? 100;
  const factor = retries?.backoff ?? 2;
  const maxDelay = retries?.maxDelayMs ?? 10_000;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const code = errorCode(err);
      if (i >= attempts || NO_RETRY.has(code) || signal.aborted) throw err;
      onRetry(i, code, wait);
      await delay(wait, signal);
      wait = Math.min(maxDelay, wait * factor);
    }
  }
}

/** Creates a route (not started). */
export function createRoute(options: RouteOptions): Route {
  return new Route(options);
}
