#!/usr/bin/env node
// The project's one test command (README: `pnpm test`), on every maintained Node LTS line:
// 1. on the oldest (Node 22): biome, then turbo build, lint, typecheck and the unit suites of
//    every package, the packed tarballs (pack-check) and the README examples;
// 2. the unit suites again on each newer line (Node 24, 26);
// 3. the real-kernel suites inside the VMs from ../shared/tools when /dev/kvm exists, on the
//    oldest line, then the suites that rest on Node internals (vsock's pipe_wrap, koffi) on the
//    newest line too;
// then one summary over every vitest JSON report written, failures quoted at the end.
// The VM caches (vsock-vm's guest, nsm-vm's QEMU, the enclave kernel: ~20 min the first time)
// fill in the background at low priority while steps 1-2 run. EE_NODE_MATRIX=22 runs one line.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { nodeBinDir, nodeMatrix } from './node-versions.mjs';

const root = new URL('..', import.meta.url).pathname;
const baseEnv = { ...process.env, TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1' };
const dirs = ['packages', 'apps'].flatMap((d) =>
  readdirSync(join(root, d)).map((n) => join(root, d, n)),
);
const reportRe = /^\.(vitest|vitest-vm|readme-examples)-report(\.node(\d+))?\.json$/;

function run(cmd, args, env) {
  console.log(`\n$ ${cmd} ${args.join(' ')}   (node ${env.EE_NODE_VERSION})`);
  const r = spawnSync(cmd, args, { cwd: root, env, stdio: 'inherit' });
  return r.status ?? 1;
}

/** Renames this run's reports so the next Node line's run does not overwrite them. */
function keepReports(major, kind) {
  const name = kind === 'vm' ? '.vitest-vm-report.json' : '.vitest-report.json';
  for (const d of dirs) {
    const f = join(d, name);
    if (existsSync(f)) renameSync(f, join(d, name.replace('.json', `.node${major}.json`)));
  }
}

for (const d of [root, ...dirs]) {
  if (!existsSync(d)) continue;
  for (const f of readdirSync(d)) if (reportRe.test(f)) rmSync(join(d, f), { force: true });
}

let failed = 0;
const nodes = [];
for (const major of nodeMatrix()) {
  try {
    const { bin, version } = nodeBinDir(major);
    nodes.push({
      major,
      version,
      // ENCLAVE_EXTRAS_NODE_LINE is in turbo's hash (ENCLAVE_EXTRAS_*): one cache entry per line.
      env: {
        ...baseEnv,
        PATH: `${bin}:${process.env.PATH}`,
        EE_NODE_VERSION: version,
        ENCLAVE_EXTRAS_NODE_LINE: String(major),
      },
    });
  } catch (err) {
    console.log(`node ${major}: ${err.message}`);
    failed = 1;
  }
}
if (nodes.length === 0) process.exit(1);
const [oldest] = nodes;
const newest = nodes[nodes.length - 1];
console.log(
  `node lines: ${nodes.map((n) => n.version).join(', ')} (everything on ${oldest.version})`,
);

// Which VM suites can run here, decided up front so their caches can fill in the background.
const hasVmSuites = dirs.some((d) => {
  const pj = join(d, 'package.json');
  return existsSync(pj) && JSON.parse(readFileSync(pj, 'utf8')).scripts?.['test:vm'];
});
const tools = join(root, '../shared/tools');
let vmSkip;
if (!hasVmSuites) vmSkip = 'none defined yet';
else if (process.env.ENCLAVE_EXTRAS_SKIP_VM === '1') vmSkip = 'SKIPPED (ENCLAVE_EXTRAS_SKIP_VM=1)';
else if (!existsSync('/dev/kvm'))
  vmSkip =
    'SKIPPED (no /dev/kvm on this machine; the real-kernel suites need the VMs in ../shared/tools)';
else if (!existsSync(tools)) vmSkip = 'SKIPPED (../shared/tools not found beside the checkout)';

// Fill the VM caches one after the other (they share apt and the trixie chroot), niced so the
// unit suites keep the CPU they need. Each tool's status and time go to a file read at the end.
let setupDone = Promise.resolve([]);
if (!vmSkip) {
  const out = mkdtempSync(join(tmpdir(), 'ee-vm-setup-'));
  const script = [
    'for t in "vsock-vm --setup" "nsm-vm --setup" "enclave-kernel"; do',
    '  name="$(echo "$t" | cut -d" " -f1)"; s=$(date +%s)',
    `  nice -n 19 "${tools}"/$t >/dev/null 2>"${out}/$name.err"; rc=$?`,
    `  echo "$name $rc $(( $(date +%s) - s ))" >> "${out}/status"`,
    'done',
  ].join('\n');
  const child = spawn('bash', ['-c', script], { env: baseEnv, stdio: 'ignore' });
  setupDone = new Promise((resolve) => {
    child.on('exit', () => {
      const lines = existsSync(join(out, 'status'))
        ? readFileSync(join(out, 'status'), 'utf8').trim().split('\n')
        : [];
      resolve(
        lines.map((l) => {
          const [name, rc, secs] = l.split(' ');
          const err = existsSync(join(out, `${name}.err`))
            ? readFileSync(join(out, `${name}.err`), 'utf8')
                .trim()
                .split('\n')
                .slice(-3)
                .join(' | ')
            : '';
          return { name, rc: Number(rc), secs, err };
        }),
      );
    });
  });
}

// 1. Everything on the oldest line. Root files (scripts/, examples/) are linted here; every
// package lints itself through turbo.
failed |= run('pnpm', ['exec', 'biome', 'check', 'scripts', 'examples'], oldest.env);
failed |= run(
  'pnpm',
  ['exec', 'turbo', 'run', 'build', 'lint', 'typecheck', 'test', '--continue'],
  oldest.env,
);
keepReports(oldest.major, 'unit');
// The packed tarballs as users get them: publint, attw, then an install by name with no compiler
// on the PATH, importing and requiring every entry point and running every bin's --help.
// Every fenced block of the package and app READMEs, run as written against the built packages.
failed |= run(
  'node',
  [
    'scripts/readme-examples.mjs',
    '--report',
    join(root, `.readme-examples-report.node${oldest.major}.json`),
  ],
  oldest.env,
);
failed |= run('node', ['scripts/pack-check.mjs', '--install'], oldest.env);

// 2. The unit suites on the newer lines (built once, above).
for (const n of nodes.slice(1)) {
  failed |= run('pnpm', ['exec', 'turbo', 'run', 'test', '--only', '--continue'], n.env);
  keepReports(n.major, 'unit');
}

// 3. The real-kernel suites.
if (vmSkip) {
  console.log(`\nvm suites: ${vmSkip}`);
} else {
  const t0 = Date.now();
  const setup = await setupDone;
  console.log(
    `\nvm setup (in the background, waited ${Math.round((Date.now() - t0) / 1000)} s more):`,
  );
  for (const s of setup) {
    // A failed setup is said here; the suites that need it then skip visibly.
    if (s.rc === 0) console.log(`vm setup: ${s.name} ready (${s.secs} s)`);
    else console.log(`vm setup: ${s.name} FAILED (exit ${s.rc}, ${s.secs} s): ${s.err}`);
  }
  failed |= run(
    'pnpm',
    ['exec', 'turbo', 'run', 'test:vm', '--concurrency=1', '--continue'],
    oldest.env,
  );
  keepReports(oldest.major, 'vm');
  if (newest !== oldest) {
    // The real-kernel suites whose code reaches the kernel through Node internals: vsock's
    // pipe_wrap handles (AF_VSOCK in vsock-vm) and the NSM ioctl on a koffi worker (nsm-vm). The
    // vhost-user backend's koffi polling is covered on every line by its unit suite (an in-process
    // driver); the rest of the VM suites run on the oldest line only, to stay in CI's time budget.
    const internals = ['@enclave-extras/vsock', '@enclave-extras/nsm'];
    failed |= run(
      'pnpm',
      [
        'exec',
        'turbo',
        'run',
        'test:vm',
        '--only',
        '--concurrency=1',
        '--continue',
        ...internals.map((p) => `--filter=${p}`),
      ],
      newest.env,
    );
    keepReports(newest.major, 'vm');
  }
}

// One closing summary over every report written in this run: per package, kind and Node line;
// the describe blocks for the oldest line; then every failure quoted, so the end of the log says
// what broke without scrolling back.
const totals = { passed: 0, failed: 0, skipped: 0 };
const failures = [];
// biome-ignore lint/suspicious/noControlCharactersInRegex: strips ANSI colours from messages
const plain = (t) => t.replace(/\u001b\[[0-9;]*m/g, '');
console.log('\n== test summary ==');
for (const d of [...dirs, root]) {
  if (!existsSync(d)) continue;
  const files = readdirSync(d)
    .map((f) => ({ f, m: reportRe.exec(f) }))
    .filter((x) => x.m?.[3])
    .sort((a, b) => a.m[1].localeCompare(b.m[1]) || Number(a.m[3]) - Number(b.m[3]));
  for (const { f, m } of files) {
    const j = JSON.parse(readFileSync(join(d, f), 'utf8'));
    const skipped = (j.numPendingTests ?? 0) + (j.numTodoTests ?? 0);
    totals.passed += j.numPassedTests;
    totals.failed += j.numFailedTests;
    totals.skipped += skipped;
    const kind = { vitest: 'unit', 'vitest-vm': 'vm', 'readme-examples': 'blocks' }[m[1]];
    const where = `${kind} node${m[3]}`;
    console.log(
      `${(relative(root, d) || 'README examples').padEnd(22)} ${where.padEnd(12)} ${j.numPassedTests} passed, ${j.numFailedTests} failed, ${skipped} skipped`,
    );
    // Each top-level describe block with its counts, so the log shows which suites ran where
    // (e.g. the same NSM behaviour suite against the simulator and against the real /dev/nsm).
    const groups = new Map();
    for (const t of j.testResults ?? []) {
      if (t.status === 'failed' && (t.assertionResults ?? []).length === 0)
        failures.push({
          where: `${relative(root, d)} ${where}`,
          title: relative(d, t.name),
          msg: t.message ?? '',
        });
      for (const a of t.assertionResults ?? []) {
        const key = a.ancestorTitles?.[0] ?? relative(d, t.name);
        const g = groups.get(key) ?? { passed: 0, failed: 0, skipped: 0 };
        if (a.status === 'passed') g.passed++;
        else if (a.status === 'failed') {
          g.failed++;
          failures.push({
            where: `${relative(root, d)} ${where}`,
            title: [...(a.ancestorTitles ?? []), a.title].join(' > '),
            msg: (a.failureMessages ?? []).join('\n'),
          });
        } else g.skipped++;
        groups.set(key, g);
      }
    }
    if (Number(m[3]) === oldest.major || j.numFailedTests) {
      for (const [key, g] of groups) {
        // worded unlike the closing "N passed, N failed" line, which must stay the only one
        const extra = `${g.failed ? ` / ${g.failed} not ok` : ''}${g.skipped ? ` / ${g.skipped} skip` : ''}`;
        console.log(`    - ${key} (${g.passed} ok${extra})`);
      }
    }
    if (!j.success) failed = 1;
  }
}
if (failures.length) {
  console.log(`\n== failures (${failures.length}) ==`);
  for (const x of failures) {
    console.log(`FAIL [${x.where}] ${x.title}`);
    const lines = plain(x.msg)
      .split('\n')
      .filter((l) => l.trim());
    for (const l of lines.slice(0, 25)) console.log(`    ${l.slice(0, 400)}`);
    if (lines.length > 25) console.log(`    ... ${lines.length - 25} more lines`);
  }
}
console.log(`${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(failed || totals.failed ? 1 : 0);
