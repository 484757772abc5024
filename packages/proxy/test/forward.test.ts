import type net from 'node:net';
import { createEmulatedTransport } from '@enclave-extras/vsock';
import { afterEach, describe, expect, it } from 'vitest';
import { createRoute, type Route } from '../src/index.js';
import { connect, payload, readAll, sha256, tcpServer, tempDir } from './helpers.js';

// The forwarding loop reads into reused buffers and keeps a buffer out of use while a write of it
// is queued. These tests make writes queue all the time (a receiver that stops and starts) and
// check every byte, in both directions, through both proxy halves of the vsock chain.

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
async function started(r: Route): Promise<Route> {
  await r.start();
  cleanups.push(() => r.close({ drain: false }));
  return r;
}

/** Echo server that pauses after every chunk and resumes a tick later (a slow, bursty reader). */
function stutteringEcho(s: net.Socket): void {
  s.on('data', (d: Buffer) => {
    s.pause();
    const more = s.write(d);
    const resume = () => setImmediate(() => s.resume());
    if (more) resume();
    else s.once('drain', resume);
  });
  s.on('end', () => s.end());
}

/** Client that writes `data` in uneven chunks and reads the reply in stop-and-go fashion. */
async function roundTrip(port: number, data: Buffer): Promise<Buffer> {
  const c = await connect(port);
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    c.on('data', (d: Buffer) => {
      chunks.push(d);
      c.pause();
      setImmediate(() => c.resume());
    });
    c.once('end', () => resolve(Buffer.concat(chunks)));
    c.once('error', reject);
  });
  let off = 0;
  let i = 0;
  const sizes = [1, 7, 1500, 65536, 65537, 300_000, 3];
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (off < data.length) {
        const n = sizes[i++ % sizes.length] as number;
        const ok = c.write(data.subarray(off, off + n));
        off += n;
        if (!ok) return;
      }
      c.end();
      resolve();
    };
    c.on('drain', pump);
    pump();
  });
  return done;
}

describe('forwarding with reused read buffers', () => {
  it('TCP -> vsock emulation -> TCP: every byte intact both ways with stop-and-go readers on both ends', async () => {
    const t = tempDir();
    cleanups.push(() => t.cleanup());
    const vsock = { transport: createEmulatedTransport({ dir: t.dir }) };
    const up = await tcpServer(stutteringEcho);
    cleanups.push(() => up.close());
    const parent = await started(
      createRoute({
        name: 'parent',
        listen: 'vsock:any:8100',
        dial: `tcp:127.0.0.1:${up.port}`,
        vsock,
      }),
    );
    const enclave = await started(
      createRoute({ name: 'enclave', listen: 'tcp:127.0.0.1:0', dial: 'vsock:3:8100', vsock }),
    );
    const port = (enclave.endpoint as { port: number }).port;
    const inputs = [payload(8 * 1024 * 1024), payload(1), payload(200_000), payload(3_000_001)];
    const outputs = await Promise.all(inputs.map((d) => roundTrip(port, d)));
    outputs.forEach((out, i) => {
      const input = inputs[i] as Buffer;
      expect(out.length).toBe(input.length);
      expect(sha256(out)).toBe(sha256(input));
    });
    const total = inputs.reduce((a, b) => a + b.length, 0);
    expect(enclave.metrics.bytesUp).toBe(total);
    expect(enclave.metrics.bytesDown).toBe(total);
    expect(parent.metrics.bytesUp).toBe(total);
  });

  it('bytes sent together with the connection (before the dial completes) come first', async () => {
    const up = await tcpServer((s) => {
      s.on('end', () => s.end());
      s.pipe(s, { end: false });
    });
    cleanups.push(() => up.close());
    const r = await started(
      createRoute({ name: 'early', listen: 'tcp:127.0.0.1:0', dial: `tcp:127.0.0.1:${up.port}` }),
    );
    const c = await connect((r.endpoint as { port: number }).port);
    const data = payload(100_000);
    const got = readAll(c);
    c.end(data);
    const out = await got;
    expect(sha256(out)).toBe(sha256(data));
  });
});
