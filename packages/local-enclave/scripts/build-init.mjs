#!/usr/bin/env node
// Builds init/init.c into dist/init: a static x86_64 Linux executable, the /init of local
// enclave images. Reproducible: -static -Os, no build id, source paths mapped, so the same gcc and
// libc give the same bytes (and the same PCR1). Runs after tsup (package build script).
//
// Needs gcc and a static libc (Debian: gcc + libc6-dev). On another OS or architecture the init
// is not built and this says so (the rest of the package still builds); set
// ENCLAVE_EXTRAS_REQUIRE_INIT=1 to make that an error (CI, publishing).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(pkg, 'init', 'init.c');
const out = join(pkg, 'dist', 'init');
const required = process.env.ENCLAVE_EXTRAS_REQUIRE_INIT === '1';

function skip(why) {
  const line = `local-enclave: dist/init not built: ${why}`;
  if (required) {
    process.stderr.write(`${line} (ENCLAVE_EXTRAS_REQUIRE_INIT=1)\n`);
    process.exit(1);
  }
  process.stdout.write(`${line}\n`);
  process.exit(0);
}

if (platform() !== 'linux' || arch() !== 'x64') {
  skip(`needs Linux x86_64 with gcc (this is ${platform()} ${arch()})`);
}
const cc = process.env.CC ?? 'gcc';
const args = [
  '-static',
  '-Os',
  '-std=gnu11',
  '-Wall',
  '-Wextra',
  '-Werror',
  '-fno-ident',
  `-ffile-prefix-map=${pkg}=.`,
  '-Wl,--build-id=none',
  '-s',
  src,
  '-o',
  `${out}.tmp`,
];
mkdirSync(dirname(out), { recursive: true });
const r = spawnSync(cc, args, { encoding: 'utf8' });
if (r.error && r.error.code === 'ENOENT') {
  skip(`${cc} not found (Debian: apt-get install gcc libc6-dev)`);
}
if (r.status !== 0) {
  process.stderr.write(`local-enclave: ${cc} ${args.join(' ')} failed:\n${r.stderr}\n`);
  process.exit(1);
}
chmodSync(`${out}.tmp`, 0o755);
renameSync(`${out}.tmp`, out);
const bytes = readFileSync(out);
process.stdout.write(
  `local-enclave: built dist/init (${bytes.length} bytes, sha256 ${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}...)\n`,
);
