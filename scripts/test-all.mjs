#!/usr/bin/env node
// The project's one test command (README: `pnpm test`): build, lint, typecheck and the
// unit suites of every package through turbo, then the real-kernel suites inside the
// VMs from ../shared/tools when /dev/kvm exists, then one summary over every vitest
// JSON report that was written.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1' };
const dirs = ['packages', 'apps'].flatMap((d) =>
  readdirSync(join(root, d)).map((n) => join(root, d, n)),
);
const reports = ['.vitest-report.json', '.vitest-vm-report.json'];

function run(cmd, args) {
  console.log(`\n$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, env, stdio: 'inherit' });
  return r.status ?? 1;
}

for (const d of dirs) for (const r of reports) rmSync(join(d, r), { force: true });

// Root files (scripts/, examples/) are linted here; every package lints itself through turbo.
let failed = run('pnpm', ['exec', 'biome', 'check', 'scripts', 'examples']);
failed |= run('pnpm', ['exec', 'turbo', 'run', 'build', 'lint', 'typecheck', 'test', '--continue']);
// The packed tarballs as users get them: publint, attw, then an install by name with no compiler
// on the PATH, importing and requiring every entry point and running every bin's --help.
failed |= run('node', ['scripts/pack-check.mjs', '--install']);

const hasVmSuites = dirs.some((d) => {
  const pj = join(d, 'package.json');
  return existsSync(pj) && JSON.parse(readFileSync(pj, 'utf8')).scripts?.['test:vm'];
});
if (!hasVmSuites) {
  console.log('\nvm suites: none defined yet');
} else if (process.env.ENCLAVE_EXTRAS_SKIP_VM === '1') {
  console.log('\nvm suites: SKIPPED (ENCLAVE_EXTRAS_SKIP_VM=1)');
} else if (!existsSync('/dev/kvm')) {
  console.log(
    '\nvm suites: SKIPPED (no /dev/kvm on this machine; the real-kernel suites need the VMs in ../shared/tools)',
  );
} else if (!existsSync(join(root, '../shared/tools'))) {
  console.log('\nvm suites: SKIPPED (../shared/tools not found beside the checkout)');
} else {
  // Fill the VM caches once, one after the other (they share apt and the trixie chroot), before any
  // suite needs them: vsock-vm's Debian guest, nsm-vm's QEMU 10 (virtio-nsm, nitro-enclave machine)
  // and the enclave kernel built from it. First time on a fresh machine: ~1 + ~6 + ~14 min; cached
  // after that. A failed setup is said here; the suites that need it then skip visibly.
  const tools = join(root, '../shared/tools');
  for (const [tool, args] of [
    ['vsock-vm', ['--setup']],
    ['nsm-vm', ['--setup']],
    ['enclave-kernel', []],
  ]) {
    const t0 = Date.now();
    const r = spawnSync(join(tools, tool), args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const secs = Math.round((Date.now() - t0) / 1000);
    if (r.status === 0) console.log(`vm setup: ${tool} ready (${secs} s)`);
    else {
      const tail = String(r.stderr ?? '')
        .trim()
        .split('\n')
        .slice(-3)
        .join(' | ');
      console.log(`vm setup: ${tool} FAILED (exit ${r.status}, ${secs} s): ${tail}`);
    }
  }
  failed |= run('pnpm', ['exec', 'turbo', 'run', 'test:vm', '--concurrency=1', '--continue']);
}

// One closing summary over every report written in this run.
const totals = { passed: 0, failed: 0, skipped: 0 };
console.log('\n== test summary ==');
for (const d of dirs) {
  for (const r of reports) {
    const file = join(d, r);
    if (!existsSync(file)) continue;
    const j = JSON.parse(readFileSync(file, 'utf8'));
    const skipped = (j.numPendingTests ?? 0) + (j.numTodoTests ?? 0);
    totals.passed += j.numPassedTests;
    totals.failed += j.numFailedTests;
    totals.skipped += skipped;
    const where = r.includes('-vm-') ? 'vm' : 'unit';
    console.log(
      `${relative(root, d).padEnd(22)} ${where.padEnd(5)} ${j.numPassedTests} passed, ${j.numFailedTests} failed, ${skipped} skipped`,
    );
    // Each top-level describe block with its counts, so the log shows which suites ran where
    // (e.g. the same NSM behaviour suite against the simulator and against the real /dev/nsm).
    const groups = new Map();
    for (const f of j.testResults ?? []) {
      for (const a of f.assertionResults ?? []) {
        const key = a.ancestorTitles?.[0] ?? relative(d, f.name);
        const g = groups.get(key) ?? { passed: 0, failed: 0, skipped: 0 };
        if (a.status === 'passed') g.passed++;
        else if (a.status === 'failed') g.failed++;
        else g.skipped++;
        groups.set(key, g);
      }
    }
    for (const [key, g] of groups) {
      // worded unlike the closing "N passed, N failed" line, which must stay the only one
      const extra = `${g.failed ? ` / ${g.failed} not ok` : ''}${g.skipped ? ` / ${g.skipped} skip` : ''}`;
      console.log(`    - ${key} (${g.passed} ok${extra})`);
    }
    if (!j.success) failed = 1;
  }
}
console.log(`${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(failed || totals.failed ? 1 : 0);
