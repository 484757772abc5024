#!/usr/bin/env node
// Runs the proxy's real-vsock suite (`test`) or the vsock variant of the chain benchmark
// (`bench`) inside <repo>/../shared/tools/vsock-vm (vsock loopback, CID 1). The repo root and
// the shared folder are computed from this file's location, so any clone works.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const mode = process.argv[2] ?? 'test';
const say = (line) => process.stdout.write(`${line}\n`);
const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(pkg, '../..');
const vm = join(repo, '..', 'shared', 'tools', 'vsock-vm');
const report = join(pkg, '.vitest-vm-report.json');
const q = (s) => `'${s.replaceAll("'", "'\\''")}'`;

if (!existsSync(vm)) {
  say(`proxy ${mode}:vm SKIPPED: ${vm} not found (the shared folder sits beside the repo)`);
  process.exit(0);
}
if (process.env.ENCLAVE_EXTRAS_SKIP_VM === '1') {
  say(`proxy ${mode}:vm SKIPPED (ENCLAVE_EXTRAS_SKIP_VM=1)`);
  process.exit(0);
}
const needDist = [join(pkg, 'dist/index.js'), join(repo, 'packages/vsock/dist/index.js')];
const missing = needDist.filter((f) => !existsSync(f));
if (missing.length > 0) {
  say(
    `proxy ${mode}:vm: build first (pnpm --filter @enclave-extras/proxy... build); missing ${missing.join(', ')}`,
  );
  process.exit(1);
}

let command;
if (mode === 'test') {
  rmSync(report, { force: true });
  const vitest = [pkg, repo]
    .map((d) => join(d, 'node_modules/.bin/vitest'))
    .find((f) => existsSync(f));
  if (!vitest) {
    say('proxy test:vm: vitest not found; run pnpm install first');
    process.exit(1);
  }
  command = `cd ${q(pkg)} && ${q(vitest)} run -c vitest.vm.config.ts --reporter=default --reporter=json --outputFile.json=.vitest-vm-report.json`;
} else if (mode === 'bench') {
  command = `cd ${q(pkg)} && node bench/chain.mjs --middle vsock --scale ${process.env.BENCH_VM_SCALE ?? '0.05'}`;
} else {
  say('usage: node scripts/vm.mjs test|bench');
  process.exit(2);
}

// Exit 125 = the VM did not come up (under TCG on a loaded host the guest kernel's timer check
// can panic at boot): boot once more before giving up.
let status = 125;
for (let attempt = 1; attempt <= 2 && status === 125; attempt++) {
  say(
    `proxy ${mode}: booting ${vm} (vsock loopback, CID 1)${attempt > 1 ? ', second attempt' : ''}`,
  );
  const r = spawnSync(
    vm,
    ['--share', repo, '--cwd', pkg, '--timeout', '600', '--mem', '2048', '--', command],
    {
      stdio: 'inherit',
    },
  );
  status = r.status ?? 1;
}
if (mode === 'test') {
  if (!existsSync(report)) {
    say(`proxy test:vm: no ${report} written (vm exit ${status})`);
    process.exit(status || 1);
  }
  const j = JSON.parse(readFileSync(report, 'utf8'));
  say(
    `proxy test:vm: real AF_VSOCK suite ran in vsock-vm: ${j.numTotalTests} tests, ${j.numPassedTests} passed, ${j.numFailedTests} failed, ${j.numPendingTests} skipped`,
  );
}
process.exit(status);
