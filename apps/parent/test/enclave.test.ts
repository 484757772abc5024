// ee-parent run-enclave / describe-enclaves / terminate-enclave / console without booting
// anything: flags, exit codes and JSON shapes (booting is the local-enclave whole-enclave suite).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'ee-parent-enclave-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const runDir = join(dir, 'run');

function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [cli, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, ...env },
  });
}

describe('ee-parent enclave commands', () => {
  it('describe-enclaves: an empty JSON array when nothing runs', () => {
    const r = run(['describe-enclaves', '--run-dir', runDir]);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
  });

  it('run-enclave without --vsock-dir (or ENCLAVE_EXTRAS_VSOCK_DIR) is a usage error', () => {
    const r = run([
      'run-enclave',
      '--eif-path',
      'x.eif',
      '--cpu-count',
      '1',
      '--memory',
      '256',
      '--run-dir',
      runDir,
    ]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--vsock-dir DIR (or ENCLAVE_EXTRAS_VSOCK_DIR) is required');
  });

  it('run-enclave: bad numbers are usage errors naming the flag', () => {
    const base = ['run-enclave', '--eif-path', 'x.eif', '--vsock-dir', dir, '--run-dir', runDir];
    const r = run([...base, '--cpu-count', 'two', '--memory', '256']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--cpu-count "two"');
    const c = run([...base, '--cpu-count', '1', '--memory', '256', '--enclave-cid', '3']);
    expect(c.status).toBe(2);
    expect(c.stderr).toContain('--enclave-cid "3" must be a decimal integer from 4');
  });

  it('run-enclave with an EIF that does not exist: exit 1 naming it', () => {
    const r = run([
      'run-enclave',
      '--eif-path',
      join(dir, 'missing.eif'),
      '--cpu-count',
      '1',
      '--memory',
      '256',
      '--vsock-dir',
      dir,
      '--run-dir',
      runDir,
    ]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('ERR_LOCAL_ENCLAVE_EIF');
    expect(r.stderr).toContain('missing.eif cannot be read');
  });

  it('terminate-enclave needs exactly one of --enclave-id and --all; an unknown id exits 1', () => {
    expect(run(['terminate-enclave', '--run-dir', runDir]).status).toBe(2);
    expect(
      run(['terminate-enclave', '--all', '--enclave-id', 'i-x-enc0', '--run-dir', runDir]).status,
    ).toBe(2);
    const r = run([
      'terminate-enclave',
      '--enclave-id',
      'i-local-enc0000000000000000',
      '--run-dir',
      runDir,
    ]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('ERR_LOCAL_ENCLAVE_NOT_FOUND');
    const all = run(['terminate-enclave', '--all', '--run-dir', runDir]);
    expect(all.status).toBe(0);
    expect(all.stdout).toBe('');
  });

  it('every command has --help', () => {
    for (const c of ['run-enclave', 'describe-enclaves', 'terminate-enclave', 'console']) {
      const r = run([c, '--help']);
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`Usage: ee-parent ${c}`);
    }
  });
});
