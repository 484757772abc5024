import { processFds } from './limits.js';

/** Counters of one route. Shared by every generation of a route name across reloads. */
export class RouteMetrics {
  connectionsTotal = 0;
  connectionsActive = 0;
  bytesUp = 0;
  bytesDown = 0;
  dialRetries = 0;
  readonly refused = new Map<string, number>();
  readonly errors = new Map<string, number>();

  constructor(readonly route: string) {}

  countError(code: string): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }
  countRefused(reason: string): void {
    this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
  }

  /** A plain snapshot (for JSON health endpoints and tests). */
  snapshot(): RouteMetricsSnapshot {
    return {
      route: this.route,
      connectionsTotal: this.connectionsTotal,
      connectionsActive: this.connectionsActive,
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      dialRetries: this.dialRetries,
      refused: Object.fromEntries(this.refused),
      errors: Object.fromEntries(this.errors),
    };
  }
}

export interface RouteMetricsSnapshot {
  route: string;
  connectionsTotal: number;
  connectionsActive: number;
  /** Bytes from the accepted side to the dialled side. */
  bytesUp: number;
  /** Bytes from the dialled side back to the accepted side. */
  bytesDown: number;
  dialRetries: number;
  refused: Record<string, number>;
  errors: Record<string, number>;
}

/** Holds the RouteMetrics of many routes and renders them as Prometheus text. */
export class MetricsRegistry {
  private readonly routes = new Map<string, RouteMetrics>();

  /** The metrics of `route`, created on first use. */
  route(route: string): RouteMetrics {
    let m = this.routes.get(route);
    if (!m) {
      m = new RouteMetrics(route);
      this.routes.set(route, m);
    }
    return m;
  }

  snapshot(): RouteMetricsSnapshot[] {
    return [...this.routes.values()].map((m) => m.snapshot());
  }

  /** Prometheus text exposition format (version 0.0.4): the route counters, then the process's fd gauges. */
  metricsText(): string {
    return renderPrometheus([...this.routes.values()]) + renderFdGauges();
  }
}

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Renders route counters as Prometheus text. */
export function renderPrometheus(routes: ReadonlyArray<RouteMetrics>): string {
  const out: string[] = [];
  const family = (name: string, type: 'counter' | 'gauge', help: string, rows: string[]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...rows);
  };
  const r = (m: RouteMetrics) => `route="${esc(m.route)}"`;
  family(
    'ee_proxy_connections_total',
    'counter',
    'Connections accepted and forwarded (or attempted) per route.',
    routes.map((m) => `ee_proxy_connections_total{${r(m)}} ${m.connectionsTotal}`),
  );
  family(
    'ee_proxy_connections_active',
    'gauge',
    'Connections open now per route.',
    routes.map((m) => `ee_proxy_connections_active{${r(m)}} ${m.connectionsActive}`),
  );
  family(
    'ee_proxy_bytes_total',
    'counter',
    'Bytes forwarded per route; direction up = accepted side to dialled side.',
    routes.flatMap((m) => [
      `ee_proxy_bytes_total{${r(m)},direction="up"} ${m.bytesUp}`,
      `ee_proxy_bytes_total{${r(m)},direction="down"} ${m.bytesDown}`,
    ]),
  );
  family(
    'ee_proxy_dial_retries_total',
    'counter',
    'Dial attempts repeated after a failure.',
    routes.map((m) => `ee_proxy_dial_retries_total{${r(m)}} ${m.dialRetries}`),
  );
  family(
    'ee_proxy_connections_refused_total',
    'counter',
    'Connections refused before forwarding, by reason (max_connections, max_connections_per_peer, fd_headroom, fd_exhausted, policy, dns_timeout, dns_limit).',
    routes.flatMap((m) =>
      [...m.refused].map(
        ([k, v]) => `ee_proxy_connections_refused_total{${r(m)},reason="${esc(k)}"} ${v}`,
      ),
    ),
  );
  family(
    'ee_proxy_errors_total',
    'counter',
    'Errors per route by code (errno codes for sockets, ERR_PROXY_* otherwise).',
    routes.flatMap((m) =>
      [...m.errors].map(([k, v]) => `ee_proxy_errors_total{${r(m)},code="${esc(k)}"} ${v}`),
    ),
  );
  return `${out.join('\n')}\n`;
}

/** `ee_proxy_fds_open` / `ee_proxy_fds_limit` gauges of this process (empty where /proc is missing). */
function renderFdGauges(): string {
  const s = processFds.status();
  if (!s) return '';
  const limit = Number.isFinite(s.limit) ? String(s.limit) : '+Inf';
  return [
    '# HELP ee_proxy_fds_open File descriptors open in this process (estimate between /proc reads).',
    '# TYPE ee_proxy_fds_open gauge',
    `ee_proxy_fds_open ${s.open}`,
    '# HELP ee_proxy_fds_limit RLIMIT_NOFILE soft limit of this process.',
    '# TYPE ee_proxy_fds_limit gauge',
    `ee_proxy_fds_limit ${limit}`,
    '',
  ].join('\n');
}
