import http from 'node:http';
import type { ProxyRuntime, TcpEndpoint } from '@enclave-extras/proxy';
import { mergePrometheus, type PrometheusSource } from '@enclave-extras/runtime';

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** The outcome of the last SIGHUP reload, shown by `/healthz`. */
export interface ReloadState {
  ok: boolean;
  /** ISO time of the reload. */
  at: string;
  code?: string;
  error?: string;
}

export interface HealthSource {
  isDraining: () => boolean;
  lastReload: () => ReloadState | undefined;
}

/**
 * `/metrics` (Prometheus text of the runtime) and `/healthz`: a JSON body with every configured
 * route and its state (`listening` with the bound address, or `failed` with the reason), and the
 * outcome of the last reload. 200 while every route listens; 503 while draining or when a route is
 * not listening (`status` is then `draining` or `degraded`).
 */
export async function startMetricsServer(
  runtime: ProxyRuntime,
  listen: TcpEndpoint,
  health: HealthSource,
  /** More metrics for the page: the time and log services, and the enclaves' pushed metrics. */
  extra?: () => PrometheusSource[],
): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(
        extra
          ? mergePrometheus([{ text: runtime.metricsText() }, ...extra()])
          : runtime.metricsText(),
      );
      return;
    }
    if (path === '/healthz') {
      const draining = health.isDraining();
      const routes = draining ? [] : runtime.status();
      const degraded = routes.some((r) => r.state !== 'listening');
      const reload = health.lastReload();
      const body = JSON.stringify({
        status: draining ? 'draining' : degraded ? 'degraded' : 'ok',
        routes,
        ...(reload ? { reload } : {}),
      });
      res
        .writeHead(draining || degraded ? 503 : 200, { 'content-type': 'application/json' })
        .end(`${body}\n`);
      return;
    }
    res
      .writeHead(404, { 'content-type': 'text/plain' })
      .end('not found: use /metrics or /healthz\n');
  });
  server.keepAliveTimeout = 1_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : listen.port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
