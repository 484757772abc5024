// Log shipping with real sockets (the vsock emulation's Unix sockets) and a real, fast-writing
// child process: order and completeness while the parent keeps up, no blocking and counted
// drops while it stalls, drops reported when the link comes back, metrics pushed and merged.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createEmulatedTransport, emulatedSocketPath } from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createLogServer,
  LogFrameDecoder,
  type LogServer,
  mergePrometheus,
  RuntimeError,
  runApp,
  startLogForwarder,
} from '../src/index.js';
import { encodeHello, encodeRecord } from '../src/logs/protocol.js';

const N = 100_000;
// writes N numbered lines to stdout in blocks of 100, as fast as the pipe takes them, and (with
// `errEvery`) a numbered line to stderr after every errEvery-th stdout line
const app = (errEvery = 0) => `
const pad = ' ' + 'x'.repeat(40);
let i = 0;
while (i < ${N}) {
  let s = '';
  for (let k = 0; k < 100 && i < ${N}; k++) {
    s += 'line ' + (++i) + pad + '\\n';
    if (${errEvery} && i % ${errEvery || 1} === 0) process.stderr.write('err ' + i + '\\n');
  }
  process.stdout.write(s);
}
`;

interface Out {
  time: string;
  cid: number | null;
  stream?: string;
  seq?: number | [number, number];
  msg?: string;
  log?: Record<string, unknown>;
  event?: string;
  count?: number;
  streams?: Record<string, number>;
  partial?: boolean;
}

/** The parent's output: parses every JSON line; `stall()` holds writes (and so the reads). */
class Sink extends Writable {
  lines: Out[] = [];
  private held: Array<() => void> = [];
  stalled = false;
  private waiters: Array<{ test: () => boolean; resolve: () => void }> = [];
  constructor() {
    super({ highWaterMark: 16 * 1024 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void) {
    const take = () => {
      for (const l of chunk.toString('utf8').split('\n')) if (l) this.lines.push(JSON.parse(l));
      cb();
      this.waiters = this.waiters.filter((w) => {
        if (!w.test()) return true;
        w.resolve();
        return false;
      });
    };
    if (this.stalled) this.held.push(take);
    else take();
  }
  release() {
    this.stalled = false;
    const h = this.held;
    this.held = [];
    for (const f of h) f();
  }
  until(test: () => boolean): Promise<void> {
    if (test()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ test, resolve }));
  }
  records(stream?: string) {
    return this.lines.filter((l) => l.stream !== undefined && (!stream || l.stream === stream));
  }
  events(name: string) {
    return this.lines.filter((l) => l.event === name);
  }
}

let dir: string;
let parentT: ReturnType<typeof createEmulatedTransport>;
let enclaveT: ReturnType<typeof createEmulatedTransport>;
let nextPort = 7300;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-logs-'));
  parentT = createEmulatedTransport({ dir });
  enclaveT = createEmulatedTransport({ dir, localCid: 16 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function serve(sink: Sink): Promise<LogServer> {
  return createLogServer({ port: nextPort++, transport: parentT, output: sink });
}

function startApp(errEvery = 0) {
  const child = spawn(process.execPath, ['-e', app(errEvery)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, exited };
}

describe('log shipping', () => {
  // 100k lines through a child process and two sockets: minutes on a loaded 2-core machine.
  it('100k lines from a fast-writing app arrive in order, none lost, with the CID', {
    timeout: 180_000,
  }, async () => {
    const sink = new Sink();
    const server = await serve(sink);
    // the buffer holds the whole run, so what is checked (framing, order, completeness across
    // real pipes and sockets) does not depend on how two processes share the CPU
    const fwd = startLogForwarder({
      parent: { kind: 'vsock', cid: 3, port: server.port },
      vsock: { transport: enclaveT },
      bufferBytes: 32 * 1024 * 1024,
    });
    const { child, exited } = startApp(10_000);
    fwd.attach('stdout', child.stdout);
    fwd.attach('stderr', child.stderr);
    expect(await exited).toBe(0);
    expect(await fwd.close({ timeoutMs: 60_000 })).toEqual({ flushed: true });
    await sink.until(() => sink.events('disconnected').length === 1);
    await server.close();

    // each stream in its own order; one sequence over both (the order the pipes were read in)
    const out = sink.records('stdout');
    expect(out).toHaveLength(N);
    out.forEach((l, i) => {
      if (!l.msg?.startsWith(`line ${i + 1} `)) expect.fail(`stdout line ${i + 1}: ${l.msg}`);
    });
    const err = sink.records('stderr');
    expect(err.map((l) => l.msg)).toEqual(
      Array.from({ length: N / 10_000 }, (_, i) => `err ${(i + 1) * 10_000}`),
    );
    const seqs = sink.records().map((l) => l.seq as number);
    expect(seqs).toEqual(Array.from({ length: N + N / 10_000 }, (_, i) => i + 1));
    expect(out.every((l) => l.cid === 16)).toBe(true);
    expect(sink.events('dropped')).toHaveLength(0);
    expect(sink.events('connected')[0]).toMatchObject({ cid: 16 });
    expect(fwd.stats().dropped).toEqual({ runtime: 0, stdout: 0, stderr: 0 });
  });

  // Two loaded CI runs once left this flush unfinished: the forwarder waited for a 'drain' that
  // Node never emits when write() had returned true (fixed in 4cadb10, with its own test).
  it('a stalled parent never blocks the app: it finishes, drops are counted, then reported', {
    timeout: 180_000,
  }, async () => {
    const sink = new Sink();
    const server = await serve(sink);
    const fwd = startLogForwarder({
      parent: { kind: 'vsock', cid: 3, port: server.port },
      vsock: { transport: enclaveT },
      bufferBytes: 256 * 1024,
    });
    await sink.until(() => sink.events('connected').length === 1);
    sink.stalled = true; // the parent stops writing, so it stops reading the enclave
    const { child, exited } = startApp();
    fwd.attach('stdout', child.stdout);
    fwd.attach('stderr', child.stderr);
    // the app ran to its end while nothing was read on the parent side: had the forwarder
    // stopped draining its pipes, the app would block in write() and this would never resolve
    expect(await exited).toBe(0);
    expect(sink.stalled).toBe(true);
    const during = fwd.stats();
    expect(during.dropped.stdout).toBeGreaterThan(0);
    expect(during.bufferedBytes).toBeLessThanOrEqual(256 * 1024);
    expect(fwd.metricsText()).toContain(
      `ee_runtime_log_dropped_total{stream="stdout"} ${during.dropped.stdout}`,
    );

    sink.release();
    expect(await fwd.close({ timeoutMs: 60_000 })).toEqual({ flushed: true });
    await sink.until(() => sink.events('disconnected').length === 1);
    await server.close();
    const stats = fwd.stats();
    expect(stats.records.stdout + stats.dropped.stdout).toBe(N);
    const got = sink.records('stdout');
    expect(got).toHaveLength(stats.records.stdout);
    const dropped = sink.events('dropped');
    expect(dropped.reduce((n, d) => n + (d.streams?.stdout ?? 0), 0)).toBe(stats.dropped.stdout);
    // every stdout sequence number 1..N is either delivered (in order, with its own line) or
    // inside exactly one reported dropped run
    const seen = new Array<number>(N + 2).fill(0);
    let last = 0;
    for (const l of got) {
      const s = l.seq as number;
      expect(s).toBeGreaterThan(last);
      last = s;
      expect(l.msg?.startsWith(`line ${s} `)).toBe(true);
      seen[s] = (seen[s] ?? 0) + 1;
    }
    for (const d of dropped) {
      const [a, b] = d.seq as [number, number];
      for (let s = a; s <= b; s++) seen[s] = (seen[s] ?? 0) + 1;
    }
    for (let s = 1; s <= N; s++) if (seen[s] !== 1) expect.fail(`seq ${s} seen ${seen[s]} times`);
    expect((await import('../src/index.js')).mergePrometheus(server.prometheusSources())).toContain(
      `ee_parent_log_dropped_total{cid="16",stream="stdout"} ${stats.dropped.stdout}`,
    );
  });

  it('buffers while the parent is down and reports the drops when the link comes up', async () => {
    const port = nextPort++;
    const fwd = startLogForwarder({
      parent: { kind: 'vsock', cid: 3, port },
      vsock: { transport: enclaveT },
      bufferBytes: 64 * 1024,
    });
    const dest = fwd.runtimeDestination();
    for (let i = 1; i <= 1000; i++) {
      dest.write(`${JSON.stringify({ level: 30, i, msg: 'x'.repeat(80) })}\n`);
    }
    const before = fwd.stats();
    expect(before.connected).toBe(false);
    expect(before.dropped.runtime).toBeGreaterThan(0);
    expect(before.records.runtime + before.dropped.runtime).toBe(1000);
    const sink = new Sink();
    const server = await createLogServer({ port, transport: parentT, output: sink });
    await sink.until(() => sink.events('dropped').length === 1);
    expect(await fwd.close({ timeoutMs: 30_000 })).toEqual({ flushed: true });
    await sink.until(() => sink.events('disconnected').length === 1);
    await server.close();
    const recs = sink.records('runtime');
    expect(recs).toHaveLength(before.records.runtime);
    expect(recs[0]?.log).toMatchObject({ level: 30, i: 1 });
    expect(sink.events('dropped')[0]).toMatchObject({
      count: before.dropped.runtime,
      seq: [before.records.runtime + 1, 1000],
    });
  });

  it("runApp({ onOutput }) hands the app's pipes to the forwarder and still returns its status", async () => {
    const sink = new Sink();
    const server = await serve(sink);
    const fwd = startLogForwarder({
      parent: { kind: 'vsock', cid: 3, port: server.port },
      vsock: { transport: enclaveT },
    });
    const exit = await runApp({
      command: process.execPath,
      args: ['-e', "console.log('to stdout'); console.error('to stderr'); process.exit(3)"],
      signals: [],
      onOutput: (out, err) => {
        fwd.attach('stdout', out);
        fwd.attach('stderr', err);
      },
    });
    expect(exit.status).toBe(3);
    expect(await fwd.close({ timeoutMs: 30_000 })).toEqual({ flushed: true });
    await sink.until(() => sink.events('disconnected').length === 1);
    await server.close();
    expect(
      sink
        .records()
        .map((l) => [l.stream, l.msg])
        .sort(),
    ).toEqual([
      ['stderr', 'to stderr'],
      ['stdout', 'to stdout'],
    ]);
  });

  it('cuts long lines into partial records and keeps a last line without newline', async () => {
    const sink = new Sink();
    const server = await serve(sink);
    const fwd = startLogForwarder({
      parent: { kind: 'vsock', cid: 3, port: server.port },
      vsock: { transport: enclaveT },
      maxLineBytes: 1000,
    });
    const child = spawn(
      process.execPath,
      ['-e', "process.stdout.write('a'.repeat(2500) + '\\nlast')"],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    fwd.attach('stdout', child.stdout);
    fwd.attach('stderr', child.stderr);
    expect(await fwd.close({ timeoutMs: 30_000 })).toEqual({ flushed: true });
    await sink.until(() => sink.events('disconnected').length === 1);
    await server.close();
    expect(sink.records('stdout').map((l) => [l.msg?.length, l.partial ?? false])).toEqual([
      [1000, true],
      [1000, true],
      [500, false],
      [4, false],
    ]);
  });

  it('pushes the enclave metrics; the parent merges them under the CID', async () => {
    const sink = new Sink();
    const server = await serve(sink);
    const enclaveText = [
      '# HELP ee_proxy_connections_total Connections.',
      '# TYPE ee_proxy_connections_total counter',
      'ee_proxy_connections_total{route="app"} 3',
      'ee_proxy_connections_total{route="evil",cid="99"} 1',
      'not a sample line',
      '',
    ].join('\n');
    const fwd = startLogForwarder({
      parent: { kind: 'vsock', cid: 3, port: server.port },
      vsock: { transport: enclaveT },
      metrics: () => enclaveText,
    });
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (server.enclaveMetrics().length === 1) {
          clearInterval(t);
          resolve();
        }
      }, 10);
    });
    const page = mergePrometheus([
      {
        text: '# HELP ee_proxy_connections_total Parent.\n# TYPE ee_proxy_connections_total counter\nee_proxy_connections_total{route="kms"} 1\n',
      },
      ...server.prometheusSources(),
    ]);
    expect(page.match(/# TYPE ee_proxy_connections_total/g)).toHaveLength(1);
    expect(page).toContain('ee_proxy_connections_total{route="kms"} 1');
    expect(page).toContain('ee_proxy_connections_total{cid="16",route="app"} 3');
    expect(page).toContain('ee_proxy_connections_total{cid="16",route="evil"} 1');
    expect(page).not.toContain('cid="99"');
    expect(page).not.toContain('not a sample');
    await fwd.close();
    await server.close();
  });

  it('decodes frames split anywhere; a bad frame closes the connection and is counted', async () => {
    const bytes = Buffer.concat([
      encodeHello({ pid: 1, started: 'x' }),
      encodeRecord('stdout', false, 1n, 5n, Buffer.from('hi')),
    ]);
    const d = new LogFrameDecoder();
    const frames = [];
    for (const b of bytes) frames.push(...d.push(Buffer.from([b])));
    expect(frames.map((f) => f.type)).toEqual(['hello', 'record']);
    expect(() => new LogFrameDecoder().push(Buffer.from([0xff, 0xff, 0xff, 0xff, 1]))).toThrow(
      RuntimeError,
    );

    const sink = new Sink();
    const server = await serve(sink);
    const s = net.connect(emulatedSocketPath(dir, { cid: 4294967295, port: server.port }));
    const preamble = Buffer.alloc(12);
    preamble.write('EEv1', 'latin1');
    s.write(preamble);
    s.write('GET / HTTP/1.1\r\n\r\n');
    await new Promise((r) => s.once('close', r));
    expect(server.metricsText()).toContain('ee_parent_log_protocol_errors_total 1');
    await server.close();
  });

  it('small writes the parent cannot take yet are flushed once it reads again (no drain comes for them)', {
    timeout: 60_000,
  }, async () => {
    // A parent that stops reading: once the kernel buffer is full, a small write is taken (below
    // the high-water mark, so it returns true) but stays queued in the socket, and Node emits no
    // 'drain' for it. The forwarder must still go on flushing when those bytes are out.
    const path = join(dir, 'stalled-parent.sock');
    let conn: net.Socket | undefined;
    const connected = new Promise<net.Socket>((resolve) => {
      const srv = net.createServer((c) => {
        c.pause();
        conn = c;
        srv.close();
        resolve(c);
      });
      srv.listen(path);
    });
    await new Promise((r) => setTimeout(r, 10));
    const fwd = startLogForwarder({
      parent: { kind: 'unix', path },
      bufferBytes: 64 * 1024 * 1024,
    });
    const c = await connected;
    const lines = 8192;
    const pad = 'y'.repeat(1000);
    // one line per turn of the event loop, so every flush writes one small frame
    for (let i = 1; i <= lines; i++) {
      fwd.write('stdout', `small ${i} ${pad}\n`);
      await new Promise((r) => setImmediate(r));
    }
    expect(fwd.stats().dropped.stdout).toBe(0);
    const d = new LogFrameDecoder();
    const got: number[] = [];
    c.on('data', (chunk: Buffer) => {
      for (const f of d.push(chunk)) {
        if (f.type === 'record') got.push(Number(f.line.toString('utf8').split(' ')[1]));
      }
    });
    c.resume();
    expect(await fwd.close({ timeoutMs: 20_000 })).toEqual({ flushed: true });
    await new Promise((r) => (conn?.readableEnded ? r(null) : c.once('end', r)));
    expect(got).toHaveLength(lines);
    expect(got.every((n, i) => n === i + 1)).toBe(true);
  });
});
