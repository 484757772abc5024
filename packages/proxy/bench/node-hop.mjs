// Child process of bench/chain.mjs: the "node floor" reference, the least a Node process can do
// to forward a connection (net.createServer -> net.connect, pipe() both ways; no limits, metrics,
// logging, policy or reused buffers). Our chain and this one pay the same Node costs per
// connection (two net.Socket objects, one accept, one connect, the event-loop rounds between);
// the bench prints ours/floor so what is ours and what is Node's shows in one run.
//   node node-hop.mjs <listen> <dial>     each a TCP port on 127.0.0.1 (0: any) or a Unix path
// Prints one JSON line {port} when listening; exits on SIGTERM.
import net from 'node:net';

const where = (a) => (a.startsWith('/') ? { path: a } : { host: '127.0.0.1', port: Number(a) });
const [listen, dial] = process.argv.slice(2).map(where);
const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (a) => {
  const b = net.connect({ ...dial, allowHalfOpen: true });
  a.pipe(b);
  b.pipe(a);
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  a.on('close', () => b.destroy());
  b.on('close', () => a.destroy());
});
server.listen({ ...listen, backlog: 4096 }, () => {
  const addr = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof addr === 'object' ? addr.port : 0 })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
