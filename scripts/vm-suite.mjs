#!/usr/bin/env node
// The one launcher of every package's real-kernel suite and VM benchmark: boots
// <repo>/../shared/tools/<vsock-vm|nsm-vm> with the repository shared and runs, inside it, the
// package's vitest VM suite (`--vitest`) or a shell command (`--run`), from the package folder
// (pnpm runs scripts there). The shared folder is always <repo>/../shared, whichever clone runs
// this, so CI's fresh clone finds it too.
//
//   node ../../scripts/vm-suite.mjs <vsock-vm|nsm-vm> <label> [options] --vitest [vitest args]
//   node ../../scripts/vm-suite.mjs <vsock-vm|nsm-vm> <label> [options] --run '<shell command>'
//
// Options: --need FILE (repeatable; relative to the repo root: say "build first" when missing),
// --timeout SEC (default 900), --mem MIB, --env NAME=VALUE (repeatable).
//
// Skips (exit 0, said on stdout) when the VM tool is absent or ENCLAVE_EXTRAS_SKIP_VM=1. Boots
// once more, and says so, when the VM did not come up (exit 125: under TCG on a loaded host the
// guest kernel's timer check can panic at boot) or when vitest's fixed 60 s worker start-up ran
// out before any test ran (a report with zero tests). Test failures are never retried. After a
// vitest run it prints one line with the suite's counts, which CI's log is read for.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const say = (line) => process.stdout.write(`${line}\n`);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const q = (s) => `'${s.replaceAll("'", "'\\''")}'`;

/**
 * Runs `command` (a bash command string) in the VM from `pkg`, booting a second time when the VM
 * did not come up (125) or `retryIf()` says the run did nothing. Returns the spawnSync result.
 */
export function runInVm({
  vm,
  label,
  pkg,
  command,
  timeout = 900,
  mem,
  env = [],
  stdout,
  retryIf,
}) {
  const tool = join(repo, '..', 'shared', 'tools', vm);
  const args = ['--share', repo, '--cwd', pkg, '--timeout', String(timeout)];
  if (mem) args.push('--mem', String(mem));
  for (const e of env) args.push('--env', e);
  args.push('--', command);
  let r;
  for (let attempt = 1; attempt <= 2; attempt++) {
    say(`${label}: booting ${tool}${attempt > 1 ? ' (second attempt)' : ''}`);
    r = spawnSync(tool, args, {
      stdio: ['ignore', stdout ?? 'inherit', 'inherit'],
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    const status = r.status ?? 1;
    if (status === 0 || attempt === 2) break;
    if (status === 125) say(`${label}: the VM did not come up (exit 125); booting once more`);
    else if (retryIf?.())
      say(`${label}: no test ran (the vitest worker did not start in time); booting once more`);
    else break;
  }
  return r;
}

/** Exits 0 with a SKIPPED line when the VM cannot run here; exits 1 when `need` files are missing. */
export function preflight({ vm, label, need = [] }) {
  const tool = join(repo, '..', 'shared', 'tools', vm);
  if (process.env.ENCLAVE_EXTRAS_SKIP_VM === '1') {
    say(`${label} SKIPPED (ENCLAVE_EXTRAS_SKIP_VM=1)`);
    process.exit(0);
  }
  if (!existsSync(tool)) {
    say(`${label} SKIPPED: ${tool} not found (the shared folder sits beside the repo)`);
    process.exit(0);
  }
  const missing = need.map((f) => join(repo, f)).filter((f) => !existsSync(f));
  if (missing.length > 0) {
    say(`${label}: build first (pnpm build); missing ${missing.join(', ')}`);
    process.exit(1);
  }
}

function main(argv) {
  const [vm, label, ...rest] = argv;
  if (!['vsock-vm', 'nsm-vm'].includes(vm) || !label) {
    say(
      'usage: vm-suite.mjs <vsock-vm|nsm-vm> <label> [--need F] [--timeout S] [--mem M] [--env N=V] (--vitest [args] | --run CMD)',
    );
    process.exit(2);
  }
  const need = [];
  const env = [];
  let timeout = 900;
  let mem;
  let i = 0;
  for (; i < rest.length; i++) {
    const a = rest[i];
    if (a === '--need') need.push(rest[++i]);
    else if (a === '--env') env.push(rest[++i]);
    else if (a === '--timeout') timeout = Number(rest[++i]);
    else if (a === '--mem') mem = Number(rest[++i]);
    else break;
  }
  const mode = rest[i];
  const tail = rest.slice(i + 1);
  if (mode !== '--vitest' && mode !== '--run') {
    say(`${label}: give --vitest [args] or --run CMD (got ${mode ?? 'nothing'})`);
    process.exit(2);
  }
  preflight({ vm, label, need });
  const pkg = process.cwd();

  if (mode === '--run') {
    const r = runInVm({ vm, label, pkg, command: tail.join(' '), timeout, mem, env });
    process.exit(r.status ?? 1);
  }

  const report = join(pkg, '.vitest-vm-report.json');
  rmSync(report, { force: true });
  let vitest;
  try {
    vitest = join(
      dirname(createRequire(join(pkg, 'package.json')).resolve('vitest/package.json')),
      'vitest.mjs',
    );
  } catch {
    say(`${label}: vitest not found; run pnpm install first`);
    process.exit(1);
  }
  const extra = [...tail, ...(process.env.EE_VM_ARGS ? process.env.EE_VM_ARGS.split(' ') : [])];
  // The VM suites use the real kernel: never the emulation a developer's shell may select.
  const command = `cd ${q(pkg)} && ENCLAVE_EXTRAS_VSOCK_DIR= node ${q(vitest)} run -c vitest.vm.config.ts ${extra.map(q).join(' ')} --reporter=default --reporter=json --outputFile.json=.vitest-vm-report.json`;
  const readReport = () => {
    try {
      return JSON.parse(readFileSync(report, 'utf8'));
    } catch {
      return undefined;
    }
  };
  const r = runInVm({
    vm,
    label,
    pkg,
    command,
    timeout,
    mem,
    env,
    retryIf: () => readReport()?.numTotalTests === 0,
  });
  const status = r.status ?? 1;
  const j = readReport();
  if (!j) {
    say(`${label}: no ${report} written (vm exit ${status})`);
    process.exit(status || 1);
  }
  say(
    `${label}: real-kernel suite ran in ${vm}: ${j.numTotalTests} tests, ${j.numPassedTests} passed, ${j.numFailedTests} failed, ${j.numPendingTests + (j.numTodoTests ?? 0)} skipped`,
  );
  process.exit(status || (j.success ? 0 : 1));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2));
}
