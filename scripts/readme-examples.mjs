#!/usr/bin/env node
// Runs every fenced code block of the package and app READMEs (packages/*/README.md,
// apps/*/README.md) as written, against the built packages (`pnpm build` first), the way a user
// following the README would: the blocks of one README run in order in one fresh directory.
//
//   node scripts/readme-examples.mjs [README.md ...]
//
// - `sh` blocks run with `bash -e`. An install block (`pnpm add ...`, `npm install [-g] ...`) is
//   "run" against this workspace: each named package is linked into the directory's
//   node_modules (our packages from packages/ and apps/, third-party ones from the workspace's
//   install), bins into node_modules/.bin (on PATH, as `pnpm exec`/`npx` see them). A name that
//   neither provides fails the block. So an example that imports a package its README does not
//   tell you to install fails here, as it would for a user under pnpm.
// - `js` blocks run as ES modules with node; `ts` blocks are transpiled with the workspace's
//   TypeScript (types erased, nothing else changed) and run the same way.
// - Hardware is replaced by the development stand-ins: ENCLAVE_EXTRAS_VSOCK_DIR points at a
//   vsock emulation folder in the directory (nothing ever reaches the kernel's vsock), HOME and
//   XDG_STATE_HOME point into it (NSM simulator state, ~/...).
// - A block must end by itself (exit 0) within the time limit, except:
// Directives, an HTML comment right before the block (blank lines and other comments between
// are fine), visible in the README's source:
//   <!-- readme-examples: skip because REASON -->   not run; counted as skipped, REASON printed
//   <!-- readme-examples: file NAME -->             written to NAME for the blocks after it
//                                                   (a config file: the block that reads it checks it)
//   <!-- readme-examples: daemon until REGEX -->    a long-running command: passes once REGEX (quotes
//                                                   around it are dropped)
//                                                   appears in its output while it runs; then stopped
// `text` blocks (output listings) are not code: they are counted and listed, not run.
// Ends with `readme-examples: N ok, M not ok, K skipped`; exit 1 when any block failed.
// --report FILE also writes the results as a vitest-shaped JSON report (pnpm test's summary).
import { spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';

const root = resolve(new URL('..', import.meta.url).pathname);
const TIMEOUT_MS = Number(process.env.README_EXAMPLES_TIMEOUT_MS ?? 90_000);
const DAEMON_TIMEOUT_MS = 60_000;
const ts = createRequire(join(root, 'package.json'))('typescript');

// The workspace: our packages by name (directory, bins), and where third-party packages live.
const workspace = new Map();
for (const group of ['packages', 'apps']) {
  for (const name of readdirSync(join(root, group))) {
    const dir = join(root, group, name);
    if (!existsSync(join(dir, 'package.json'))) continue;
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    const bins = typeof pkg.bin === 'string' ? { [pkg.name.split('/').pop()]: pkg.bin } : pkg.bin;
    workspace.set(pkg.name, { dir, bins: bins ?? {}, built: Boolean(pkg.scripts?.build) });
  }
}
function thirdParty(name) {
  for (const { dir } of workspace.values()) {
    const p = join(dir, 'node_modules', name);
    if (existsSync(join(p, 'package.json'))) return p;
  }
  const p = join(root, 'node_modules', name);
  return existsSync(join(p, 'package.json')) ? p : undefined;
}

function parseBlocks(text) {
  const lines = text.split('\n');
  const blocks = [];
  let directive;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const d = /^<!--\s*readme-examples:\s*(.*?)\s*-->\s*$/.exec(line);
    if (d) {
      directive = d[1];
      continue;
    }
    const open = /^```(\S*)\s*$/.exec(line);
    if (!open) {
      if (line.trim() !== '' && !/^<!--.*-->\s*$/.test(line)) directive = undefined;
      continue;
    }
    const start = i + 1;
    let end = i + 1;
    while (end < lines.length && !/^```\s*$/.test(lines[end])) end++;
    blocks.push({
      lang: open[1],
      line: start,
      code: lines.slice(i + 1, end).join('\n'),
      directive,
    });
    directive = undefined;
    i = end;
  }
  return blocks;
}

const INSTALL = /^(?:pnpm add|npm install|npm i)\s+(.*)$/;

function install(block, work) {
  const out = [];
  for (const raw of block.code.split('\n')) {
    const line = raw.replace(/\s#.*$/, '').trim();
    if (!line) continue;
    const m = INSTALL.exec(line);
    if (!m) throw new Error(`not an install command: ${line}`);
    for (const spec of m[1].split(/\s+/).filter((a) => !a.startsWith('-'))) {
      const name = spec.replace(/(?<=.)@[^/]*$/, '');
      const target = workspace.get(name)?.dir ?? thirdParty(name);
      if (!target) throw new Error(`${name}: neither a workspace package nor installed here`);
      const link = join(work, 'node_modules', name);
      if (!existsSync(link)) {
        mkdirSync(dirname(link), { recursive: true });
        symlinkSync(target, link);
      }
      for (const [bin, file] of Object.entries(workspace.get(name)?.bins ?? {})) {
        const binLink = join(work, 'node_modules', '.bin', bin);
        mkdirSync(dirname(binLink), { recursive: true });
        if (!existsSync(binLink)) symlinkSync(join(target, file), binLink);
      }
      out.push(name);
    }
  }
  return `linked ${out.join(', ')}`;
}

function run(cmd, args, { cwd, env, until }) {
  return new Promise((resolveRun) => {
    const child = spawn(cmd, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let settled = false;
    const finish = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
      const hard = setTimeout(() => {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 5000);
      child.once('close', () => {
        clearTimeout(hard);
        resolveRun({ ...result, output });
      });
      if (child.exitCode !== null || child.signalCode !== null) {
        clearTimeout(hard);
        resolveRun({ ...result, output });
      }
    };
    const onData = (d) => {
      output += d;
      if (until?.test(output)) finish({ ok: true, how: `ready (/${until.source}/)` });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(
      () =>
        finish({
          ok: false,
          how: `still running after ${(until ? DAEMON_TIMEOUT_MS : TIMEOUT_MS) / 1000} s`,
        }),
      until ? DAEMON_TIMEOUT_MS : TIMEOUT_MS,
    );
    child.once('exit', (code, signal) => {
      if (until) finish({ ok: false, how: `exited (${code ?? signal}) before /${until.source}/` });
      else finish({ ok: code === 0, how: code === 0 ? 'exit 0' : `exit ${code ?? signal}` });
    });
  });
}

async function runBlock(block, work, env) {
  const d = block.directive ?? '';
  const skip = /^skip because (.+)$/.exec(d);
  if (skip) return { status: 'skipped', how: skip[1] };
  if (/^skip\b/.test(d))
    return { status: 'failed', how: 'a skip needs a reason: "skip because ..."' };
  const file = /^file (\S+)$/.exec(d);
  if (file) {
    writeFileSync(join(work, file[1]), `${block.code}\n`);
    return { status: 'passed', how: `written as ${file[1]} for the blocks after it` };
  }
  const daemon = /^daemon until (.+)$/.exec(d);
  if (d && !daemon) return { status: 'failed', how: `unknown directive "${d}"` };
  const until = daemon ? new RegExp(daemon[1].replace(/^"(.*)"$/, '$1')) : undefined;
  const lang = block.lang.toLowerCase();
  const name = `example-${block.line}`;
  let result;
  if (['sh', 'bash', 'shell'].includes(lang)) {
    const lines = block.code.split('\n').filter((l) => l.replace(/\s#.*$/, '').trim());
    if (!until && lines.length > 0 && lines.every((l) => INSTALL.test(l.trim()))) {
      try {
        return { status: 'passed', how: install(block, work) };
      } catch (err) {
        return { status: 'failed', how: err.message };
      }
    }
    writeFileSync(join(work, `${name}.sh`), `${block.code}\n`);
    result = await run('bash', ['-e', `${name}.sh`], { cwd: work, env, until });
  } else if (['js', 'mjs', 'javascript', 'ts', 'typescript'].includes(lang)) {
    const js = lang.startsWith('t')
      ? ts.transpileModule(block.code, {
          compilerOptions: {
            module: ts.ModuleKind.ESNext,
            target: ts.ScriptTarget.ES2022,
            verbatimModuleSyntax: false,
          },
        }).outputText
      : block.code;
    writeFileSync(join(work, `${name}.mjs`), js);
    result = await run(process.execPath, [`${name}.mjs`], { cwd: work, env, until });
  } else {
    return { status: 'failed', how: `no runner for \`\`\`${block.lang}: mark it skip because ...` };
  }
  return {
    status: result.ok ? 'passed' : 'failed',
    how: result.how,
    output: result.ok ? '' : result.output,
  };
}

const missing = [...workspace.values()].filter(
  ({ dir, built }) => built && !existsSync(join(dir, 'dist')),
);
if (missing.length) {
  console.error(
    `readme-examples: build first (pnpm build): no dist in ${missing.map((m) => m.dir)}`,
  );
  process.exit(1);
}

const args = process.argv.slice(2);
const reportAt = args.indexOf('--report');
const reportFile = reportAt >= 0 ? resolve(args[reportAt + 1] ?? '') : undefined;
if (reportAt >= 0) args.splice(reportAt, 2);
const readmes = (
  args.length > 0
    ? args.map((p) => resolve(p))
    : ['packages', 'apps'].flatMap((g) =>
        readdirSync(join(root, g)).map((n) => join(root, g, n, 'README.md')),
      )
).filter((p) => existsSync(p));

const totals = { passed: 0, failed: 0, skipped: 0 };
const assertionResults = [];
let outputBlocks = 0;
const base = mkdtempSync(join(tmpdir(), 'readme-examples-'));
const t0 = Date.now();
for (const readme of readmes) {
  const rel = relative(root, readme);
  const work = join(base, rel.replace(/\/README\.md$/, '').replace(/\//g, '_'));
  mkdirSync(join(work, 'home'), { recursive: true });
  mkdirSync(join(work, 'vsock'), { recursive: true });
  const env = {
    PATH: `${join(work, 'node_modules', '.bin')}:${dirname(process.execPath)}:${process.env.PATH}`,
    HOME: join(work, 'home'),
    XDG_STATE_HOME: join(work, 'home', '.local', 'state'),
    ENCLAVE_EXTRAS_VSOCK_DIR: join(work, 'vsock'),
    LANG: 'C.UTF-8',
    NO_COLOR: '1',
  };
  for (const block of parseBlocks(readFileSync(readme, 'utf8'))) {
    if (['text', 'output'].includes(block.lang) || (block.lang === '' && !block.directive)) {
      outputBlocks++;
      if (block.lang === '') {
        totals.failed++;
        assertionResults.push({
          ancestorTitles: [rel],
          title: `line ${block.line}`,
          status: 'failed',
          failureMessages: ['a fence without a language: say ```text for output'],
        });
        console.log(
          `FAIL ${rel}:${block.line} a fence without a language: say \`\`\`text for output`,
        );
      }
      continue;
    }
    const t = Date.now();
    const r = await runBlock(block, work, env);
    totals[r.status]++;
    assertionResults.push({
      ancestorTitles: [rel],
      title: `line ${block.line} (${block.lang})`,
      status: r.status === 'skipped' ? 'pending' : r.status,
      failureMessages: r.status === 'failed' ? [`${r.how}\n${r.output ?? ''}`] : [],
    });
    const label = { passed: 'ok  ', failed: 'FAIL', skipped: 'SKIP' }[r.status];
    console.log(
      `${label} ${rel}:${block.line} (${block.lang}) ${r.how} [${((Date.now() - t) / 1000).toFixed(1)} s]`,
    );
    if (r.status === 'failed' && r.output) {
      console.log(
        r.output
          .trimEnd()
          .split('\n')
          .slice(-15)
          .map((l) => `     | ${l}`)
          .join('\n'),
      );
    }
  }
}
if (process.env.README_EXAMPLES_KEEP) console.log(`work directories kept in ${base}`);
else rmSync(base, { recursive: true, force: true });
console.log(
  `(${outputBlocks} output listings not run; ${((Date.now() - t0) / 1000).toFixed(0)} s)`,
);
// Worded unlike "N passed, N failed": pnpm test's closing line is the only one of that shape.
console.log(
  `readme-examples: ${totals.passed} ok, ${totals.failed} not ok, ${totals.skipped} skipped`,
);
if (reportFile) {
  writeFileSync(
    reportFile,
    JSON.stringify({
      numPassedTests: totals.passed,
      numFailedTests: totals.failed,
      numPendingTests: totals.skipped,
      success: totals.failed === 0,
      testResults: [
        {
          name: 'README code blocks',
          status: totals.failed ? 'failed' : 'passed',
          assertionResults,
        },
      ],
    }),
  );
}
process.exit(totals.failed > 0 ? 1 : 0);
