#!/usr/bin/env node
// Build-speed bench for @enclave-extras/eif: a customer ramdisk (and a whole EIF) from a generated
// root file system, against `gzip -6 | sha384sum` of the same bytes run in the same bench, plus
// peak RSS of the build process.
//
//   node scripts/bench.mjs [--size 256MiB|1GiB|<bytes>] [--source directory|oci] [--no-eif]
//                          [--profile DIR]   (CPU profile of the ramdisk build, summarized)
//
// Each measured build runs in its own child process so its maxRSS is its own.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const out = (s) => process.stdout.write(`${s}\n`);
const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist', 'index.js');

function parseSize(s) {
  const m = /^(\d+(?:\.\d+)?)\s*(k|m|g)?i?b?$/i.exec(s);
  if (!m) throw new Error(`bad --size ${s}`);
  const mul = { k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]?.toLowerCase()] ?? 1;
  return Math.round(Number(m[1]) * mul);
}

// ---------------------------------------------------------------- child: one measured build
if (process.argv[2] === '--child') {
  const [, , , mode, sourceType, sourcePath, work] = process.argv;
  const eif = await import(dist);
  const t0 = process.hrtime.bigint();
  const source = { type: sourceType, path: sourcePath };
  let out;
  if (mode === 'ramdisk') {
    const rootfs = await eif.openRootfs(source, { tmpDir: work });
    const tIndexed = process.hrtime.bigint();
    const { cmd, env } = eif.commandAndEnv(rootfs.config, { cmd: ['/bin/app'] });
    const hash = createHash('sha384');
    let outBytes = 0;
    for await (const chunk of eif.customerRamdisk({ rootfs, cmd, env, mtime: 0 })) {
      hash.update(chunk);
      outBytes += chunk.length;
    }
    hash.digest();
    await rootfs.close();
    out = {
      totalBytes: rootfs.totalBytes,
      outBytes,
      indexSeconds: Number(tIndexed - t0) / 1e9,
    };
  } else {
    const blobs = join(work, 'blobs');
    const r = await eif.buildEif({
      kernel: join(blobs, 'bzImage'),
      cmdline: 'reboot=k panic=30 pci=off nomodules console=ttyS0',
      init: join(blobs, 'init'),
      nsmKo: join(blobs, 'nsm.ko'),
      rootfs: source,
      cmd: ['/bin/app'],
      output: join(work, 'bench.eif'),
      tmpDir: work,
    });
    out = { outBytes: statSync(join(work, 'bench.eif')).size, pcr0: r.measurements?.PCR0 };
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(
    `${JSON.stringify({ ...out, seconds, maxRssMiB: process.resourceUsage().maxRSS / 1024 })}\n`,
  );
  process.exit(0);
}

// ---------------------------------------------------------------- parent
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i === -1 ? dflt : args[i + 1];
};
const size = parseSize(opt('--size', '256MiB'));
const sourceKind = opt('--source', 'directory');
const withEif = !args.includes('--no-eif');
if (!statSync(dist, { throwIfNoEntry: false })) {
  process.stderr.write('dist/ is missing: run `pnpm --filter @enclave-extras/eif build` first\n');
  process.exit(2);
}

const work = mkdtempSync(join(tmpdir(), 'ee-eif-bench-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const tree = join(work, 'rootfs');

/** Half random, half repetitive text per 64 KiB block: roughly what binaries and libraries gzip to. */
async function generate() {
  // mostly small files, some libraries, a few large binaries (~250 KiB on average)
  const sizes = [
    ...[1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28, 30, 32].map((k) => k << 10),
    256 << 10,
    256 << 10,
    256 << 10,
    4 << 20,
  ];
  const text = Buffer.from(
    'the quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet 0123456789\n'.repeat(
      400,
    ),
  ).subarray(0, 32 << 10);
  let written = 0;
  let i = 0;
  while (written < size) {
    const dir = join(tree, `d${i % 37}`, `s${i % 11}`);
    mkdirSync(dir, { recursive: true });
    const n = Math.min(sizes[i % sizes.length], size - written);
    const fh = await open(join(dir, `f${i}`), 'w');
    let left = n;
    while (left > 0) {
      const block = Buffer.concat([randomBytes(32 << 10), text]).subarray(
        0,
        Math.min(64 << 10, left),
      );
      await fh.write(block);
      left -= block.length;
    }
    await fh.close();
    written += n;
    i++;
  }
  return i;
}

function sh(script) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`baseline failed: ${script}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const profileDir = opt('--profile', undefined);

function child(mode, sourceType, sourcePath) {
  const prof =
    profileDir !== undefined && mode === 'ramdisk'
      ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]
      : [];
  const r = spawnSync(
    process.execPath,
    [...prof, fileURLToPath(import.meta.url), '--child', mode, sourceType, sourcePath, work],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 1 << 20,
    },
  );
  if (r.status !== 0) throw new Error(`${mode} build failed (exit ${r.status})`);
  return JSON.parse(r.stdout.toString().trim().split('\n').at(-1));
}

const mib = (b) => b / (1 << 20);
const fileCount = await generate();
let sourcePath = tree;
if (sourceKind === 'oci') {
  // one gzip'd layer of the same tree (tar + gzip -1 by the system tools), in an OCI layout
  const layout = join(work, 'oci');
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  const layer = join(work, 'layer.tar.gz');
  execFileSync('bash', ['-o', 'pipefail', '-c', `tar -C ${tree} -cf - . | gzip -1 > ${layer}`]);
  const digest = execFileSync('sha256sum', [layer]).toString().split(' ')[0];
  execFileSync('mv', [layer, join(layout, 'blobs', 'sha256', digest)]);
  const blob = (obj) => {
    const b = Buffer.from(JSON.stringify(obj));
    const d = createHash('sha256').update(b).digest('hex');
    writeFileSync(join(layout, 'blobs', 'sha256', d), b);
    return { digest: `sha256:${d}`, size: b.length };
  };
  const config = blob({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/app'] } });
  const manifest = blob({
    schemaVersion: 2,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${digest}` },
    ],
  });
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest }],
    }),
  );
  sourcePath = layout;
}

// warm the page cache the same way for both sides
sh(`find ${tree} -type f -print0 | sort -z | xargs -0 cat > /dev/null`);
const baseline = sh(
  `find ${tree} -type f -print0 | sort -z | xargs -0 cat | gzip -6 | sha384sum > /dev/null`,
);
const ram = child('ramdisk', sourceKind === 'oci' ? 'oci-layout' : 'directory', sourcePath);
const baseMBs = mib(size) / baseline;
const ramMBs = mib(ram.totalBytes) / ram.seconds;

const rows = [
  [
    'baseline: cat | gzip -6 | sha384sum',
    `${baseline.toFixed(2)} s`,
    `${baseMBs.toFixed(1)} MiB/s`,
    '',
    '',
  ],
  [
    `customer ramdisk (${sourceKind}) + sha384`,
    `${ram.seconds.toFixed(2)} s`,
    `${ramMBs.toFixed(1)} MiB/s`,
    `${(ramMBs / baseMBs).toFixed(2)}x`,
    `${ram.maxRssMiB.toFixed(0)} MiB`,
  ],
];
if (withEif) {
  const blobs = join(work, 'blobs');
  mkdirSync(blobs);
  writeFileSync(join(blobs, 'bzImage'), randomBytes(8 << 20));
  writeFileSync(join(blobs, 'init'), randomBytes(742_968));
  writeFileSync(join(blobs, 'nsm.ko'), randomBytes(20_504));
  const e = child('eif', sourceKind === 'oci' ? 'oci-layout' : 'directory', sourcePath);
  const eMBs = mib(ram.totalBytes) / e.seconds;
  rows.push([
    `whole EIF via buildEif (${sourceKind})`,
    `${e.seconds.toFixed(2)} s`,
    `${eMBs.toFixed(1)} MiB/s`,
    `${(eMBs / baseMBs).toFixed(2)}x`,
    `${e.maxRssMiB.toFixed(0)} MiB`,
  ]);
}

const header = ['', 'time', 'rootfs MiB/s', 'vs baseline', 'peak RSS'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (r) =>
  r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
out(
  `eif bench: ${mib(size).toFixed(0)} MiB in ${fileCount} files, source ${sourceKind}, node ${process.version}`,
);
out(line(header));
for (const r of rows) out(line(r));
if (sourceKind === 'oci')
  out(
    `  (index + spill of the gzip'd layer: ${ram.indexSeconds.toFixed(2)} s of the ramdisk time)`,
  );
out(
  `target: >= 0.70x the baseline, peak RSS < 200 MiB -> ${(ramMBs / baseMBs).toFixed(2)}x, ${ram.maxRssMiB.toFixed(0)} MiB`,
);
if (profileDir !== undefined) {
  const { readdirSync } = await import('node:fs');
  const { summarize } = await import('./profile-summary.mjs');
  const files = readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile'));
  for (const f of files) out(summarize(join(profileDir, f), 20));
}
