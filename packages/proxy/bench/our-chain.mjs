// Child process of bench/chain.mjs and bench/profile.mjs: runs ONE proxy of the chain from the
// built package (like each socat of the baseline, and like the enclave/parent pair in real use),
// prints one JSON line when it listens, exits on SIGTERM.
//   node our-chain.mjs A <middle> <midAddr>     tcp:127.0.0.1:0 -> middle
//   node our-chain.mjs B <middle> <midAddr> <targetPort>   middle -> tcp target
// <middle>: unix (a plain Unix socket), vsock (kernel AF_VSOCK, CID 1 loopback) or emulated (the
// vsock emulation over Unix sockets in $ENCLAVE_EXTRAS_VSOCK_DIR, as `ee-enclave run --vsock-dir`
// and `ee-parent run --vsock-dir` use it: the enclave half dials CID 3, the parent half listens).
import { createRoute } from '../dist/index.js';

const [role, middle, midAddr, targetPort] = process.argv.slice(2);
const limits = { maxConnections: 100_000, connectTimeoutMs: 5000, backlog: 4096 };
const vsockListen = `vsock:any:${midAddr}`;
const vsockDial = middle === 'emulated' ? `vsock:3:${midAddr}` : `vsock:1:${midAddr}`;
const route =
  role === 'B'
    ? createRoute({
        name: 'B',
        listen: middle === 'unix' ? `unix:${midAddr}` : vsockListen,
        dial: `tcp:127.0.0.1:${targetPort}`,
        ...limits,
      })
    : createRoute({
        name: 'A',
        listen: 'tcp:127.0.0.1:0',
        dial: middle === 'unix' ? `unix:${midAddr}` : vsockDial,
        ...limits,
      });
await route.start();
process.stdout.write(`${JSON.stringify({ port: route.endpoint.port ?? 0 })}\n`);
process.on('SIGTERM', () => process.exit(0));
