// Two-hop chain benchmark: client -> TCP -> proxy A -> middle link -> proxy B -> TCP -> server.
// Ours (one Node process per proxy) vs the same chain built from two forking socats (-t 30 so
// socat keeps the other direction open after a half-close, as ours does), and vs the client
// talking to the server directly over TCP loopback. Prints a table of ratios measured in this
// one run (issue 16's targets). Usage:
//   node bench/chain.mjs [--middle emulated|unix|vsock] [--scale 1] [--rounds 3]
// Host default: --middle emulated, our chain over the vsock emulation (Unix sockets in a temp
// dir, as `ee-enclave run --vsock-dir` -> `ee-parent run --vsock-dir` use it), socat over a plain
// Unix socket. --middle vsock needs real AF_VSOCK loopback (run it inside ../shared/tools/vsock-vm;
// see `pnpm bench`, which boots it). BENCH_SCALE / --scale shrinks or grows the workload; each
// figure is the median of --rounds (BENCH_ROUNDS, default 3) runs, the paths taking turns.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const middle = arg('middle', 'emulated');
const scale = Number(arg('scale', process.env.BENCH_SCALE ?? '1'));
const rounds = Math.max(1, Number(arg('rounds', process.env.BENCH_ROUNDS ?? '3')));
const MB = 1024 * 1024;
const sizes = {
  single: Math.max(1, Math.round(256 * scale)) * MB,
  multi: Math.max(1, Math.round(64 * scale)) * MB, // per stream, 8 streams
  conns: Math.max(200, Math.round(2000 * scale)),
  seqConns: Math.max(100, Math.round(1000 * scale)),
  pings: Math.max(200, Math.round(2000 * scale)),
  idle: 1000,
};
const say = (s) => process.stdout.write(`${s}\n`);

if (spawnSync('socat', ['-V']).status !== 0) {
  say('bench: socat not found (apt-get install -y socat); cannot build the baseline chain');
  process.exit(1);
}

// ---- the target server: discards uploads and reports counts; answers "x" on a 1-byte probe --
const counters = new Map();
const target = net.createServer({ allowHalfOpen: true }, (s) => {
  let n = 0;
  let echo = false;
  s.setNoDelay(true);
  s.on('data', (d) => {
    n += d.length;
    if (n === 1 && d[0] === 0x70) s.end('x'); // "p": connection-rate probe
    if (n === 1 && d[0] === 0x69) s.write('i'); // "i": idle connection, answered once, kept open
    if (echo) s.write(d);
    else if (n === d.length && d[0] === 0x65) {
      // "e" first: every later byte is echoed (request/response latency)
      echo = true;
      if (d.length > 1) s.write(d.subarray(1));
    }
  });
  s.on('end', () => {
    if (!s.writableEnded) s.end(String(n));
  });
  s.on('error', () => {});
});
await new Promise((r) => target.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, r));
const targetPort = target.address().port;
void counters;

function waitLine(child) {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) resolve(JSON.parse(buf.slice(0, i)));
    });
    child.once('exit', (code) => reject(new Error(`child exited ${code}`)));
  });
}

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen({ host: '127.0.0.1', port: 0 }, r));
  const p = s.address().port;
  await new Promise((r) => s.close(r));
  return p;
}

async function waitConnectable(port) {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`port ${port} never listened`);
}

/** A chain of two hop processes listening on `port`: its pids (for RSS) and how to stop it. */
function twoProcesses(port, a, b) {
  return {
    port,
    pids: () => [a.pid, b.pid],
    stop: () => {
      a.kill('SIGTERM');
      b.kill('SIGTERM');
    },
  };
}

const vsockDir = mkdtempSync(join(tmpdir(), 'ee-bench-vsock-'));
async function startOurs() {
  const mid =
    middle === 'unix'
      ? join(vsockDir, 'mid.sock')
      : String(20000 + Math.floor(Math.random() * 20000));
  const script = new URL('./our-chain.mjs', import.meta.url).pathname;
  const opts = {
    stdio: ['ignore', 'pipe', 'inherit'],
    env:
      middle === 'emulated' ? { ...process.env, ENCLAVE_EXTRAS_VSOCK_DIR: vsockDir } : process.env,
  };
  const b = spawn(process.execPath, [script, 'B', middle, mid, String(targetPort)], opts);
  await waitLine(b);
  const a = spawn(process.execPath, [script, 'A', middle, mid], opts);
  const { port } = await waitLine(a);
  return twoProcesses(port, a, b);
}

async function startSocat() {
  const port = await freePort();
  let b;
  let a;
  if (middle === 'vsock') {
    const vport = 40000 + Math.floor(Math.random() * 20000);
    b = spawn(
      'socat',
      ['-t', '30', `VSOCK-LISTEN:${vport},fork,reuseaddr`, `TCP:127.0.0.1:${targetPort}`],
      {
        stdio: 'ignore',
      },
    );
    await new Promise((r) => setTimeout(r, 1000)); // no vsock probe from here: give socat time to listen
    a = spawn(
      'socat',
      [
        '-t',
        '30',
        `TCP-LISTEN:${port},fork,reuseaddr,bind=127.0.0.1,backlog=4096`,
        `VSOCK-CONNECT:1:${vport}`,
      ],
      { stdio: 'ignore' },
    );
  } else {
    const path = join(tmpdir(), `ee-bench-socat-${process.pid}.sock`);
    rmSync(path, { force: true });
    b = spawn(
      'socat',
      ['-t', '30', `UNIX-LISTEN:${path},fork,unlink-early`, `TCP:127.0.0.1:${targetPort}`],
      {
        stdio: 'ignore',
      },
    );
    await new Promise((r) => setTimeout(r, 200));
    a = spawn(
      'socat',
      [
        '-t',
        '30',
        `TCP-LISTEN:${port},fork,reuseaddr,bind=127.0.0.1,backlog=4096`,
        `UNIX-CONNECT:${path}`,
      ],
      { stdio: 'ignore' },
    );
  }
  await waitConnectable(port);
  return twoProcesses(port, a, b);
}

/** The node floor (bench/node-hop.mjs): two minimal Node processes over a plain Unix socket. */
async function startFloor() {
  const path = join(vsockDir, 'floor.sock');
  rmSync(path, { force: true });
  const script = new URL('./node-hop.mjs', import.meta.url).pathname;
  const opts = { stdio: ['ignore', 'pipe', 'inherit'] };
  const b = spawn(process.execPath, [script, path, String(targetPort)], opts);
  await waitLine(b);
  const a = spawn(process.execPath, [script, '0', path], opts);
  const { port } = await waitLine(a);
  return twoProcesses(port, a, b);
}

/**
 * Our chain as users start it: `ee-enclave run` (a TCP -> vsock route, network setup off, a
 * sleeping app) and `ee-parent run` (vsock -> TCP) from the built apps, over the vsock
 * emulation, at their default log level (info: a line per connection). null when the apps are
 * not built, or in the VM (the apps' chain is measured on the host only).
 */
async function startApps() {
  const root = new URL('../../../apps/', import.meta.url).pathname;
  const enclaveCli = join(root, 'enclave/dist/cli.js');
  const parentCli = join(root, 'parent/dist/cli.js');
  if (middle !== 'emulated' || !existsSync(enclaveCli) || !existsSync(parentCli)) return null;
  const dir = mkdtempSync(join(tmpdir(), 'ee-bench-apps-'));
  const vport = 20000 + Math.floor(Math.random() * 20000);
  const port = await freePort();
  writeFileSync(
    join(dir, 'parent.yaml'),
    `routes:\n  - name: out\n    listen: vsock:any:${vport}\n    dial: tcp:127.0.0.1:${targetPort}\n`,
  );
  writeFileSync(
    join(dir, 'enclave.yaml'),
    `network:\n  setup: false\nroutes:\n  - name: out\n    listen: tcp:127.0.0.1:${port}\n    dial: vsock:3:${vport}\n`,
  );
  const vdir = join(dir, 'v');
  const opts = { stdio: ['ignore', 'ignore', 'ignore'] };
  const parent = spawn(
    process.execPath,
    [parentCli, 'run', '-c', join(dir, 'parent.yaml'), '--vsock-dir', vdir],
    opts,
  );
  const enclave = spawn(
    process.execPath,
    [
      enclaveCli,
      'run',
      '-c',
      join(dir, 'enclave.yaml'),
      '--vsock-dir',
      vdir,
      '--',
      process.execPath,
      '-e',
      'setInterval(() => {}, 1 << 30)',
    ],
    opts,
  );
  await waitConnectable(port);
  return {
    port,
    pids: () => [enclave.pid, parent.pid],
    stop: () => {
      enclave.kill('SIGTERM');
      parent.kill('SIGTERM');
      setTimeout(() => rmSync(dir, { recursive: true, force: true }), 1000).unref();
    },
  };
}

/** Uploads `bytes` on one connection; resolves when the server confirmed the count. */
function upload(port, bytes) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    let sent = 0;
    let reply = '';
    s.on('data', (d) => {
      reply += d;
    });
    s.on('end', () => {
      s.end();
      if (Number(reply) !== bytes) reject(new Error(`server got ${reply} of ${bytes} bytes`));
      else resolve();
    });
    s.on('error', reject);
    const pump = () => {
      while (sent < bytes) {
        const n = Math.min(chunk.length, bytes - sent);
        sent += n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return;
      }
      s.end();
    };
    s.on('drain', pump);
    s.once('connect', pump);
  });
}

async function throughput(port, streams, perStream) {
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: streams }, () => upload(port, perStream)));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return (streams * perStream) / MB / s; // MiB/s
}

/** One connection through the chain: send "p", wait for "x". Resolves false if the chain drops it. */
function probe(port) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok) => {
      if (done) return;
      done = true;
      s.destroy();
      resolve(ok);
    };
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(10_000, () => finish(false));
    s.once('connect', () => s.write('p'));
    s.once('data', () => finish(true));
    s.once('close', () => finish(false));
    s.on('error', () => finish(false));
  });
}

const dropped = new Map();

/** Completed connections per second; dropped ones (chain closed without an answer) are not counted. */
async function connRate(label, port, total, concurrency = 16) {
  let next = 0;
  let ok = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next++;
        if (await probe(port)) ok++;
      }
    }),
  );
  dropped.set(label, (dropped.get(label) ?? 0) + total - ok);
  return ok / (Number(process.hrtime.bigint() - t0) / 1e9);
}

/** p50/p99 (µs) of a 1-byte request/response on one open connection (the server echoes). */
function latency(port, rounds) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
    const times = [];
    let t = 0n;
    const ping = () => {
      t = process.hrtime.bigint();
      s.write('q');
    };
    s.once('connect', () => s.write('e'));
    let warm = 50;
    s.on('data', (d) => {
      for (let k = 0; k < d.length; k++) {
        if (warm > 0) warm--;
        else times.push(Number(process.hrtime.bigint() - t) / 1000);
      }
      if (times.length >= rounds) {
        s.destroy();
        times.sort((a, b) => a - b);
        const q = (f) => times[Math.min(times.length - 1, Math.floor(f * times.length))];
        resolve({ p50: q(0.5), p99: q(0.99) });
      } else ping();
    });
    s.once('error', reject);
    s.once('connect', ping);
  });
}

function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * Private memory (KiB): the process's anonymous pages (V8 heap, malloc, buffers). The rest of its
 * RSS is file pages, mostly the node binary's, which every Node process on the machine shares.
 */
function anonKiB(pid) {
  try {
    const m = /Anonymous:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** RSS (MiB) of each process of `chain` with `n` idle connections open end to end. */
async function idleRss(chain, n) {
  const socks = [];
  for (let i = 0; i < n; i += 50) {
    await Promise.all(
      Array.from(
        { length: Math.min(50, n - i) },
        () =>
          new Promise((resolve, reject) => {
            // established end to end only once the target's answer came back through the chain
            const s = net.connect({ host: '127.0.0.1', port: chain.port });
            s.once('connect', () => s.write('i'));
            s.once('data', () => {
              socks.push(s);
              resolve();
            });
            s.once('error', reject);
          }),
      ),
    );
  }
  await new Promise((r) => setTimeout(r, 500));
  const each = chain.pids().map((p) => rssKiB(p) / 1024);
  each.anon = chain.pids().map((p) => anonKiB(p) / 1024);
  for (const s of socks) s.destroy();
  await new Promise((r) => setTimeout(r, 300));
  return each;
}

const t0 = Date.now();
const progress = (label, what) =>
  say(`  [${((Date.now() - t0) / 1000).toFixed(1)}s] ${label}: ${what}`);

async function warm(label, chain, bytes = MB) {
  // retried: a freshly spawned chain may still be starting its second hop
  for (let i = 0; ; i++) {
    try {
      await throughput(chain.port, 1, bytes);
      break;
    } catch (err) {
      if (i >= 5) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  progress(label, 'warm-up done');
}

const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
};

/**
 * Every metric is measured `rounds` times on each path, the paths taking turns within a round
 * (in a rotating order), and the median is kept: on a shared machine, load that comes and goes
 * then hits every path alike instead of one of them.
 */
async function measureAll(paths) {
  const metrics = [
    ['single', (c) => throughput(c.port, 1, sizes.single), (v) => `1 stream ${v.toFixed(1)} MiB/s`],
    ['multi', (c) => throughput(c.port, 8, sizes.multi), (v) => `8 streams ${v.toFixed(1)} MiB/s`],
    [
      'seq',
      (c, label) => connRate(`${label}-seq`, c.port, sizes.seqConns, 1),
      (v) => `${v.toFixed(0)} sequential connections/s`,
    ],
    [
      'conns',
      (c, label) => connRate(label, c.port, sizes.conns, 16),
      (v) => `${v.toFixed(0)} connections/s 16 at a time`,
    ],
    ['p50', null, (v) => `1-byte round trip p50 ${v.toFixed(0)} µs`],
    ['p99', null, (v) => `p99 ${v.toFixed(0)} µs`],
  ];
  const out = Object.fromEntries(paths.map(([label]) => [label, {}]));
  const samples = Object.fromEntries(paths.map(([label]) => [label, {}]));
  const add = (label, key, v) => {
    const list = samples[label][key] ?? [];
    samples[label][key] = list;
    list.push(v);
  };
  for (const [key, fn, text] of metrics) {
    if (key === 'p99') continue;
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < paths.length; i++) {
        const [label, chain] = paths[(i + round) % paths.length];
        if (key === 'p50') {
          const lat = await latency(chain.port, sizes.pings);
          add(label, 'p50', lat.p50);
          add(label, 'p99', lat.p99);
          progress(label, `${text(lat.p50)}, p99 ${lat.p99.toFixed(0)} µs`);
        } else {
          const v = await fn(chain, label);
          add(label, key, v);
          progress(label, text(v));
        }
      }
    }
  }
  for (const [label] of paths) {
    for (const [key] of metrics) out[label][key] = median(samples[label][key]);
    out[label].lat = { p50: out[label].p50, p99: out[label].p99 };
  }
  return out;
}

const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const loadBefore = load();
say(
  `two-hop chain TCP -> proxy A -> ${middle === 'vsock' ? 'vsock (CID 1 loopback)' : middle === 'emulated' ? 'vsock emulation (Unix sockets; socat: a Unix socket)' : 'Unix socket'} -> proxy B -> TCP (scale ${scale}, median of ${rounds} rounds, load average ${loadBefore})`,
);
const directChain = { port: targetPort, pids: () => [], stop: () => {} };
const socatChain = await startSocat();
const floorChain = await startFloor();
const oursChain = await startOurs();
await warm('direct', directChain);
await warm('socat', socatChain);
await warm('floor', floorChain);
await warm('ours', oursChain);
const results = await measureAll([
  ['direct', directChain],
  ['socat', socatChain],
  ['floor', floorChain],
  ['ours', oursChain],
]);
socatChain.stop();
floorChain.stop();
oursChain.stop();
// RSS on a fresh pair of processes (the bulk runs above leave freed buffers in RSS)
const restOf = async (chain) => {
  await new Promise((r) => setTimeout(r, 500));
  const rss = chain.pids().map((p) => rssKiB(p) / 1024);
  rss.anon = chain.pids().map((p) => anonKiB(p) / 1024);
  return rss;
};
const fresh = await startOurs();
const rest = await restOf(fresh);
const idle = await idleRss(fresh, sizes.idle);
fresh.stop();
const freshFloor = await startFloor();
const floorRest = await restOf(freshFloor);
freshFloor.stop();
// the same, for the chain as users start it: ee-enclave run -> emulation -> ee-parent run. RSS
// at rest and with idle connections before any other traffic, as for the route rows above (after
// bursts of connections RSS depends on when V8 collects: up to ~30 MiB more per process until
// its memory reducer runs, seconds later).
const apps = await startApps();
let appsRest;
let appsIdle;
let appsSeq;
if (apps) {
  appsRest = await restOf(apps);
  await warm('apps', apps, 1); // one byte through: both hops are up
  appsIdle = await idleRss(apps, sizes.idle);
  await warm('apps', apps);
  const seqRuns = [];
  for (let round = 0; round < rounds; round++) {
    seqRuns.push(await connRate('apps-seq', apps.port, sizes.seqConns, 1));
    progress('apps', `${seqRuns.at(-1).toFixed(0)} sequential connections/s`);
  }
  appsSeq = median(seqRuns);
  apps.stop();
}
target.close();
rmSync(vsockDir, { recursive: true, force: true });

const sum = (a) => a.reduce((x, y) => x + y, 0);
const D = results.direct;
const S = results.socat;
const F = results.floor;
const O = results.ours;
const cell = (x, d = 1) => (typeof x === 'number' ? x.toFixed(d) : x).padStart(10);
const verdict = (ok) => (ok ? 'met' : 'NOT met');
const rows = [];
const row = (name, d, s, f, o, unit, target) => {
  const r = (a, b) =>
    unit !== 'conns' && typeof a === 'number' && typeof b === 'number' && b > 0
      ? `${(a / b).toFixed(2)}x`
      : '';
  rows.push(
    `| ${name.padEnd(44)} | ${cell(d)} | ${cell(s)} | ${cell(f)} | ${cell(o)} | ${unit.padEnd(6)} | ${r(o, s).padStart(10)} | ${r(o, d).padStart(11)} | ${r(o, f).padStart(10)} | ${target.padEnd(30)} |`,
  );
};
const pair = (v) => v.map((x) => x.toFixed(0)).join(' / ');
row(
  `bulk, 1 stream (${sizes.single / MB} MiB)`,
  D.single,
  S.single,
  F.single,
  O.single,
  'MiB/s',
  middle === 'vsock'
    ? `>=1.0x socat (vsock-vm): ${verdict(O.single >= S.single)}`
    : `>=1.5x socat, >=0.4x direct: ${verdict(O.single >= 1.5 * S.single && O.single >= 0.4 * D.single)}`,
);
row(`bulk, 8 streams (8x${sizes.multi / MB} MiB)`, D.multi, S.multi, F.multi, O.multi, 'MiB/s', '');
row(
  `sequential connections (${sizes.seqConns})`,
  D.seq,
  S.seq,
  F.seq,
  O.seq,
  'conn/s',
  `>=3x socat: ${verdict(O.seq >= 3 * S.seq)}`,
);
if (appsSeq !== undefined) {
  row(
    '  the same through ee-enclave/ee-parent run',
    '-',
    S.seq,
    F.seq,
    appsSeq,
    'conn/s',
    `>=3x socat: ${verdict(appsSeq >= 3 * S.seq)}`,
  );
}
row(
  `connections 16 at a time (${sizes.conns})`,
  D.conns,
  S.conns,
  F.conns,
  O.conns,
  'conn/s',
  `>=3x socat: ${verdict(O.conns >= 3 * S.conns)}`,
);
row('1-byte request/response p50', D.p50, S.p50, F.p50, O.p50, 'µs', 'reported beside direct');
row('1-byte request/response p99', D.p99, S.p99, F.p99, O.p99, 'µs', '');
row(
  'RSS at rest, proxy A / proxy B',
  '-',
  '-',
  pair(floorRest),
  pair(rest),
  'MiB',
  `<=60 each: ${verdict(Math.max(...rest) <= 60)}`,
);
row(
  '  of it private (anonymous), A / B',
  '-',
  '-',
  pair(floorRest.anon),
  pair(rest.anon),
  'MiB',
  '',
);
row(
  `RSS, ${sizes.idle} idle connections, A / B`,
  '-',
  '-',
  '-',
  pair(idle),
  'MiB',
  `sum ${sum(idle).toFixed(0)} <=150: ${verdict(sum(idle) <= 150)}`,
);
row('  of it private (anonymous), A / B', '-', '-', '-', pair(idle.anon), 'MiB', '');
if (appsRest && appsIdle) {
  row(
    'RSS at rest, ee-enclave run / ee-parent run',
    '-',
    '-',
    '-',
    pair(appsRest),
    'MiB',
    `<=60 each: ${verdict(Math.max(...appsRest) <= 60)}`,
  );
  row('  of it private (anonymous)', '-', '-', '-', pair(appsRest.anon), 'MiB', '');
  row(
    `  with ${sizes.idle} idle connections`,
    '-',
    '-',
    '-',
    pair(appsIdle),
    'MiB',
    `sum ${sum(appsIdle).toFixed(0)} <=150: ${verdict(sum(appsIdle) <= 150)}`,
  );
}
const drops = (prefix) =>
  [...dropped].filter(([k]) => k.startsWith(prefix)).reduce((a, [, v]) => a + v, 0);
row(
  'connections dropped by the chain',
  drops('direct'),
  drops('socat'),
  drops('floor'),
  drops('ours') + drops('apps'),
  'conns',
  '',
);
say('');
say(
  `| ${'metric'.padEnd(44)} | ${'direct'.padStart(10)} | ${'socat'.padStart(10)} | ${'node floor'.padStart(10)} | ${'ours'.padStart(10)} | unit   | ours/socat | ours/direct | ours/floor | ${'target (issue 16)'.padEnd(30)} |`,
);
say(
  `|${'-'.repeat(46)}|${'-'.repeat(12)}|${'-'.repeat(12)}|${'-'.repeat(12)}|${'-'.repeat(12)}|--------|------------|-------------|------------|${'-'.repeat(32)}|`,
);
for (const r of rows) say(r);
say('');
say(
  'node floor: two minimal Node processes (bench/node-hop.mjs: net.connect + pipe(), nothing else) over a Unix socket.',
);
say(
  'private (anonymous): the RSS a process does not share; the rest is file pages, mostly the node binary (~35 MiB in every Node process).',
);
say(
  `node ${process.version}; load average before ${loadBefore}, after ${load()} (${(Date.now() - t0) / 1000} s)`,
);
process.exit(0);
