// The main entry is the forwarding engine; the config loader (yaml) and the schemas (zod) are the
// `./config` entry. A process that only forwards (createRoute) must not load them: zod and yaml
// were ~11 MiB of a route process's RSS (bench/chain.mjs, issue 16). Checked on the built files
// with a resolve hook that logs every module a fresh Node process loads.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const dist = new URL('../dist/', import.meta.url).pathname;
/** The preload that logs every resolved module URL to $EE_LOAD_LOG (shared by the repo's tests). */
const LOG_MODULE_LOADS = new URL('../../../scripts/log-module-loads.mjs', import.meta.url).pathname;
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-proxy-entry-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Every module URL a fresh process resolves while running `code` (an ES module). */
function loaded(code: string): string[] {
  const log = join(dir, `load-${Math.random().toString(36).slice(2)}.log`);
  writeFileSync(log, '');
  const r = spawnSync(
    process.execPath,
    ['--import', LOG_MODULE_LOADS, '--input-type=module', '-e', code],
    { env: { ...process.env, EE_LOAD_LOG: log }, encoding: 'utf8', cwd: dist, timeout: 30_000 },
  );
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return readFileSync(log, 'utf8').split('\n').filter(Boolean);
}

const CONFIG_LIBS = /\/(zod|yaml)\//;

describe('package entries', () => {
  it('the main entry forwards without loading zod or yaml (a route started and stopped)', () => {
    const urls = loaded(
      [
        `const { createRoute } = await import(${JSON.stringify(join(dist, 'index.js'))});`,
        "const r = createRoute({ name: 'a', listen: 'tcp:127.0.0.1:0', dial: 'tcp:127.0.0.1:9' });",
        'await r.start();',
        'await r.close();',
      ].join('\n'),
    );
    expect(urls.some((u) => u.endsWith('/dist/index.js'))).toBe(true);
    expect(urls.filter((u) => CONFIG_LIBS.test(u))).toEqual([]);
  });

  it('the ./config entry loads them (control: the hook sees zod and yaml when they load)', () => {
    const urls = loaded(
      [
        `const { parseConfig, routeSchema } = await import(${JSON.stringify(join(dist, 'config.js'))});`,
        "parseConfig('name: a\\nlisten: tcp:127.0.0.1:0\\ndial: tcp:127.0.0.1:9\\n', routeSchema);",
      ].join('\n'),
    );
    expect(urls.some((u) => /\/zod\//.test(u))).toBe(true);
    expect(urls.some((u) => /\/yaml\//.test(u))).toBe(true);
  });
});
