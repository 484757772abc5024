#!/usr/bin/env node
// `pnpm test:vm`: boots ../shared/tools/nsm-vm (QEMU virtio-nsm + the Linux nsm driver, a REAL
// /dev/nsm) and runs the device suite (vitest.vm.config.ts) inside it. The report is written to
// .vitest-vm-report.json in this package. The repo root is computed from this file, so it works
// from any clone whose shared folder sits beside it (<repo>/../shared).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
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
console.log(`$ ${vm} ${args.join(' ')}`);
const r = spawnSync(vm, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
