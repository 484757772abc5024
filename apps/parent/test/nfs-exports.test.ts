// ee-parent nfs-exports, spawned as built: the printed line, and the check of an exports file.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';

vi.setConfig({ testTimeout: 120_000 });

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'ee-nfs-exports-'));
const LINE = '/srv/enclave 127.0.0.1(rw,sync,insecure,no_root_squash,no_subtree_check,fsid=0)';

function run(args: string[]) {
  const r = spawnSync(process.execPath, [cli, 'nfs-exports', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('ee-parent nfs-exports', () => {
  it('prints the exact line and is quiet about an exports file that holds just it', () => {
    const f = join(dir, 'good');
    writeFileSync(f, `# enclave volume\n${LINE}\n`);
    const r = run(['--dir', '/srv/enclave', '--exports', f, '--check']);
    expect(r.out).toBe(`${LINE}\n`);
    expect(r.err).not.toMatch(/error:/);
    expect(r.code).toBe(0);
  });

  it('reports an export reachable from more than the proxy (exit 1 with --check)', () => {
    const f = join(dir, 'wide');
    writeFileSync(f, '/srv/enclave 127.0.0.1(rw,sync,insecure) 10.0.0.0/8(rw,sync)\n');
    const r = run(['--dir', '/srv/enclave', '--exports', f, '--check']);
    expect(r.out).toBe(`${LINE}\n`);
    expect(r.err).toMatch(
      /error: line 1: \/srv\/enclave is exported to "10\.0\.0\.0\/8" as well as to the proxy/,
    );
    expect(r.code).toBe(1);
    // without --check it only reports
    expect(run(['--dir', '/srv/enclave', '--exports', f]).code).toBe(0);
  });

  it('reports a missing exports file and a missing entry', () => {
    expect(run(['--dir', '/srv/enclave', '--exports', join(dir, 'none'), '--check'])).toMatchObject(
      { code: 1 },
    );
    const f = join(dir, 'other');
    writeFileSync(f, '/srv/other 127.0.0.1(rw,sync,insecure)\n');
    const r = run(['--dir', '/srv/enclave', '--exports', f, '--check']);
    expect(r.err).toMatch(/not in the exports file/);
    expect(r.code).toBe(1);
  });

  it('usage errors exit 2', () => {
    const r = run(['--dir', 'relative']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^ee-parent: ERR_USAGE: --dir "relative" must be an absolute path/);
    expect(run([]).code).toBe(2);
  });
});
