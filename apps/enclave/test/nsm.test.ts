// Spawns the built `ee-enclave nsm ...` against the NSM simulator (in process and daemon).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const simulatorBin = new URL('../../../packages/nsm/dist/bin.js', import.meta.url).pathname;
let dir: string;
let daemon: ChildProcess;
let sock: string;

function ee(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [cli, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ee-nsm-cli-'));
  sock = join(dir, 'nsm.sock');
  daemon = spawn(
    process.execPath,
    [
      simulatorBin,
      '--socket',
      sock,
      '--state-dir',
      join(dir, 'state'),
      '--pcr',
      `0=${'ab'.repeat(48)}`,
    ],
    {
      stdio: 'ignore',
    },
  );
  for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  if (!existsSync(sock)) throw new Error('nsm-simulator daemon did not create its socket');
});

afterAll(() => {
  daemon?.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

describe('ee-enclave nsm', () => {
  it('describe (JSON) through the simulator daemon socket', () => {
    const r = ee(['nsm', 'describe', '--nsm', `socket:${sock}`, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const d = JSON.parse(r.stdout);
    expect(d.maxPcrs).toBe(32);
    expect(d.digest).toBe('SHA384');
    expect(d.lockedPcrs).toContain(0);
  });

  it('pcr reads the configured PCR0 and extends an unlocked PCR (SHA-384 chaining)', () => {
    const p0 = ee(['nsm', 'pcr', '0', '--json'], { ENCLAVE_EXTRAS_NSM: `socket:${sock}` });
    expect(p0.status, p0.stderr).toBe(0);
    expect(JSON.parse(p0.stdout)).toEqual({ index: 0, locked: true, value: 'ab'.repeat(48) });
    const before = JSON.parse(ee(['nsm', 'pcr', '20', '--nsm', `socket:${sock}`, '--json']).stdout)
      .value as string;
    const after = ee([
      'nsm',
      'pcr',
      '20',
      '--extend',
      'hex:00ff',
      '--nsm',
      `socket:${sock}`,
      '--json',
    ]);
    expect(after.status, after.stderr).toBe(0);
    const expected = createHash('sha384')
      .update(Buffer.from(before, 'hex'))
      .update(Buffer.from([0, 0xff]))
      .digest('hex');
    expect(JSON.parse(after.stdout).value).toBe(expected);
  });

  it('extending a locked PCR fails with the NSM code, exit 1', () => {
    const r = ee(['nsm', 'pcr', '0', '--extend', 'x', '--nsm', `socket:${sock}`]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('ERR_NSM_READ_ONLY_INDEX');
  });

  it('random returns the asked number of bytes (beyond one 256-byte request)', () => {
    const r = ee(['nsm', 'random', '300', '--nsm', `simulator:${join(dir, 'inproc')}`]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^[0-9a-f]{600}$/);
  });

  it('usage errors exit 2 naming the flag; no device exits 1 with the nsm message', () => {
    const bad = ee(['nsm', 'random', 'zero', '--nsm', `socket:${sock}`]);
    expect(bad.status).toBe(2);
    const src = ee(['nsm', 'describe', '--nsm', 'bogus']);
    expect(src.status).toBe(2);
    expect(src.stderr).toContain('--nsm bogus');
    const hex = ee(['nsm', 'pcr', '20', '--extend', 'hex:abc', '--nsm', `socket:${sock}`]);
    expect(hex.status).toBe(2);
    expect(hex.stderr).toContain('--extend');
    if (!existsSync('/dev/nsm')) {
      const dev = ee(['nsm', 'describe', '--nsm', 'device']);
      expect(dev.status).toBe(1);
      expect(dev.stderr).toContain('ERR_NSM_NO_DEVICE');
    }
  });
});
