#!/usr/bin/env node
// `pnpm test:vm`: the QEMU suite (test/vm/*.vm.test.ts) on this machine (TCG), with one line of
// counts at the end; `pnpm bench` (--bench): the throughput bench (test/vm/throughput.vmbench.ts).
// Skips (exit 0, said on stdout) when QEMU, the vsock-vm kernel cache, gcc or cpio is missing, or
// ENCLAVE_EXTRAS_SKIP_VM=1.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bench = process.argv.includes('--bench');
const label = bench ? 'vhost-vsock bench' : 'vhost-vsock test:vm';
const say = (line) => process.stdout.write(`${line}\n`);
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const cache = process.env.VSOCK_VM_CACHE ?? '/var/cache/enclave-extras/vsock-vm';

let why = null;
if (process.env.ENCLAVE_EXTRAS_SKIP_VM === '1') why = 'ENCLAVE_EXTRAS_SKIP_VM=1';
else if (!process.env.VHOST_VSOCK_QEMU && !has('qemu-system-x86_64'))
  why = 'qemu-system-x86_64 not found (apt-get install qemu-system-x86, or set VHOST_VSOCK_QEMU)';
else if (!existsSync(join(cache, 'vmlinuz')))
  why = `no guest kernel in ${cache} (run ../shared/tools/vsock-vm --setup)`;
else if (!has('gcc') || !has('cpio')) why = 'gcc and cpio are needed to build the guest initramfs';
if (why) {
  say(`${label} SKIPPED: ${why}`);
  process.exit(0);
}

const vitest = join(
  dirname(createRequire(join(pkg, 'package.json')).resolve('vitest/package.json')),
  'vitest.mjs',
);
const report = join(pkg, '.vitest-vm-report.json');
rmSync(report, { force: true });
const args = ['run', '-c', 'vitest.vm.config.ts', '--reporter=default'];
if (!bench) args.push('--reporter=json', '--outputFile.json=.vitest-vm-report.json');
const r = spawnSync(
  process.execPath,
  [vitest, ...args, ...process.argv.slice(2).filter((a) => a !== '--bench')],
  {
    cwd: pkg,
    stdio: 'inherit',
    env: { ...process.env, VHV_BENCH: bench ? '1' : '', ENCLAVE_EXTRAS_VSOCK_DIR: '' },
  },
);
const status = r.status ?? 1;
if (bench) process.exit(status);
let j;
try {
  j = JSON.parse(readFileSync(report, 'utf8'));
} catch {
  say(`${label}: no report written (vitest exit ${status})`);
  process.exit(status || 1);
}
say(
  `${label}: QEMU (TCG) suite: ${j.numTotalTests} tests, ${j.numPassedTests} passed, ${j.numFailedTests} failed, ${j.numPendingTests + (j.numTodoTests ?? 0)} skipped`,
);
process.exit(status || (j.success ? 0 : 1));
