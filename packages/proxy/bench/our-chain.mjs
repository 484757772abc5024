// Child process of bench/chain.mjs: runs ONE proxy of the chain from the built package (like
// each socat of the baseline, and like the enclave/parent pair in real use), prints one JSON
// line when it listens, exits on SIGTERM.
//   node our-chain.mjs A <middle> <midAddr>     tcp:127.0.0.1:0 -> middle
//   node our-chain.mjs B <middle> <midAddr> <targetPort>   middle -> tcp target
import { createRoute } from '../dist/index.js';

const [role, middle, midAddr, targetPort] = process.argv.slice(2);
const limits = { maxConnections: 100_000, connectTimeoutMs: 5000, backlog: 4096 };
const route =
  role === 'B'
    ? createRoute({
        name: 'B',
        listen: middle === 'vsock' ? `vsock:any:${midAddr}` : `unix:${midAddr}`,
        dial: `tcp:127.0.0.1:${targetPort}`,
        ...limits,
      })
    : createRoute({
        name: 'A',
        listen: 'tcp:127.0.0.1:0',
        dial: middle === 'vsock' ? `vsock:1:${midAddr}` : `unix:${midAddr}`,
        ...limits,
      });
await route.start();
process.stdout.write(`${JSON.stringify({ port: route.endpoint.port ?? 0 })}\n`);
process.on('SIGTERM', () => process.exit(0));
