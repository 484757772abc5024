#!/usr/bin/env node
// `pnpm test:vm` of @enclave-extras/local-enclave: the whole-enclave suite (test/enclave), which
// boots EIFs under QEMU's nitro-enclave machine on this machine (TCG; no VM around it: QEMU runs
// here and its vsock is served by the vhost-user backend over Unix sockets).
//
// Finds QEMU (ENCLAVE_EXTRAS_QEMU, else <repo>/../shared/tools/nsm-vm --qemu-path) and the
// enclave kernel (ENCLAVE_EXTRAS_KERNEL, else the enclave-kernel tool's cached bzImage; with
// ENCLAVE_EXTRAS_BUILD_KERNEL=1 the tool builds it, ~15-40 min once). Skips (exit 0, one line
// saying why) when either cannot be set up or ENCLAVE_EXTRAS_SKIP_VM=1; "build first" (exit 1)
// when a dist is missing. Ends with one line of counts, like scripts/vm-suite.mjs.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findKernel, findQemu } from './tools.mjs';

const label = 'local-enclave test:vm';
const say = (line) => process.stdout.write(`${line}\n`);
const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(pkg, '..', '..');

function skip(why) {
  say(`${label} SKIPPED: ${why}`);
  process.exit(0);
}

if (process.env.ENCLAVE_EXTRAS_SKIP_VM === '1') skip('ENCLAVE_EXTRAS_SKIP_VM=1');

const q = findQemu((line) => say(`${label}: ${line}`));
if (q.skip) skip(q.skip);
const k = findKernel();
if (k.skip) skip(k.skip);
const { qemu } = q;
const { kernel } = k;

const need = [
  'packages/local-enclave/dist/index.js',
  'packages/local-enclave/dist/supervisor.js',
  'packages/local-enclave/dist/init',
  'packages/vhost-vsock/dist/index.js',
  'packages/eif/dist/index.js',
  'packages/kms/dist/local/index.js',
  'apps/parent/dist/cli.js',
  'apps/enclave/dist/cli.js',
].filter((f) => !existsSync(join(repo, f)));
if (need.length > 0) {
  say(`${label}: build first (pnpm build); missing ${need.join(', ')}`);
  process.exit(1);
}

const report = join(pkg, '.vitest-vm-report.json');
rmSync(report, { force: true });
const vitest = join(
  dirname(createRequire(join(pkg, 'package.json')).resolve('vitest/package.json')),
  'vitest.mjs',
);
say(`${label}: QEMU ${qemu}, kernel ${kernel}`);
const r = spawnSync(
  process.execPath,
  [
    vitest,
    'run',
    '-c',
    'vitest.enclave.config.ts',
    ...process.argv.slice(2),
    '--reporter=default',
    '--reporter=json',
    '--outputFile.json=.vitest-vm-report.json',
  ],
  {
    cwd: pkg,
    stdio: 'inherit',
    // The suite runs on the emulation folder it creates: never a developer's own.
    env: {
      ...process.env,
      ENCLAVE_EXTRAS_QEMU: qemu,
      ENCLAVE_EXTRAS_KERNEL: kernel,
      ENCLAVE_EXTRAS_VSOCK_DIR: '',
    },
  },
);
let j;
try {
  j = JSON.parse(readFileSync(report, 'utf8'));
} catch {
  say(`${label}: no ${report} written (vitest exit ${r.status})`);
  process.exit(r.status || 1);
}
say(
  `${label}: whole-enclave suite ran under QEMU nitro-enclave: ${j.numTotalTests} tests, ${j.numPassedTests} passed, ${j.numFailedTests} failed, ${j.numPendingTests + (j.numTodoTests ?? 0)} skipped${!j.success && j.numFailedTests === 0 ? ' (setup failed: see above)' : ''}`,
);
process.exit(r.status || (j.success ? 0 : 1));
