// For the VM suite's backlog test: listens on vsock with the default backlog, says so, then keeps
// its event loop blocked for argv[3] ms, so nothing is accepted and connections wait in the
// kernel's accept queue (or are refused when it is full). Then it accepts what is queued and
// reports the count.
import { createServer, kernelTransport } from '../../dist/index.js';

const port = Number(process.argv[2]);
const blockMs = Number(process.argv[3]);
let accepted = 0;
const server = createServer({ transport: kernelTransport }, (c) => {
  accepted++;
  c.destroy();
});
server.listen({ port }, () => {
  process.stdout.write('listening\n');
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, blockMs);
  process.stdout.write('unblocked\n');
  setTimeout(() => {
    process.stdout.write(`accepted ${accepted}\n`);
    server.close();
    process.exit(0);
  }, 3000);
});
