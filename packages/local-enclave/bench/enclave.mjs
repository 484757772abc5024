#!/usr/bin/env node
// Bench of a local enclave, each number with its baseline from the same run:
// - boot to app ready: from startEnclave() to the first successful host dial of the guest app's
//   vsock port (the app: node + @enclave-extras/vsock in the image), vs the same app started as
//   a host process on the vsock emulation (spawn to first successful dial);
// - vsock throughput host -> guest (64 MiB, SHA-256 checked) and guest -> host, through the
//   vhost-user backend into the booted enclave, vs the same transfers when both ends are on the
//   emulation (Unix sockets). Ratios printed. QEMU runs under TCG here, so the guest side is slow.
// Usage: node bench/enclave.mjs [--mib N]   (pnpm bench); skips like the suite when QEMU or the
// kernel cannot be set up.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assembleDemoRootfs, localEifOptions, repo } from '../scripts/demo-image.mjs';
import { findKernel, findQemu } from '../scripts/tools.mjs';

const label = 'local-enclave bench';
const say = (line) => process.stdout.write(`${line}\n`);
const mib = Number(
  process.argv.includes('--mib') ? process.argv[process.argv.indexOf('--mib') + 1] : 64,
);
const PORT_SINK = 5000; // host -> guest: hashes what it gets, answers the hash after FIN
const PORT_SOURCE = 5001; // guest -> host: sends BENCH_MIB MiB of a fixed pattern, then FIN

const GUEST = `import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
const req = createRequire(process.env.BENCH_REQUIRE_FROM);
const { createServer } = req('@enclave-extras/vsock');
const mib = Number(process.env.BENCH_MIB);
const chunk = Buffer.alloc(1 << 20, 0x5a);
const sink = createServer({ allowHalfOpen: true }, (s) => {
  const h = createHash('sha256');
  s.on('data', (d) => h.update(d));
  s.on('end', () => s.end(h.digest('hex')));
  s.on('error', () => {});
});
const source = createServer((s) => {
  let left = mib;
  const pump = () => {
    while (left > 0) { left--; if (!s.write(chunk)) return s.once('drain', pump); }
    s.end();
  };
  s.on('error', () => {});
  pump();
});
sink.listen({ port: ${PORT_SINK} }, () => source.listen({ port: ${PORT_SOURCE} }, () => console.log('BENCH-READY')));
`;

async function main() {
  const q = findQemu((l) => say(`${label}: ${l}`));
  if (q.skip) return say(`${label} SKIPPED: ${q.skip}`);
  const k = findKernel();
  if (k.skip) return say(`${label} SKIPPED: ${k.skip}`);
  const le = await import(join(repo, 'packages/local-enclave/dist/index.js'));
  const { buildEif } = await import(join(repo, 'packages/eif/dist/index.js'));
  const vsock = await import(join(repo, 'packages/vsock/dist/index.js'));
  const tmp = mkdtempSync(join(tmpdir(), 'ee-bench-'));
  const children = [];
  try {
    const blobs = le.localBlobs({ kernel: k.kernel });
    const root = join(tmp, 'rootfs');
    assembleDemoRootfs(root, { files: { '/app/bench-guest.mjs': GUEST } });
    const eif = await buildEif(
      localEifOptions(blobs, root, {
        cmd: ['/usr/bin/node', '/app/bench-guest.mjs'],
        env: [
          'PATH=/usr/bin:/bin',
          `BENCH_MIB=${mib}`,
          'BENCH_REQUIRE_FROM=/app/apps/enclave/package.json',
        ],
        output: join(tmp, 'bench.eif'),
      }),
    );
    const payload = Buffer.alloc(mib << 20);
    for (let i = 0; i < payload.length; i += 4096) payload.writeUInt32LE(i, i);
    const expectHash = createHash('sha256').update(payload).digest('hex');
    const sourceHash = createHash('sha256')
      .update(Buffer.alloc(mib << 20, 0x5a))
      .digest('hex');

    const dial = (dir, cid, port) =>
      new Promise((resolve, reject) => {
        const s = vsock.connect({
          cid,
          port,
          allowHalfOpen: true,
          transport: vsock.createEmulatedTransport({ dir }),
        });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    const waitReady = async (dir, cid, t0, limitMs) => {
      for (;;) {
        try {
          const s = await dial(dir, cid, PORT_SOURCE);
          const ms = Date.now() - t0;
          s.destroy();
          return ms;
        } catch {
          if (Date.now() - t0 > limitMs)
            throw new Error(`no app on ${cid}:${PORT_SOURCE} within ${limitMs} ms`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    const upload = async (dir, cid) => {
      const s = await dial(dir, cid, PORT_SINK);
      const t0 = process.hrtime.bigint();
      const answer = await new Promise((resolve, reject) => {
        let got = '';
        s.on('data', (d) => {
          got += d;
        });
        s.once('end', () => resolve(got));
        s.once('error', reject);
        s.end(payload);
      });
      const sec = Number(process.hrtime.bigint() - t0) / 1e9;
      if (answer !== expectHash) throw new Error(`upload to ${cid}: hash mismatch`);
      return mib / sec;
    };
    const download = async (dir, cid) => {
      const s = await dial(dir, cid, PORT_SOURCE);
      const t0 = process.hrtime.bigint();
      const h = createHash('sha256');
      let n = 0;
      await new Promise((resolve, reject) => {
        s.on('data', (d) => {
          h.update(d);
          n += d.length;
        });
        s.once('end', resolve);
        s.once('error', reject);
      });
      const sec = Number(process.hrtime.bigint() - t0) / 1e9;
      if (n !== mib << 20 || h.digest('hex') !== sourceHash)
        throw new Error(`download from ${cid}: ${n} bytes, hash mismatch`);
      return mib / sec;
    };

    // Baseline: the same app as a host process on the emulation.
    const emuDir = join(tmp, 'emu');
    mkdirSync(emuDir);
    writeFileSync(join(tmp, 'bench-guest.mjs'), GUEST);
    let t0 = Date.now();
    const host = spawn(process.execPath, [join(tmp, 'bench-guest.mjs')], {
      env: {
        ...process.env,
        ENCLAVE_EXTRAS_VSOCK_DIR: emuDir,
        BENCH_MIB: String(mib),
        BENCH_REQUIRE_FROM: join(repo, 'apps/enclave/package.json'),
      },
      stdio: 'ignore',
    });
    children.push(host);
    const hostReady = await waitReady(emuDir, 16, t0, 30_000);
    const emuUp = await upload(emuDir, 16);
    const emuDown = await download(emuDir, 16);
    host.kill();

    // The enclave: the same app in the booted EIF, through the vhost-user backend.
    const vmDir = join(tmp, 'vm');
    mkdirSync(vmDir);
    t0 = Date.now();
    const enclave = await le.startEnclave({
      eifPath: eif.path,
      cpuCount: 2,
      memoryMiB: 1536,
      enclaveCid: 16,
      vsockDir: vmDir,
      qemu: q.qemu,
      bootTimeoutMs: 600_000,
    });
    const heartbeatMs = Date.now() - t0;
    const enclaveReady = await waitReady(vmDir, 16, t0, 600_000);
    const vmUp = await upload(vmDir, 16);
    const vmDown = await download(vmDir, 16);
    await enclave.terminate();

    const f = (x) => x.toFixed(1);
    say(
      `${label}: EIF ${(eif.size / 1048576).toFixed(1)} MiB (node + ee-enclave deps), ${mib} MiB transfers, SHA-256 checked`,
    );
    say(
      '| measure | enclave (QEMU nitro-enclave + vhost-user backend) | baseline (host process on the vsock emulation) | ratio |',
    );
    say('| --- | --- | --- | --- |');
    say(
      `| boot to app ready | ${enclaveReady} ms (heartbeat at ${heartbeatMs} ms) | ${hostReady} ms | ${f(enclaveReady / hostReady)}x slower |`,
    );
    say(`| host -> guest | ${f(vmUp)} MiB/s | ${f(emuUp)} MiB/s | ${(vmUp / emuUp).toFixed(2)} |`);
    say(
      `| guest -> host | ${f(vmDown)} MiB/s | ${f(emuDown)} MiB/s | ${(vmDown / emuDown).toFixed(2)} |`,
    );
  } finally {
    for (const c of children) c.kill();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${label}: FAILED: ${err?.stack ?? err}\n`);
  process.exit(1);
});
