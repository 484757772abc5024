// CPU profile of the two proxy processes of the host chain under the bench's load:
//   client -> TCP -> proxy A (enclave half) -> vsock emulation (Unix sockets) -> proxy B (parent
//   half) -> TCP -> sink
// each proxy started from the built package with `node --cpu-prof` (bench/our-chain.mjs, the
// route API on both sides, as ee-enclave/ee-parent run a route). Prints the functions with the
// most self time per process, separately for a bulk phase and a connection phase (one profile
// per phase and process). The .cpuprofile files go to a temp dir (or --out DIR, e.g. to open
// them in Chrome DevTools / speedscope as flame graphs); they are not part of the repo.
//   node bench/profile.mjs [--middle emulated|unix] [--mib 256] [--conns 2000] [--top 15]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const middle = arg('middle', 'emulated');
const mib = Number(arg('mib', '256'));
const conns = Number(arg('conns', '2000'));
const top = Number(arg('top', '15'));
const outDir = arg('out', undefined) ?? mkdtempSync(join(tmpdir(), 'ee-proxy-prof-'));
const say = (s) => process.stdout.write(`${s}\n`);
const MB = 1024 * 1024;

// sink: counts an upload and answers with the count; answers "x" to a 1-byte "p" probe
const target = net.createServer({ allowHalfOpen: true }, (s) => {
  let n = 0;
  s.on('data', (d) => {
    n += d.length;
    if (n === 1 && d[0] === 0x70) s.end('x');
  });
  s.on('end', () => {
    if (!s.writableEnded) s.end(String(n));
  });
  s.on('error', () => {});
});
await new Promise((r) => target.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, r));
const targetPort = target.address().port;

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

const vsockDir = mkdtempSync(join(tmpdir(), 'ee-prof-vsock-'));
async function startChain(phase) {
  const mid =
    middle === 'unix'
      ? join(vsockDir, 'mid.sock')
      : String(20000 + Math.floor(Math.random() * 20000));
  const script = new URL('./our-chain.mjs', import.meta.url).pathname;
  const opts = {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ENCLAVE_EXTRAS_VSOCK_DIR: vsockDir },
  };
  const prof = (name) => [
    '--cpu-prof',
    `--cpu-prof-dir=${outDir}`,
    `--cpu-prof-name=${phase}-${name}.cpuprofile`,
  ];
  const b = spawn(
    process.execPath,
    [...prof('B'), script, 'B', middle, mid, String(targetPort)],
    opts,
  );
  await waitLine(b);
  const a = spawn(process.execPath, [...prof('A'), script, 'A', middle, mid], opts);
  const { port } = await waitLine(a);
  const cpu = () => [a.pid, b.pid].map(cpuMs);
  const exited = (c) => new Promise((r) => (c.exitCode !== null ? r() : c.once('exit', r)));
  return {
    port,
    cpu,
    stop: async () => {
      a.kill('SIGTERM');
      b.kill('SIGTERM');
      await Promise.all([exited(a), exited(b)]);
    },
  };
}

/** user+system CPU time of a process so far (ms), from /proc: robust on a loaded machine. */
function cpuMs(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const ms = (v) => (Number(v) * 1000) / 100; // USER_HZ (100)
  return { user: ms(f[11]), sys: ms(f[12]) };
}
/** `total (user u / sys s)` of the difference of two cpuMs readings, divided by `n`. */
function cpuText(a, b, n, unit, scale = 1) {
  const u = ((b.user - a.user) * scale) / n;
  const s = ((b.sys - a.sys) * scale) / n;
  return `${(u + s).toFixed(2)} ${unit} (user ${u.toFixed(2)} / sys ${s.toFixed(2)})`;
}

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
      if (Number(reply) !== bytes) reject(new Error(`sink got ${reply} of ${bytes} bytes`));
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

function probe(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => s.write('p'));
    s.once('data', () => done(true));
    s.once('close', () => done(false));
    s.on('error', () => done(false));
  });
}

async function connPhase(port, total, concurrency) {
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
  return ok / (Number(process.hrtime.bigint() - t0) / 1e9);
}

/** Self time per function (ms), from a .cpuprofile (samples x timeDeltas). */
function selfTimes(file) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    const n = byId.get(p.samples[i]);
    const cf = n.callFrame;
    const where = cf.url
      ? `${cf.url.replace(/^.*\/(node_modules|packages)\//, '')}:${cf.lineNumber + 1}`
      : '';
    const key = `${cf.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  }
  return { total, rows: [...self].sort((a, b) => b[1] - a[1]) };
}

function report(phase, what) {
  say(`\n== ${phase}: ${what}`);
  for (const who of ['A', 'B']) {
    const file = join(outDir, `${phase}-${who}.cpuprofile`);
    const { total, rows } = selfTimes(file);
    const busy = rows
      .filter(([k]) => k !== '(idle)' && !k.startsWith('(program)'))
      .reduce((a, [, v]) => a + v, 0);
    say(
      `-- proxy ${who} (${who === 'A' ? 'enclave half: tcp -> vsock' : 'parent half: vsock -> tcp'}): ${total.toFixed(0)} ms profiled, ${busy.toFixed(0)} ms in JS/GC/native (not idle/program)`,
    );
    for (const [k, v] of rows.slice(0, top)) {
      say(`  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${v.toFixed(0).padStart(6)} ms  ${k}`);
    }
  }
}

say(`profiling the host chain (middle: ${middle}); profiles in ${outDir}`);
{
  const chain = await startChain('bulk');
  await upload(chain.port, MB); // warm-up
  const c0 = chain.cpu();
  const t0 = process.hrtime.bigint();
  await upload(chain.port, mib * MB);
  const rate = (mib * 1e9) / Number(process.hrtime.bigint() - t0);
  const c1 = chain.cpu();
  await chain.stop();
  report(
    'bulk',
    `1 stream, ${mib} MiB, ${rate.toFixed(0)} MiB/s; CPU per MiB: A ${cpuText(c0[0], c1[0], mib, 'ms')}, B ${cpuText(c0[1], c1[1], mib, 'ms')}`,
  );
}
{
  const chain = await startChain('conns');
  await connPhase(chain.port, 50, 1); // warm-up
  const c0 = chain.cpu();
  const seq = await connPhase(chain.port, conns / 2, 1);
  const par = await connPhase(chain.port, conns, 16);
  const c1 = chain.cpu();
  await chain.stop();
  const per = (i) => cpuText(c0[i], c1[i], conns * 1.5, 'µs', 1000);
  report(
    'conns',
    `${conns / 2} sequential (${seq.toFixed(0)}/s) then ${conns} 16 at a time (${par.toFixed(0)}/s); CPU per connection: A ${per(0)}, B ${per(1)}`,
  );
}
target.close();
rmSync(vsockDir, { recursive: true, force: true });
if (!process.argv.includes('--out')) rmSync(outDir, { recursive: true, force: true });
