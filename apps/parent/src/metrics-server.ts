import http from 'node:http';
import type { ProxyRuntime, TcpEndpoint } from '@enclave-extras/proxy';

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** `/metrics` (Prometheus text of the runtime) and `/healthz` (200 while serving, 503 while draining). */
export async function startMetricsServer(
  runtime: ProxyRuntime,
  listen: TcpEndpoint,
  isDraining: () => boolean,
): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(runtime.metricsText());
      return;
    }
    if (path === '/healthz') {
      const draining = isDraining();
      const body = JSON.stringify({
        status: draining ? 'draining' : 'ok',
        routes: runtime.routes().map((r) => r.name),
      });
      res.writeHead(draining ? 503 : 200, { 'content-type': 'application/json' }).end(`${body}\n`);
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
