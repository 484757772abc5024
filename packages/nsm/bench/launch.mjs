#!/usr/bin/env node
// `pnpm bench`: boots ../shared/tools/nsm-vm once and, inside it, runs the raw Python ioctl
// baseline (bench/raw_ioctl.py) and then the package bench (bench/run.mjs), which prints the
// requests/s table with ratios against that baseline.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(pkg, '../..');
const vm = resolve(repo, '../shared/tools/nsm-vm');
if (!existsSync(vm)) {
  console.log(`nsm bench SKIPPED: ${vm} not found (the bench needs a real /dev/nsm in nsm-vm)`);
  process.exit(0);
}
if (!existsSync(join(pkg, 'dist/index.js'))) {
  console.error('nsm bench: build first (pnpm --filter @enclave-extras/nsm build)');
  process.exit(1);
}
const seconds = process.env.NSM_BENCH_SECONDS ?? '1';
const rounds = process.env.NSM_BENCH_ROUNDS ?? '3';
const script = `set -e; python3 bench/raw_ioctl.py ${seconds} ${rounds} > /tmp/baseline.json; node bench/run.mjs /tmp/baseline.json`;
const r = spawnSync(
  vm,
  [
    '--share',
    repo,
    '--cwd',
    pkg,
    '--env',
    `NSM_BENCH_SECONDS=${seconds}`,
    '--timeout',
    '600',
    '--',
    script,
  ],
  { stdio: 'inherit' },
);
process.exit(r.status ?? 1);
