// Events this package raises from koffi's uv_poll (the emulation's handshake with a bridged VM's
// vm_<cid>.sock; kernel connects) must behave like any Node I/O callback: the nextTicks and
// promise jobs a listener queues run before the next macrotask. Node 26.4+ no longer drains
// those queues after a native addon calls into JS outside a callback scope, which is how koffi
// runs poll callbacks; before the fix, `await once(socket, 'connect')` there hung until some
// unrelated event woke the loop. The VM side runs in a child process, so that nothing else in
// this process raises an event in between.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, createEmulatedTransport, emulatedVmSocketPath } from '../src/index.js';

// answers every `CONNECT <port>\n` with `OK 4242\n` and then echoes
const VM_SIDE = `
const net = require('node:net');
const server = net.createServer((s) => {
  s.on('error', () => {});
  s.once('data', () => { s.write('OK 4242\\n'); s.pipe(s); });
});
server.listen(process.argv[1], () => process.stdout.write('ready\\n'));
`;

describe('events raised from uv_poll run as Node I/O callbacks', () => {
  let child: ChildProcess | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    if (child && child.exitCode === null) {
      child.kill();
      await once(child, 'exit');
    }
    child = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it("emulated connect into a VM: ticks and promise jobs queued in 'connect' run before the next macrotask", async () => {
    dir = mkdtempSync(join(tmpdir(), 'eecbs-'));
    const vmPath = emulatedVmSocketPath(dir, 23);
    child = spawn(process.execPath, ['-e', VM_SIDE, vmPath], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await once(child.stdout as NodeJS.ReadableStream, 'data');
    const transport = createEmulatedTransport({ dir, localCid: 2 });
    const c = connect({ cid: 23, port: 5000, transport });
    const order: string[] = [];
    await new Promise<void>((ok, ko) => {
      c.once('error', ko);
      c.once('connect', () => {
        process.nextTick(() => order.push('tick'));
        queueMicrotask(() => order.push('microtask'));
        setImmediate(() => {
          order.push('immediate');
          ok();
        });
      });
    });
    expect(order).toEqual(['tick', 'microtask', 'immediate']);
    expect(c.localPort).toBe(4242);
    // and the stream works after it: an awaited echo through the VM side
    c.write('ping');
    const [echo] = (await once(c, 'data')) as [Buffer];
    expect(echo.toString()).toBe('ping');
    c.destroy();
  });

  it('a worker that exits while a handshake is being watched ends alone (the process is not aborted)', async () => {
    // The VM side sends "OK" without its newline and then nothing: the fd stays readable, the
    // handshake open. The worker then calls process.exit(7): its watch must be closed before
    // the worker's environment goes, else koffi's callback into the dying worker aborts us.
    const dist = fileURLToPath(new URL('../dist/index.cjs', import.meta.url));
    expect(existsSync(dist), 'build first: pnpm --filter @enclave-extras/vsock build').toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'eecbs-'));
    const vmPath = emulatedVmSocketPath(dir, 24);
    child = spawn(
      process.execPath,
      [
        '-e',
        `const net = require('node:net');
         net.createServer((s) => { s.on('error', () => {}); s.once('data', () => s.write('OK')); })
           .listen(process.argv[1], () => process.stdout.write('ready\\n'));`,
        vmPath,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await once(child.stdout as NodeJS.ReadableStream, 'data');
    const worker = new Worker(
      `const { connect, createEmulatedTransport } = require(${JSON.stringify(dist)});
       const { parentPort, workerData } = require('node:worker_threads');
       const c = connect({ cid: 24, port: 1, transport: createEmulatedTransport({ dir: workerData }) });
       c.on('error', () => {});
       // "OK" has arrived (readable, no newline): leave while the watch is open
       setTimeout(() => { parentPort.postMessage('leaving'); process.exit(7); }, 200);`,
      { eval: true, workerData: dir },
    );
    const [code] = (await once(worker, 'exit')) as [number];
    expect(code).toBe(7);
  });
});
