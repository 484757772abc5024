#!/usr/bin/env node
// Prints the functions with the most self time of a V8 .cpuprofile (from `node --cpu-prof`).
//   node scripts/profile-summary.mjs FILE.cpuprofile [--top 25]
// `node scripts/bench.mjs --profile DIR` writes the ramdisk build's profile to DIR and runs this.
import { readFileSync } from 'node:fs';

export function summarize(file, top = 25) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = prof.timeDeltas;
  for (let i = 0; i < prof.samples.length; i++) {
    const n = byId.get(prof.samples[i]);
    const f = n.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(node_modules|packages)\//, '')}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const lines = [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(
      ([k, us]) =>
        `${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`,
    );
  return [`self time of ${file} (${(total / 1e6).toFixed(2)} s sampled)`, ...lines].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node scripts/profile-summary.mjs FILE.cpuprofile [--top N]\n');
    process.exit(2);
  }
  const i = process.argv.indexOf('--top');
  process.stdout.write(`${summarize(file, i === -1 ? 25 : Number(process.argv[i + 1]))}\n`);
}
