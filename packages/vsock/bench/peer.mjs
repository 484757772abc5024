// One side of a benchmark run, as its own process (like socat and the Python peer):
//   node bench/peer.mjs sink PORT            -> prints "ready", then {"bytes","seconds"} per stream
//   node bench/peer.mjs send PORT BYTES      -> writes BYTES in 64 KiB chunks to CID 1
//   node bench/peer.mjs accept PORT          -> accepts and closes connections forever
//   node bench/peer.mjs connect PORT COUNT   -> sequential connect+close, prints {"count","seconds"}
//   unix-sink / unix-send / unix-accept / unix-connect: the same over node:net Unix sockets
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { CID_LOCAL, connect, createServer, kernelTransport } from '../dist/index.js';

const [mode, portText, arg] = process.argv.slice(2);
const port = Number(portText);
const transport = kernelTransport;
// "unix-*" modes: the same loops over node:net Unix sockets, Node's own cost as a reference.
const unixPath = `/tmp/vsock-bench-${port}.sock`;
const dialUnix = () => net.connect({ path: unixPath });
const serveUnix = (fn) =>
  net.createServer(fn).listen({ path: unixPath, backlog: 1024 }, () => console.log('ready'));

function sink(s) {
  const t0 = performance.now();
  let bytes = 0;
  s.on('data', (d) => {
    bytes += d.length;
  });
  s.on('end', () => {
    console.log(JSON.stringify({ bytes, seconds: (performance.now() - t0) / 1000 }));
    process.exit(0);
  });
}

async function send(s) {
  let left = Number(arg);
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  await once(s, 'connect');
  while (left > 0) {
    const n = Math.min(chunk.length, left);
    left -= n;
    if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await once(s, 'drain');
  }
  s.end();
  await once(s, 'close');
}

async function connectLoop(dial) {
  const count = Number(arg);
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const s = dial();
    await once(s, 'connect');
    s.destroy();
  }
  console.log(JSON.stringify({ count, seconds: (performance.now() - t0) / 1000 }));
}

if (mode === 'unix-sink') serveUnix(sink);
else if (mode === 'unix-send') await send(dialUnix());
else if (mode === 'unix-accept') serveUnix((s) => s.destroy());
else if (mode === 'unix-connect') await connectLoop(dialUnix);
else if (mode === 'sink') {
  createServer({ transport }, sink).listen({ port }, () => console.log('ready'));
} else if (mode === 'send') {
  await send(connect({ cid: CID_LOCAL, port, transport }));
} else if (mode === 'accept') {
  createServer({ transport }, (s) => s.destroy()).listen({ port, backlog: 1024 }, () =>
    console.log('ready'),
  );
} else if (mode === 'connect') {
  await connectLoop(() => connect({ cid: CID_LOCAL, port, transport }));
} else {
  console.error('usage: peer.mjs sink|send|accept|connect PORT [ARG]');
  process.exit(2);
}
