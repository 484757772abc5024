import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import type net from 'node:net';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createEmulatedTransport, connect as vsockConnect } from '@enclave-extras/vsock';
import { afterAll, describe, expect, it } from 'vitest';
import type { RouteMetricsSnapshot } from '../src/index.js';
import { connect, echo, tcpServer, tempDir, waitFor } from './helpers.js';

// Issue 10 item 4: under a low fd limit, one peer (enclave CID 16) opening many idle tunnels must
// not make another route fail. The routes run in a child under `prlimit --nofile=256:256`; the
// upstream echo server and the clients run here (outside the limit), over the vsock emulation.
const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist', 'index.js');
const child = join(here, 'ns', 'fd-exhaustion.child.mjs');
const canRun =
  process.platform === 'linux' &&
  existsSync('/proc/self/fd') &&
  spawnSync('prlimit', ['--nofile=256:256', 'true']).status === 0 &&
  existsSync(dist);
if (!canRun) {
  console.warn(
    `[fd-exhaustion.test] SKIPPED: need Linux, prlimit(1) and a built ${dist} (pnpm --filter @enclave-extras/proxy build)`,
  );
}

interface Snapshot {
  routes: RouteMetricsSnapshot[];
  active: number[];
  fdsOpen: number;
  refusedLines: string[];
}

describe.skipIf(!canRun)('fd exhaustion: per-peer cap and fd headroom (RLIMIT_NOFILE 256)', () => {
  const t = tempDir('ee-fd-');
  const sockets: net.Socket[] = [];
  let proc: ChildProcessWithoutNullStreams | undefined;
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    proc?.stdin.end();
    proc?.kill();
    t.cleanup();
  });

  it('a peer flooding idle tunnels is refused (counted by reason) while another route and another peer are served', async () => {
    const up = await tcpServer(echo);
    proc = spawn(
      'prlimit',
      ['--nofile=256:256', process.execPath, child, join(t.dir, 'vsock'), String(up.port)],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
    const next = async (): Promise<Record<string, unknown>> => {
      const r = await lines.next();
      if (r.done) throw new Error(`child exited: ${stderr}`);
      return JSON.parse(r.value) as Record<string, unknown>;
    };
    const snapshot = async (): Promise<Snapshot> => {
      proc?.stdin.write('snapshot\n');
      return (await next()) as unknown as Snapshot;
    };
    const ready = await next();
    expect(ready).toMatchObject({
      ready: true,
      fdLimit: '256',
      idleTimeoutMs: [600_000, 600_000, 600_000], // the default: idle tunnels do not live forever
      maxConnectionsPerPeer: [40, 1024, 0], // configured; the vsock default; TCP: no cap
    });

    const vsockDir = join(t.dir, 'vsock');
    const cid16 = createEmulatedTransport({ dir: vsockDir, localCid: 16 });
    const cid17 = createEmulatedTransport({ dir: vsockDir, localCid: 17 });
    /** A gateway tunnel: 'ok' once the parent answered ok, 'closed' when closed without an answer. */
    const tunnel = (transport: typeof cid16) =>
      new Promise<{ outcome: string; socket: net.Socket }>((resolve) => {
        const s = vsockConnect({ cid: 3, port: 8001, transport });
        sockets.push(s);
        let data = '';
        s.on('error', () => {});
        s.on('data', (d: Buffer) => {
          data += d;
          if (data.includes('\n')) resolve({ outcome: data.split('\n')[0] ?? '', socket: s });
        });
        s.on('close', () => resolve({ outcome: 'closed', socket: s }));
        s.write(`${JSON.stringify({ v: 1, host: '127.0.0.1', port: up.port })}\n`);
      });

    // 1. CID 16 opens 60 gateway tunnels and leaves them idle: 40 served, 20 refused at its cap
    const first: Array<{ outcome: string }> = [];
    for (let b = 0; b < 6; b++) {
      first.push(...(await Promise.all(Array.from({ length: 10 }, () => tunnel(cid16)))));
    }
    const outcomes = first.map((f) =>
      f.outcome === 'closed' ? 'closed' : JSON.parse(f.outcome).ok,
    );
    expect(outcomes.filter((o) => o === true)).toHaveLength(40);
    expect(outcomes.filter((o) => o === 'closed')).toHaveLength(20);

    // 2. CID 16 opens 200 idle connections on another vsock route (default limits), in batches
    const bulk: Array<{ s: net.Socket; closed: boolean }> = [];
    for (let b = 0; b < 10; b++) {
      await Promise.all(
        Array.from(
          { length: 20 },
          () =>
            new Promise<void>((resolve) => {
              const s = vsockConnect({ cid: 3, port: 8002, transport: cid16 });
              sockets.push(s);
              const entry = { s, closed: false };
              bulk.push(entry);
              s.on('error', () => {});
              s.on('close', () => {
                entry.closed = true;
              });
              s.once('connect', () => resolve());
              s.once('close', () => resolve());
            }),
        ),
      );
    }
    // every one of the 200 was either admitted (still open) or refused (closed by the parent)
    let snap = await snapshot();
    for (let i = 0; ; i++) {
      snap = await snapshot();
      const b = snap.routes.find((r) => r.route === 'bulk');
      const refused = Object.values(b?.refused ?? {}).reduce((x, y) => x + y, 0);
      if (b !== undefined && b.connectionsActive + refused === 200) break;
      if (i > 500) throw new Error(`bulk never settled: ${JSON.stringify(b)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const bulkStats = snap.routes.find((r) => r.route === 'bulk');
    expect(bulkStats?.refused.fd_headroom ?? 0).toBeGreaterThan(0);
    expect(bulkStats?.connectionsActive).toBeGreaterThanOrEqual(8);
    await waitFor(
      () => bulk.filter((e) => e.closed).length === (bulkStats?.refused.fd_headroom ?? -1),
    );

    // 3. another peer (CID 17) still gets a gateway tunnel that carries bytes
    const other17 = await tunnel(cid17);
    expect(JSON.parse(other17.outcome)).toMatchObject({ ok: true });
    const echoed17 = await new Promise<string>((resolve) => {
      other17.socket.once('data', (d: Buffer) => resolve(String(d)));
      other17.socket.write('cid17');
    });
    expect(echoed17).toBe('cid17');

    // 4. and a TCP client of another route is served
    const c = await connect(ready.otherPort as number);
    sockets.push(c);
    const echoed = await new Promise<string>((resolve) => {
      c.once('data', (d: Buffer) => resolve(String(d)));
      c.write('other');
    });
    expect(echoed).toBe('other');

    snap = await snapshot();
    const by = Object.fromEntries(snap.routes.map((r) => [r.route, r]));
    expect(by.egress?.refused).toEqual({ max_connections_per_peer: 20 });
    expect(by.egress?.connectionsActive).toBe(41);
    expect(by.other?.connectionsActive).toBe(1);
    expect(by.other?.refused).toEqual({});
    for (const r of snap.routes) expect(Object.keys(r.errors)).not.toContain('EMFILE');
    expect(snap.fdsOpen).toBeLessThan(256);
    expect(snap.refusedLines).toContain(
      'ee_proxy_connections_refused_total{route="egress",reason="max_connections_per_peer"} 20',
    );
    expect(
      snap.refusedLines.some((l) =>
        l.startsWith('ee_proxy_connections_refused_total{route="bulk",reason="fd_headroom"} '),
      ),
    ).toBe(true);
    await up.close();
  });
});
