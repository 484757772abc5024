#!/usr/bin/env node
// `pnpm test:vm`: boots ../shared/tools/nsm-vm (QEMU virtio-nsm + the Linux nsm driver, a REAL
// /dev/nsm) and runs the device suite (vitest.vm.config.ts) inside it. The report is written to
// .vitest-vm-report.json in this package. The repo root is computed from this file, so it works
// from any clone whose shared folder sits beside it (<repo>/../shared).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const repo = resolve(pkg, '../..');
const vm = resolve(repo, '../shared/tools/nsm-vm');
if (!existsSync(vm)) {
  console.log(`nsm test:vm SKIPPED: ${vm} not found (the device suite needs nsm-vm)`);
  process.exit(0);
}
if (!existsSync(join(pkg, 'dist/index.js'))) {
  console.error('nsm test:vm: build first (pnpm --filter @enclave-extras/nsm build)');
  process.exit(1);
}
const vitest = join(
  dirname(createRequire(join(pkg, 'package.json')).resolve('vitest/package.json')),
  'vitest.mjs',
);
const args = [
  '--share',
  repo,
  '--cwd',
  pkg,
  '--timeout',
  '600',
  '--',
  'node',
  vitest,
  'run',
  '--config',
  'vitest.vm.config.ts',
  '--reporter=default',
  '--reporter=json',
  '--outputFile.json=.vitest-vm-report.json',
];
// Under TCG on a loaded machine vitest's fixed 60 s worker start-up limit can be hit before any
// test ran; that (and only that: a report with zero tests) is retried once, and said so.
function ranNoTests() {
  try {
    const report = JSON.parse(readFileSync(join(pkg, '.vitest-vm-report.json'), 'utf8'));
    return report.numTotalTests === 0;
  } catch {
    return false;
  }
}
let status = 1;
for (let attempt = 1; attempt <= 2; attempt++) {
  console.log(`$ ${vm} ${args.join(' ')}`);
  status = spawnSync(vm, args, { stdio: 'inherit' }).status ?? 1;
  if (status === 0 || !ranNoTests() || attempt === 2) break;
  console.log('nsm test:vm: the test worker did not start in time (no test ran); retrying once');
}
process.exit(status);
