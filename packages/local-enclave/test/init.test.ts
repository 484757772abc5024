// The static init: built from init/init.c by the package build, reproducibly, static (no
// interpreter, so it runs from the bootstrap ramdisk), and what initPath() returns.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initPath } from '../src/index.js';

const pkg = join(import.meta.dirname, '..');
const tmp = mkdtempSync(join(tmpdir(), 'ee-init-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function sha(p: string): string {
  return createHash('sha256').update(readFileSync(p)).digest('hex');
}

/** Program headers of an ELF64 file: their types. */
function programHeaderTypes(elf: Buffer): number[] {
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  return Array.from({ length: phnum }, (_, i) => elf.readUInt32LE(phoff + i * phentsize));
}

describe('init', () => {
  it('is a static x86_64 ELF executable (no PT_INTERP), mode 0755', () => {
    const p = initPath();
    const elf = readFileSync(p);
    expect(elf.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(elf.readUInt16LE(0x12)).toBe(62); // EM_X86_64
    expect(elf.readUInt16LE(0x10)).toBe(2); // ET_EXEC (static, not PIE)
    expect(programHeaderTypes(elf)).not.toContain(3); // PT_INTERP
    expect(spawnSync('stat', ['-c', '%a', p], { encoding: 'utf8' }).stdout.trim()).toBe('755');
  });

  it('rebuilds to the same bytes (the same gcc and libc give the same PCR1)', () => {
    const before = sha(initPath());
    const r = spawnSync(process.execPath, [join(pkg, 'scripts', 'build-init.mjs')], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(sha(initPath())).toBe(before);
  });

  it('carries the heartbeat, rootfs and failure messages it prints on the console', () => {
    const text = readFileSync(initPath()).toString('latin1');
    for (const s of [
      'ee-init: FATAL: %s: %s: %s',
      'connect to the parent on vsock CID 3 port 9000',
      '/rootfs',
      '/nsm.ko',
      'exited with status %d; stopping the enclave',
    ]) {
      expect(text).toContain(s);
    }
  });

  it('the build fails loudly on a compile error instead of shipping a stale init', () => {
    const bad = join(tmp, 'cc');
    // A compiler that fails: the build must exit non-zero and keep no half-written output.
    spawnSync('sh', [
      '-c',
      `printf '#!/bin/sh\\necho broken >&2; exit 1\\n' > ${bad}; chmod +x ${bad}`,
    ]);
    const r = spawnSync(process.execPath, [join(pkg, 'scripts', 'build-init.mjs')], {
      encoding: 'utf8',
      env: { ...process.env, CC: bad },
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('broken');
  });
});
