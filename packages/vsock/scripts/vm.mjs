#!/usr/bin/env node
// `bench` and `readme` of this package inside <repo>/../shared/tools/vsock-vm (vsock loopback,
// CID 1), through the repository's one VM launcher (scripts/vm-suite.mjs; `pnpm test:vm` uses it
// directly). `readme` runs the README's one-liner block exactly as written, from the repo root,
// and checks what it printed.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { preflight, runInVm } from '../../../scripts/vm-suite.mjs';

const mode = process.argv[2];
const say = (line) => process.stdout.write(`${line}\n`);
const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(pkg, '../..');
const label = `vsock ${mode}`;

if (mode === 'bench') {
  preflight({ vm: 'vsock-vm', label, need: ['packages/vsock/dist/index.js'] });
  const r = runInVm({
    vm: 'vsock-vm',
    label,
    pkg,
    command: 'node bench/throughput.mjs',
    mem: 2048,
  });
  process.exit(r.status ?? 1);
} else if (mode === 'readme') {
  preflight({ vm: 'vsock-vm', label, need: ['packages/vsock/dist/index.js'] });
  const text = readFileSync(join(pkg, 'README.md'), 'utf8');
  const m = /<!-- oneliners:start -->\s*```sh\n([\s\S]*?)```\s*<!-- oneliners:end -->/.exec(text);
  if (!m) {
    say('vsock readme: no oneliners block in README.md');
    process.exit(1);
  }
  const r = runInVm({
    vm: 'vsock-vm',
    label,
    pkg,
    command: `cd '${repo}'\n${m[1]}`,
    stdout: 'pipe',
  });
  const out = r.stdout ?? '';
  process.stdout.write(out);
  const want = [
    'echo server on local(1):5000',
    'hello over vsock',
    'http over vsock from local(1):',
  ];
  const missing = want.filter((w) => !out.includes(w));
  say(
    missing.length
      ? `vsock readme: MISSING ${JSON.stringify(missing)}`
      : 'vsock readme: all one-liners worked',
  );
  process.exit(missing.length ? r.status || 1 : (r.status ?? 1));
} else {
  say('usage: node scripts/vm.mjs bench|readme   (the real-kernel suite: pnpm test:vm)');
  process.exit(2);
}
