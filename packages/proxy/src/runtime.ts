import type { EgressGatewayConfig, EgressGatewayServerConfig, RouteConfig } from './config.js';
import { describeEndpoint, type Endpoint, VMADDR_CID_ANY } from './endpoint.js';
import { errorCode, errorMessage, ProxyError } from './errors.js';
import { createEgressGateway, createEgressGatewayServer } from './gateway.js';
import { type Logger, silentLogger } from './logger.js';
import { MetricsRegistry, type RouteMetricsSnapshot } from './metrics.js';
import type { Resolver } from './resolver.js';
import { type CloseOptions, Route } from './route.js';
import type { VsockOptions } from './transport.js';

/** Everything a runtime runs; each list item is identified by its `name` across reloads. */
export interface RuntimeConfig {
  routes?: ReadonlyArray<RouteConfig>;
  /** Enclave side: local HTTP CONNECT/SOCKS5 listeners carried to the parent. */
  egressGateways?: ReadonlyArray<EgressGatewayConfig>;
  /** Parent side: gateway servers enforcing their policy. */
  egressGatewayServers?: ReadonlyArray<EgressGatewayServerConfig>;
}

export interface ProxyRuntimeOptions {
  logger?: Logger;
  resolver?: Resolver;
  vsock?: VsockOptions;
  /** How long routes removed or changed by apply() may drain. Default 30 000 ms. */
  drainTimeoutMs?: number;
}

export interface ApplyResult {
  started: string[];
  kept: string[];
  /** Removed or replaced: they stopped listening and drain in the background. */
  drained: string[];
}

/** What one configured route or gateway is doing now (for health checks). */
export interface RouteStatus {
  name: string;
  /** The configured listen address, printed (`vm(any):8000`, `127.0.0.1:9000`, `unix:/path`). */
  listen: string;
  /** `listening`, or `failed` when its listener is gone (a rollback could not bind it again). */
  state: 'listening' | 'failed';
  /** The bound address while listening (port 0 replaced by the real port). */
  bound?: string;
  /** Why it is not listening. */
  code?: string;
  error?: string;
}

interface Unit {
  name: string;
  key: string;
  listen: Endpoint;
  create: () => Route;
}

interface Current {
  key: string;
  unit: Unit;
  /** Absent when the listener is gone (state `failed`). */
  route?: Route;
  failure?: { code: string; error: string };
}

const UNSPECIFIED = new Set(['0.0.0.0', '::', '']);

/**
 * Whether a listener on `held` may keep `wanted` from binding: same Unix path, same vsock port on
 * an overlapping CID, same TCP port (non-zero) on an overlapping host. Errs on the side of "yes":
 * such a unit is bound after the holder stops listening, with a rollback if the bind fails.
 */
function mayConflict(held: Endpoint, wanted: Endpoint): boolean {
  if (held.kind === 'unix' && wanted.kind === 'unix') return held.path === wanted.path;
  if (held.kind === 'vsock' && wanted.kind === 'vsock') {
    return (
      held.port === wanted.port &&
      (held.cid === wanted.cid || held.cid === VMADDR_CID_ANY || wanted.cid === VMADDR_CID_ANY)
    );
  }
  if (held.kind === 'tcp' && wanted.kind === 'tcp') {
    if (wanted.port === 0 || held.port !== wanted.port) return false;
    return (
      held.host === wanted.host ||
      UNSPECIFIED.has(held.host) ||
      UNSPECIFIED.has(wanted.host) ||
      !isIpLiteral(held.host) ||
      !isIpLiteral(wanted.host)
    );
  }
  return false;
}

function isIpLiteral(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(':');
}

/**
 * Holds the routes of a process. `apply(config)` starts new and changed listeners, keeps unchanged
 * ones (and their connections) untouched, and drains removed ones: a reload (SIGHUP) drops no
 * connection. It is all or nothing: the new listeners are bound before the old ones stop (a
 * changed route on the same address is swapped, with the old listener bound again if the new one
 * fails), and when any listener cannot be bound everything prepared is closed and the previous
 * routes keep listening. Counters live in one registry keyed by route name, so they survive reloads.
 */
export class ProxyRuntime {
  readonly metrics = new MetricsRegistry();
  private readonly log: Logger;
  private readonly current = new Map<string, Current>();
  private readonly draining = new Map<Route, Promise<void>>();
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ProxyRuntimeOptions = {}) {
    this.log = options.logger ?? silentLogger;
  }

  private units(config: RuntimeConfig): Unit[] {
    const common = {
      logger: this.log,
      metrics: this.metrics,
      ...(this.options.vsock ? { vsock: this.options.vsock } : {}),
    };
    const resolver = this.options.resolver ? { resolver: this.options.resolver } : {};
    const units: Unit[] = [];
    for (const r of config.routes ?? []) {
      units.push({
        name: r.name,
        key: JSON.stringify(['route', r]),
        listen: r.listen,
        create: () => new Route({ ...r, ...common, ...resolver }),
      });
    }
    for (const g of config.egressGateways ?? []) {
      units.push({
        name: g.name,
        key: JSON.stringify(['egress', g]),
        listen: g.listen,
        create: () => createEgressGateway({ ...g, ...common }),
      });
    }
    for (const g of config.egressGatewayServers ?? []) {
      units.push({
        name: g.name,
        key: JSON.stringify(['egress-server', g]),
        listen: g.listen,
        create: () => createEgressGatewayServer({ ...g, ...common, ...resolver }),
      });
    }
    const seen = new Set<string>();
    for (const u of units) {
      if (seen.has(u.name)) {
        throw new ProxyError(
          'ERR_PROXY_BAD_OPTION',
          `Route name "${u.name}" is used twice; every route and gateway needs a unique name.`,
        );
      }
      seen.add(u.name);
    }
    return units;
  }

  /**
   * Applies a configuration (calls are serialised), all or nothing: rejects with the first listen
   * failure after closing every listener it prepared, leaving the previous routes listening.
   */
  apply(config: RuntimeConfig): Promise<ApplyResult> {
    const run = this.chain.then(() => this.applyNow(config));
    this.chain = run.catch(() => {});
    return run;
  }

  private async applyNow(config: RuntimeConfig): Promise<ApplyResult> {
    const units = this.units(config);
    const wanted = new Map(units.map((u) => [u.name, u]));
    // Routes that go away or change (a failed one is replaced by whatever is wanted now).
    const leaving = [...this.current].filter(([name, cur]) => {
      const u = wanted.get(name);
      return !u || u.key !== cur.key || !cur.route;
    });
    const isLeaving = new Set(leaving.map(([name]) => name));
    const fresh = units.filter((u) => !this.current.has(u.name) || isLeaving.has(u.name));
    const holds = (cur: Current, u: Unit) =>
      cur.route !== undefined && mayConflict(cur.route.endpoint, u.listen);

    const prepared: Array<{ unit: Unit; route: Route }> = [];
    const stopped: Array<[string, Current]> = [];
    const bind = async (u: Unit) => {
      const route = u.create();
      await route.start();
      prepared.push({ unit: u, route });
    };
    try {
      // 1. Bind every new listener whose address no leaving route holds: the old set is untouched.
      const swaps: Unit[] = [];
      for (const u of fresh) {
        if (leaving.some(([, cur]) => holds(cur, u))) swaps.push(u);
        else await bind(u);
      }
      // 2. Swap the ones that take over an address of a leaving route: stop it, bind the new one.
      for (const u of swaps) {
        for (const entry of leaving) {
          if (!holds(entry[1], u) || stopped.includes(entry)) continue;
          await entry[1].route?.stopListening();
          stopped.push(entry);
        }
        await bind(u);
      }
    } catch (err) {
      this.log.error(
        { err: errorMessage(err), code: errorCode(err) },
        'configuration not applied: a listener failed; the previous routes keep running',
      );
      await Promise.all(prepared.map((p) => p.route.close({ drain: false })));
      await this.restore(stopped);
      throw err;
    }
    // 3. Commit: leaving routes drain in the background, prepared ones become current.
    const result: ApplyResult = { started: [], kept: [], drained: [] };
    for (const [name, cur] of leaving) {
      this.current.delete(name);
      result.drained.push(name);
      if (cur.route) this.drain(cur.route);
    }
    for (const { unit, route } of prepared) {
      this.current.set(unit.name, { key: unit.key, unit, route });
    }
    // Keep the file order of the configuration.
    const ordered = units.map((u) => [u.name, this.current.get(u.name)] as const);
    this.current.clear();
    for (const [name, cur] of ordered) {
      if (!cur) continue;
      this.current.set(name, cur);
      if (prepared.some((p) => p.unit.name === name)) result.started.push(name);
      else result.kept.push(name);
    }
    this.log.info({ ...result }, 'configuration applied');
    return result;
  }

  /** Rollback of a swap: the routes whose listener was stopped listen again (a new Route each). */
  private async restore(stopped: ReadonlyArray<[string, Current]>): Promise<void> {
    for (const [name, cur] of stopped) {
      const old = cur.route;
      if (old) this.drain(old);
      const route = cur.unit.create();
      try {
        await route.start();
        this.current.set(name, { key: cur.key, unit: cur.unit, route });
      } catch (err) {
        this.log.error(
          { route: name, err: errorMessage(err), code: errorCode(err) },
          'route could not listen again after a failed reload: it is not listening',
        );
        await route.close({ drain: false }).catch(() => {});
        this.current.set(name, {
          key: cur.key,
          unit: cur.unit,
          failure: { code: errorCode(err), error: errorMessage(err) },
        });
      }
    }
  }

  /** Stops a replaced route's listener and lets its connections finish in the background. */
  private drain(old: Route): void {
    if (this.draining.has(old)) return;
    const p = old
      .close({ drain: true, timeoutMs: this.options.drainTimeoutMs ?? 30_000 })
      .catch(() => {})
      .finally(() => this.draining.delete(old));
    this.draining.set(old, p);
  }

  /** Every configured route and gateway with its state, in configuration order. */
  status(): RouteStatus[] {
    return [...this.current].map(([name, cur]) =>
      cur.route
        ? {
            name,
            listen: describeEndpoint(cur.unit.listen),
            state: 'listening' as const,
            bound: describeEndpoint(cur.route.endpoint),
          }
        : {
            name,
            listen: describeEndpoint(cur.unit.listen),
            state: 'failed' as const,
            ...(cur.failure ?? {}),
          },
    );
  }

  /** The running routes (not the draining ones). */
  routes(): Route[] {
    return [...this.current.values()].flatMap((c) => (c.route ? [c.route] : []));
  }

  route(name: string): Route | undefined {
    return this.current.get(name)?.route;
  }

  /** Prometheus text for every route this runtime ever ran. */
  metricsText(): string {
    return this.metrics.metricsText();
  }

  snapshot(): RouteMetricsSnapshot[] {
    return this.metrics.snapshot();
  }

  /**
   * Stops every route and waits for them. With `drain: false` (or once `timeoutMs` passes) the
   * connections of routes still draining from earlier reloads are closed too.
   */
  async close(options: CloseOptions = {}): Promise<void> {
    await this.chain;
    const all = [...this.current.values()].flatMap((c) =>
      c.route ? [c.route.close(options)] : [],
    );
    this.current.clear();
    const older =
      options.drain === false
        ? [...this.draining.keys()].map((r) => r.close({ drain: false }))
        : [...this.draining.keys()].map((r) => r.close(options));
    await Promise.all([...all, ...older, ...this.draining.values()]);
  }
}

export function createProxyRuntime(options: ProxyRuntimeOptions = {}): ProxyRuntime {
  return new ProxyRuntime(options);
}
