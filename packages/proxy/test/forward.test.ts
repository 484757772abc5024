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

  it('many trickling connections into stalled receivers: each gets exactly its own bytes', async () => {
    // Small paced writes keep every connection on the shared first-read buffer while the
    // receivers do not read, so the proxy's writes queue; other connections keep reading.
    const sockets: net.Socket[] = [];
    const up = await tcpServer((s) => {
      s.pause();
      sockets.push(s);
    });
    cleanups.push(() => up.close());
    const r = await started(
      createRoute({ name: 'trickle', listen: 'tcp:127.0.0.1:0', dial: `tcp:127.0.0.1:${up.port}` }),
    );
    const port = (r.endpoint as { port: number }).port;
    const n = 12;
    const perConn = 1024 * 1024;
    const inputs = Array.from({ length: n }, () => payload(perConn));
    const clients = await Promise.all(inputs.map(() => connect(port)));
    const sent = clients.map(() => 0);
    // write until every connection's proxy-side writes queue (the client's own writes stall)
    await new Promise<void>((resolve) => {
      let rounds = 0;
      const step = () => {
        let stalled = 0;
        clients.forEach((c, i) => {
          const input = inputs[i] as Buffer;
          const off = sent[i] as number;
          if (off >= input.length || c.writableLength > 0) {
            stalled++;
            return;
          }
          c.write(input.subarray(off, off + 700));
          sent[i] = off + 700;
        });
        if (stalled === n || ++rounds > 20_000) resolve();
        else setImmediate(step);
      };
      step();
    });
    // now let the receivers read everything; the clients send the rest and close
    const received = await Promise.all(
      clients.map(async (c, i) => {
        const input = inputs[i] as Buffer;
        c.end(input.subarray(Math.min(sent[i] as number, input.length)));
        return c;
      }),
    ).then(async () => {
      await new Promise<void>((resolve) => {
        const wait = () => (sockets.length >= n ? resolve() : setTimeout(wait, 10));
        wait();
      });
      return Promise.all(
        sockets.map((s) => {
          const all = readAll(s);
          s.resume();
          return all;
        }),
      );
    });
    const byHash = new Set(inputs.map((d) => sha256(d)));
    for (const got of received) {
      expect(got.length).toBe(perConn);
      expect(byHash.has(sha256(got))).toBe(true);
    }
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
