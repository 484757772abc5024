#!/usr/bin/env node
// Runs this package's real-vsock suite inside <repo>/../shared/tools/vsock-vm (vsock loopback,
// CID 1). Works from any clone: the repo root and the shared folder come from this file's path.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const say = (line) => process.stdout.write(`${line}\n`);
const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(pkg, '../..');
const vm = join(repo, '..', 'shared', 'tools', 'vsock-vm');
const report = join(pkg, '.vitest-vm-report.json');

if (!existsSync(vm)) {
  say(`kms test:vm SKIPPED: ${vm} not found (the shared folder sits beside the repo)`);
  process.exit(0);
}
rmSync(report, { force: true });
const vitest = [pkg, repo]
  .map((d) => join(d, 'node_modules/.bin/vitest'))
  .find((f) => existsSync(f));
if (!vitest) {
  say('kms test:vm: vitest not found; run pnpm install first');
  process.exit(1);
}
const q = (s) => `'${s.replaceAll("'", "'\\''")}'`;
const command = `cd ${q(pkg)} && ${q(vitest)} run -c vitest.vm.config.ts --reporter=default --reporter=json --outputFile.json=.vitest-vm-report.json`;
say(`kms test:vm: booting ${vm} (vsock loopback, CID 1)`);
const r = spawnSync(vm, ['--share', repo, '--cwd', pkg, '--timeout', '600', '--', command], {
  stdio: ['ignore', 'inherit', 'inherit'],
});
const status = r.status ?? 1;
if (!existsSync(report)) {
  say(`kms test:vm: no ${report} written (vm exit ${status})`);
  process.exit(status || 1);
}
const j = JSON.parse(readFileSync(report, 'utf8'));
say(
  `kms test:vm: real AF_VSOCK suite ran in vsock-vm: ${j.numTotalTests} tests, ${j.numPassedTests} passed, ${j.numFailedTests} failed, ${j.numPendingTests} skipped`,
);
process.exit(status);
