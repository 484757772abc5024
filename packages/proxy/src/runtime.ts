import type { EgressGatewayConfig, EgressGatewayServerConfig, RouteConfig } from './config.js';
import { errorMessage, ProxyError } from './errors.js';
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

interface Unit {
  name: string;
  key: string;
  create: () => Route;
}

/**
 * Holds the routes of a process. `apply(config)` starts new and changed listeners, keeps unchanged
 * ones (and their connections) untouched, and drains removed ones: a reload (SIGHUP) drops no
 * connection. Counters live in one registry keyed by route name, so they survive reloads.
 */
export class ProxyRuntime {
  readonly metrics = new MetricsRegistry();
  private readonly log: Logger;
  private readonly current = new Map<string, { key: string; route: Route }>();
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
        create: () => new Route({ ...r, ...common, ...resolver }),
      });
    }
    for (const g of config.egressGateways ?? []) {
      units.push({
        name: g.name,
        key: JSON.stringify(['egress', g]),
        create: () => createEgressGateway({ ...g, ...common }),
      });
    }
    for (const g of config.egressGatewayServers ?? []) {
      units.push({
        name: g.name,
        key: JSON.stringify(['egress-server', g]),
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

  /** Applies a configuration (calls are serialised). Rejects with the first listen failure after applying the rest. */
  apply(config: RuntimeConfig): Promise<ApplyResult> {
    const run = this.chain.then(() => this.applyNow(config));
    this.chain = run.catch(() => {});
    return run;
  }

  private async applyNow(config: RuntimeConfig): Promise<ApplyResult> {
    const units = this.units(config);
    const wanted = new Map(units.map((u) => [u.name, u]));
    const result: ApplyResult = { started: [], kept: [], drained: [] };
    // Stop listeners that go away or change first, so a changed route can take the same address.
    for (const [name, cur] of this.current) {
      const u = wanted.get(name);
      if (u && u.key === cur.key) continue;
      this.current.delete(name);
      result.drained.push(name);
      await cur.route.stopListening();
      const old = cur.route;
      const p = old
        .close({ drain: true, timeoutMs: this.options.drainTimeoutMs ?? 30_000 })
        .catch(() => {})
        .finally(() => this.draining.delete(old));
      this.draining.set(old, p);
    }
    let firstError: unknown;
    for (const u of units) {
      if (this.current.has(u.name)) {
        result.kept.push(u.name);
        continue;
      }
      const route = u.create();
      try {
        await route.start();
        this.current.set(u.name, { key: u.key, route });
        result.started.push(u.name);
      } catch (err) {
        this.log.error({ route: u.name, err: errorMessage(err) }, 'route failed to start');
        firstError ??= err;
      }
    }
    this.log.info({ ...result }, 'configuration applied');
    if (firstError) throw firstError;
    return result;
  }

  /** The running routes (not the draining ones). */
  routes(): Route[] {
    return [...this.current.values()].map((c) => c.route);
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
    const all = [...this.current.values()].map((c) => c.route.close(options));
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
