#!/usr/bin/env node
// Start-up bench (issue 11 item 11): `ee-parent --help` and `ee-enclave --help` against a bare
// `node -e 0`, measured in the same run, rounds interleaved so a busy machine slows all alike.
// Prints the median and best wall time of each and the ratio to bare node; the target is
// `--help` under 150 ms where bare node takes ~80 ms (about 2x). No assertion: it prints.
// Usage: node bench/startup.mjs [rounds=15] (build first: pnpm --filter @enclave-extras/parent... build)
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const rounds = Number(process.argv[2] ?? 15);
const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const contenders = [
  ['node -e 0', ['-e', '0']],
  ['ee-parent --help', [here('../bin/ee-parent.js'), '--help']],
  ['ee-enclave --help', [here('../../enclave/bin/ee-enclave.js'), '--help']],
  ['ee-parent --version', [here('../bin/ee-parent.js'), '--version']],
];
for (const [name, args] of contenders.slice(1)) {
  if (!existsSync(args[0].replace(/bin\/(ee-\w+)\.js$/, 'dist/cli.js'))) {
    console.error(`${name}: not built (run pnpm build first)`);
    process.exit(1);
  }
}

const times = new Map(contenders.map(([name]) => [name, []]));
for (let i = 0; i < rounds + 1; i++) {
  for (const [name, args] of contenders) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, { stdio: 'ignore' });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0) {
      console.error(`${name} exited ${r.status}`);
      process.exit(1);
    }
    if (i > 0) times.get(name).push(ms); // round 0 warms the file cache
  }
}

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
};
const base = median(times.get('node -e 0'));
console.log(`start-up, ${rounds} interleaved rounds, node ${process.version}`);
console.log(
  `${'command'.padEnd(22)}${'median ms'.padStart(10)}${'best ms'.padStart(10)}${'vs node'.padStart(10)}`,
);
for (const [name] of contenders) {
  const t = times.get(name);
  console.log(
    `${name.padEnd(22)}${median(t).toFixed(1).padStart(10)}${Math.min(...t)
      .toFixed(1)
      .padStart(10)}${`${(median(t) / base).toFixed(2)}x`.padStart(10)}`,
  );
}
