// Two-hop chain benchmark: client -> TCP -> proxy A -> middle link -> proxy B -> TCP -> server.
// Ours (one Node process per proxy) vs the same chain built from two forking socats (-t 30 so
// socat keeps the other direction open after a half-close, as ours does).
// Prints a table of ratios measured in this one run. Usage:
//   node bench/chain.mjs [--middle unix|vsock] [--scale 1]
// --middle vsock needs real AF_VSOCK loopback (run it inside ../shared/tools/vsock-vm; see
// `pnpm bench`, which boots it). BENCH_SCALE / --scale shrinks or grows the workload.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const middle = arg('middle', 'unix');
const scale = Number(arg('scale', process.env.BENCH_SCALE ?? '1'));
const MB = 1024 * 1024;
const sizes = {
  single: Math.max(1, Math.round(256 * scale)) * MB,
  multi: Math.max(1, Math.round(64 * scale)) * MB, // per stream, 8 streams
  conns: Math.max(200, Math.round(2000 * scale)),
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
  s.on('data', (d) => {
    n += d.length;
    if (n === 1 && d[0] === 0x70) s.end('x'); // "p": connection-rate probe
    if (n === 1 && d[0] === 0x69) s.write('i'); // "i": idle connection, answered once, kept open
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

async function startOurs() {
  const mid =
    middle === 'vsock'
      ? String(20000 + Math.floor(Math.random() * 20000))
      : join(tmpdir(), `ee-bench-ours-${process.pid}.sock`);
  const script = new URL('./our-chain.mjs', import.meta.url).pathname;
  const opts = { stdio: ['ignore', 'pipe', 'inherit'] };
  const b = spawn(process.execPath, [script, 'B', middle, mid, String(targetPort)], opts);
  await waitLine(b);
  const a = spawn(process.execPath, [script, 'A', middle, mid], opts);
  const { port } = await waitLine(a);
  return {
    port,
    pids: () => [a.pid, b.pid],
    stop: () => {
      a.kill('SIGTERM');
      b.kill('SIGTERM');
    },
  };
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
  return {
    port,
    pids: () => [a.pid, b.pid],
    stop: () => {
      a.kill('SIGTERM');
      b.kill('SIGTERM');
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
  dropped.set(label, total - ok);
  return ok / (Number(process.hrtime.bigint() - t0) / 1e9);
}

function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

let idleMaxMiB = 0;

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
  const each = chain.pids().map((p) => rssKiB(p));
  idleMaxMiB = Math.max(...each) / 1024;
  const kib = each.reduce((a, b) => a + b, 0);
  for (const s of socks) s.destroy();
  await new Promise((r) => setTimeout(r, 300));
  return kib / 1024;
}

const t0 = Date.now();
const progress = (label, what) =>
  say(`  [${((Date.now() - t0) / 1000).toFixed(1)}s] ${label}: ${what}`);

async function measure(label, start) {
  const chain = await start();
  try {
    // warm-up (retried: a freshly spawned chain may still be starting its second hop)
    for (let i = 0; ; i++) {
      try {
        await throughput(chain.port, 1, MB);
        break;
      } catch (err) {
        if (i >= 5) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    progress(label, 'warm-up done');
    const single = await throughput(chain.port, 1, sizes.single);
    progress(label, `1 stream ${single.toFixed(1)} MiB/s`);
    const multi = await throughput(chain.port, 8, sizes.multi);
    progress(label, `8 streams ${multi.toFixed(1)} MiB/s`);
    const conns = await connRate(label, chain.port, sizes.conns);
    progress(label, `${conns.toFixed(0)} connections/s (${dropped.get(label)} dropped)`);
    return { chain, r: { single, multi, conns } };
  } catch (err) {
    chain.stop();
    throw err;
  }
}

say(
  `two-hop chain TCP -> proxy A -> ${middle === 'vsock' ? 'vsock (CID 1 loopback)' : 'Unix socket'} -> proxy B -> TCP (scale ${scale})`,
);
const socat = await measure('socat', startSocat);
socat.chain.stop();
const ours = await measure('ours', startOurs);
ours.chain.stop();
// RSS on a fresh pair of processes (the bulk runs above leave freed buffers in RSS)
const fresh = await startOurs();
await new Promise((r) => setTimeout(r, 300));
const rssIdle0 = fresh.pids().reduce((a, p) => a + rssKiB(p), 0) / 1024;
const rssOurs = await idleRss(fresh, sizes.idle); // both proxy processes together
fresh.stop();
target.close();

const fmt = (x, d = 1) => x.toFixed(d).padStart(10);
const row = (name, a, b, unit) =>
  say(`| ${name.padEnd(40)} | ${fmt(a)} | ${fmt(b)} | ${unit.padEnd(6)} | ${fmt(b / a, 2)}x |`);
say('');
say(
  `| ${'metric'.padEnd(40)} | ${'socat'.padStart(10)} | ${'ours'.padStart(10)} | unit   | ours/socat |`,
);
say(`|${'-'.repeat(42)}|${'-'.repeat(12)}|${'-'.repeat(12)}|--------|------------|`);
row(`bulk throughput, 1 stream (${sizes.single / MB} MiB)`, socat.r.single, ours.r.single, 'MiB/s');
row(`bulk throughput, 8 streams (8x${sizes.multi / MB} MiB)`, socat.r.multi, ours.r.multi, 'MiB/s');
row(`new connections/s (${sizes.conns}, 16 at a time)`, socat.r.conns, ours.r.conns, 'conn/s');
say(
  `| ${`RSS of our 2 proxies, 0 conns`.padEnd(40)} | ${'-'.padStart(10)} | ${fmt(rssIdle0)} | MiB    |            |`,
);
say(
  `| ${`RSS of our 2 proxies, ${sizes.idle} idle conns`.padEnd(40)} | ${'-'.padStart(10)} | ${fmt(rssOurs)} | MiB    | target <= 150 |`,
);
say(
  `| ${`RSS of the larger proxy process, ${sizes.idle} conns`.padEnd(40)} | ${'-'.padStart(10)} | ${fmt(idleMaxMiB)} | MiB    |            |`,
);
say(
  `| ${'connections dropped by the chain'.padEnd(40)} | ${fmt(dropped.get('socat') ?? 0, 0)} | ${fmt(dropped.get('ours') ?? 0, 0)} | conns  |            |`,
);
say('');
say(
  'targets (issue 5): >= 1.5x socat throughput, >= 3x socat connections/s, RSS <= 150 MB at 1000 connections',
);
process.exit(0);
