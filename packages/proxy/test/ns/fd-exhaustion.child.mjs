// The parent's routes in a process with a low fd limit (started under `prlimit --nofile=256:256`
// by fd-exhaustion.test.ts). Prints `{"ready":...}`; then answers each stdin line `snapshot`
// with one JSON line of counters; exits on stdin EOF.
import { createInterface } from 'node:readline';
import { createEmulatedTransport } from '@enclave-extras/vsock';
import { createEgressGatewayServer, createRoute, MetricsRegistry } from '../../dist/index.js';

const [vsockDir, upstreamPort] = process.argv.slice(2);
const vsock = { transport: createEmulatedTransport({ dir: vsockDir, localCid: 3 }) };
const metrics = new MetricsRegistry();
const routes = [
  // the egress gateway, with a per-peer cap lower than the default so the test stays small
  createEgressGatewayServer({
    listen: 'vsock:any:8001',
    policy: { allow: [`127.0.0.1:${upstreamPort}`] },
    maxConnectionsPerPeer: 40,
    vsock,
    metrics,
  }),
  // a vsock route with the defaults (per-peer cap 1024, fdReserve 128)
  createRoute({
    name: 'bulk',
    listen: 'vsock:any:8002',
    dial: `tcp:127.0.0.1:${upstreamPort}`,
    vsock,
    metrics,
  }),
  // another route some other client uses
  createRoute({
    name: 'other',
    listen: 'tcp:127.0.0.1:0',
    dial: `tcp:127.0.0.1:${upstreamPort}`,
    metrics,
  }),
];
for (const r of routes) await r.start();
const limits = /^Max open files\s+(\S+)/m.exec(
  (await import('node:fs')).readFileSync('/proc/self/limits', 'utf8'),
)?.[1];
process.stdout.write(
  `${JSON.stringify({
    ready: true,
    otherPort: routes[2].endpoint.port,
    fdLimit: limits,
    idleTimeoutMs: routes.map((r) => r.idleTimeoutMs),
    maxConnectionsPerPeer: routes.map((r) => r.maxConnectionsPerPeer),
  })}\n`,
);
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() !== 'snapshot') return;
  const text = metrics.metricsText();
  process.stdout.write(
    `${JSON.stringify({
      routes: metrics.snapshot(),
      active: routes.map((r) => r.active),
      fdsOpen: Number(/^ee_proxy_fds_open (\d+)/m.exec(text)?.[1]),
      refusedLines: text
        .split('\n')
        .filter((l) => l.startsWith('ee_proxy_connections_refused_total{')),
    })}\n`,
  );
});
rl.on('close', async () => {
  for (const r of routes) await r.close({ drain: false });
  process.exit(0);
});
