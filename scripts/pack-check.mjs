#!/usr/bin/env node
// Checks the packages as a user gets them: packs every publishable package with `pnpm pack`
// (which rewrites `workspace:^` like `pnpm publish` does; `npm pack` would not), then checks
// each tarball: the LICENSE is the root's unmodified text, no source maps, publint clean (every
// suggestion counts) and @arethetypeswrong/cli clean under node10, node16 (CJS and ESM) and
// bundler resolution.
//
// With --install it then installs all tarballs into an empty npm project and an empty pnpm
// project (pnpm finds our packages by name through overrides, as from a registry) with a PATH
// that holds only node, npm, pnpm, sh and basic shell utilities (no gcc, g++, make or python),
// fails on any native build at install (node-gyp in the log, a package with a binding.gyp), and
// loads every entry point with `import` and `require` and runs every bin with --help. Needs the
// npm registry for third-party packages; about 30 s with a warm cache.
//
// Usage: node scripts/pack-check.mjs [--install] [--keep]   (after `pnpm build`)
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const args = new Set(process.argv.slice(2));
for (const a of args) {
  if (!['--install', '--keep'].includes(a)) {
    console.error(
      `pack-check: ERR_USAGE: unknown option ${a}; usage: pack-check.mjs [--install] [--keep]`,
    );
    process.exit(2);
  }
}
const work = mkdtempSync(join(tmpdir(), 'ee-pack-check-'));
const tarballs = join(work, 'tarballs');
mkdirSync(tarballs);
const rootLicense = readFileSync(join(root, 'LICENSE'), 'utf8');
const failures = [];
const fail = (what) => {
  failures.push(what);
  console.log(`  FAIL ${what}`);
};

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw r.error;
  return r;
}

const dirs = ['packages', 'apps']
  .flatMap((d) => readdirSync(join(root, d)).map((n) => join(root, d, n)))
  .filter((d) => existsSync(join(d, 'package.json')))
  .filter((d) => !JSON.parse(readFileSync(join(d, 'package.json'), 'utf8')).private);

const { publint } = await import('publint');
const { formatMessage } = await import('publint/utils');
const attw = join(root, 'node_modules/.bin/attw');

const packed = [];
for (const dir of dirs) {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  console.log(`\n${pkg.name} (${relative(root, dir)})`);
  if (!existsSync(join(dir, 'dist'))) {
    fail(`${pkg.name}: no dist/; run \`pnpm build\` first`);
    continue;
  }
  const before = new Set(readdirSync(tarballs));
  const p = run('pnpm', ['pack', '--pack-destination', tarballs], { cwd: dir });
  const file = readdirSync(tarballs).find((f) => !before.has(f));
  if (p.status !== 0 || !file) {
    fail(`${pkg.name}: pnpm pack failed: ${p.stderr || p.stdout}`);
    continue;
  }
  const tgz = join(tarballs, file);
  packed.push({ name: pkg.name, tgz, pkg });

  const list = run('tar', ['-tzf', tgz]).stdout.split('\n').filter(Boolean);
  const maps = list.filter((f) => f.endsWith('.map'));
  if (maps.length) fail(`${pkg.name}: source maps in the tarball: ${maps.join(', ')}`);
  const lic = run('tar', ['-xzOf', tgz, 'package/LICENSE']);
  if (lic.status !== 0) fail(`${pkg.name}: no LICENSE in the tarball`);
  else if (lic.stdout !== rootLicense) fail(`${pkg.name}: LICENSE differs from the root LICENSE`);
  const manifest = JSON.parse(run('tar', ['-xzOf', tgz, 'package/package.json']).stdout);
  const deps = { ...manifest.dependencies, ...manifest.optionalDependencies };
  for (const [dep, range] of Object.entries(deps)) {
    if (String(range).startsWith('workspace:')) fail(`${pkg.name}: ${dep} left as ${range}`);
  }

  const tarball = readFileSync(tgz);
  const pl = await publint({
    pack: {
      tarball: tarball.buffer.slice(tarball.byteOffset, tarball.byteOffset + tarball.length),
    },
    level: 'suggestion',
    strict: true,
  });
  for (const m of pl.messages) fail(`${pkg.name}: publint ${m.type}: ${formatMessage(m, pl.pkg)}`);
  console.log(`  publint: ${pl.messages.length} messages`);

  // Apps ship only a bin (no exports, no types): attw has nothing to resolve there.
  if (manifest.exports || manifest.main || manifest.types) {
    const a = run(attw, [tgz, '--format', 'ascii', '--no-color', '--profile', 'strict']);
    if (a.status !== 0) fail(`${pkg.name}: attw:\n${a.stdout}${a.stderr}`);
    else console.log('  attw: no problems');
  } else if (!manifest.bin) {
    fail(`${pkg.name}: neither exports/main nor bin`);
  } else {
    console.log('  attw: bin-only package, no entry points to type-check');
  }
}

if (args.has('--install') && packed.length === dirs.length) installCheck();

if (!args.has('--keep')) rmSync(work, { recursive: true, force: true });
else console.log(`\nkept ${work}`);
console.log(
  failures.length
    ? `\npack-check: ${failures.length} problem(s) in ${packed.length} tarballs`
    : `\npack-check: ${packed.length} tarballs clean${args.has('--install') ? ', installed and loaded without a compiler' : ''}`,
);
process.exit(failures.length ? 1 : 0);

function installCheck() {
  // Only node, npm, pnpm and a shell on the PATH: node-gyp would find no compiler, make or python.
  const bin = join(work, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync('/bin/sh', join(bin, 'sh'));
  // The shell utilities every system has (pnpm's bin shims call sed, dirname and uname).
  for (const tool of ['sed', 'dirname', 'basename', 'uname', 'cat', 'env', 'readlink', 'grep']) {
    const at = run('sh', ['-c', `command -v ${tool}`]).stdout.trim();
    if (at) symlinkSync(at, join(bin, tool));
  }
  for (const tool of ['npm', 'pnpm']) {
    const which = run('sh', ['-c', `command -v ${tool}`]).stdout.trim();
    if (!which) {
      fail(`install: ${tool} is not on the PATH`);
      return;
    }
    const cli = realpathSync(which);
    if (/\.c?js$/.test(cli)) {
      // a JavaScript CLI: run it with this node (its #!/usr/bin/env node needs no other PATH)
      writeFileSync(join(bin, tool), `#!/bin/sh\nexec "${process.execPath}" "${cli}" "$@"\n`, {
        mode: 0o755,
      });
    } else {
      symlinkSync(cli, join(bin, tool)); // e.g. pnpm's standalone executable
    }
  }
  const env = { ...process.env, PATH: bin };
  for (const k of Object.keys(env)) if (/^(npm_|PNPM_|pnpm_)/i.test(k)) delete env[k];
  for (const tool of ['gcc', 'g++', 'cc', 'c++', 'make', 'python3', 'python']) {
    if (run('sh', ['-c', `command -v ${tool}`], { env }).status === 0) {
      fail(`install: ${tool} is still on the stripped PATH`);
    }
  }
  installWith('npm', env);
  installWith('pnpm', env);
}

function installWith(manager, env) {
  console.log(`\ninstall: every tarball into an empty ${manager} project, no compiler on the PATH`);
  const project = join(work, `project-${manager}`);
  mkdirSync(project);
  const manifest = { name: 'pack-check-consumer', private: true, version: '0.0.0' };
  let argv;
  if (manager === 'npm') {
    // npm resolves the packages' dependencies on each other to the tarballs installed beside them.
    argv = ['install', '--no-audit', '--no-fund', '--foreground-scripts', '--loglevel=error'];
    argv.push(...packed.map((p) => p.tgz));
  } else {
    // pnpm looks each dependency up by name: overrides stand in for a registry holding ours.
    const files = Object.fromEntries(packed.map((p) => [p.name, `file:${p.tgz}`]));
    manifest.dependencies = files;
    manifest.pnpm = { overrides: files };
    argv = ['install', '--reporter=append-only', '--config.confirmModulesPurge=false'];
  }
  writeFileSync(join(project, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const inst = run(manager, argv, { cwd: project, env });
  const log = `${inst.stdout}${inst.stderr}`;
  if (inst.status !== 0 || !existsSync(join(project, 'node_modules'))) {
    fail(`install: ${manager} install exited ${inst.status}:\n${log}`);
    return;
  }
  if (/gyp|not found: (make|python|g\+\+|gcc)/i.test(log)) {
    fail(`install: the ${manager} install log mentions a native build:\n${log}`);
  }
  // A package with a binding.gyp compiles at install whenever its prebuilt binary is missing.
  const gyp = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const sub = join(d, e.name);
      if (existsSync(join(sub, 'package.json')) && existsSync(join(sub, 'binding.gyp'))) {
        gyp.push(relative(project, sub));
      }
      walk(sub);
    }
  };
  walk(join(project, 'node_modules'));
  for (const g of gyp) {
    fail(`install: ${g} has a binding.gyp (compiles at install without a prebuilt)`);
  }
  console.log(`  ${manager} install: ok, ${gyp.length} packages with a binding.gyp`);

  for (const { name, pkg } of packed) {
    const subpaths = pkg.exports
      ? Object.keys(pkg.exports).filter((s) => s !== './package.json')
      : [];
    for (const sub of subpaths) {
      const spec = sub === '.' ? name : `${name}/${sub.slice(2)}`;
      const esm = run(
        'node',
        [
          '--input-type=module',
          '-e',
          `const m = await import(${JSON.stringify(spec)}); if (!Object.keys(m).length) throw new Error('no exports');`,
        ],
        { cwd: project, env },
      );
      if (esm.status !== 0) fail(`${manager}: import ${spec}: ${esm.stderr}`);
      const cjs = run(
        'node',
        [
          '-e',
          `const m = require(${JSON.stringify(spec)}); if (!Object.keys(m).length) throw new Error('no exports');`,
        ],
        { cwd: project, env },
      );
      if (cjs.status !== 0) fail(`${manager}: require ${spec}: ${cjs.stderr}`);
      console.log(
        `  ${manager}: ${spec}: import ${esm.status === 0 ? 'ok' : 'FAIL'}, require ${cjs.status === 0 ? 'ok' : 'FAIL'}`,
      );
    }
    for (const b of Object.keys(pkg.bin ?? {})) {
      const h = run(join(project, 'node_modules/.bin', b), ['--help'], { cwd: project, env });
      if (h.status !== 0) fail(`${manager}: ${b} --help exited ${h.status}: ${h.stderr}`);
      console.log(`  ${manager}: ${b} --help: ${h.status === 0 ? 'ok' : 'FAIL'}`);
    }
  }
}
