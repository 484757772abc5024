#!/usr/bin/env node
// Runs this package's real-kernel suite (`test`) or benchmark (`bench`) inside
// <repo>/../shared/tools/vsock-vm, where vsock loopback (CID 1) exists. Works from any clone:
// the repo root and the shared folder are computed from this file's location.
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

if (!existsSync(vm)) {
  say(`vsock ${mode}:vm SKIPPED: ${vm} not found (the shared folder sits beside the repo)`);
  process.exit(0);
}

const q = (s) => `'${s.replaceAll("'", "'\\''")}'`;
let command;
if (mode === 'test') {
  rmSync(report, { force: true });
  const vitest = [pkg, repo]
    .map((d) => join(d, 'node_modules/.bin/vitest'))
    .find((f) => existsSync(f));
  if (!vitest) {
    say('vsock test:vm: vitest not found; run pnpm install first');
    process.exit(1);
  }
  command = `cd ${q(pkg)} && ${q(vitest)} run -c vitest.vm.config.ts --reporter=default --reporter=json --outputFile.json=.vitest-vm-report.json`;
} else if (mode === 'bench') {
  if (!existsSync(join(pkg, 'dist/index.js'))) {
    say('vsock bench: dist/ missing; run `pnpm --filter @enclave-extras/vsock build` first');
    process.exit(1);
  }
  command = `cd ${q(pkg)} && node bench/throughput.mjs`;
} else if (mode === 'readme') {
  // the README's one-liner block, run as written from the repo root
  const text = readFileSync(join(pkg, 'README.md'), 'utf8');
  const m = /<!-- oneliners:start -->\s*```sh\n([\s\S]*?)```\s*<!-- oneliners:end -->/.exec(text);
  if (!m) {
    say('vsock readme: no oneliners block in README.md');
    process.exit(1);
  }
  command = `cd ${q(repo)}\n${m[1]}`;
} else {
  say(`usage: node scripts/vm.mjs test|bench|readme`);
  process.exit(2);
}

say(`vsock ${mode}: booting ${vm} (vsock loopback, CID 1)`);
const r = spawnSync(
  vm,
  ['--share', repo, '--cwd', pkg, '--timeout', '900', '--mem', '2048', '--', command],
  { stdio: ['ignore', mode === 'readme' ? 'pipe' : 'inherit', 'inherit'], encoding: 'utf8' },
);
let status = r.status ?? 1;

if (mode === 'readme') {
  process.stdout.write(r.stdout ?? '');
  const want = [
    'echo server on local(1):5000',
    'hello over vsock',
    'http over vsock from local(1):',
  ];
  const missing = want.filter((w) => !(r.stdout ?? '').includes(w));
  say(
    missing.length
      ? `vsock readme: MISSING ${JSON.stringify(missing)}`
      : 'vsock readme: all one-liners worked',
  );
  if (missing.length) status = status || 1;
}

if (mode === 'test') {
  if (!existsSync(report)) {
    say(`vsock test:vm: no ${report} written (vm exit ${status})`);
    process.exit(status || 1);
  }
  const j = JSON.parse(readFileSync(report, 'utf8'));
  say(
    `vsock test:vm: real AF_VSOCK suite ran in vsock-vm: ${j.numTotalTests} tests, ${j.numPassedTests} passed, ${j.numFailedTests} failed, ${j.numPendingTests} skipped`,
  );
}
process.exit(status);
