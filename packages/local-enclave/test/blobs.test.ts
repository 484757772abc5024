import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  initPath,
  isLocalEnclaveError,
  KERNEL_ENV,
  localBlobs,
  NITRO_CLI_CMDLINE_X86_64,
  resolveKernel,
  writeBlobsDir,
} from '../src/index.js';

const tmp = mkdtempSync(join(tmpdir(), 'ee-blobs-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const saved = {
  kernel: process.env[KERNEL_ENV],
  path: process.env.PATH,
  tool: process.env.ENCLAVE_EXTRAS_KERNEL_TOOL,
};
afterEach(() => {
  for (const [k, v] of [
    [KERNEL_ENV, saved.kernel],
    ['PATH', saved.path],
    ['ENCLAVE_EXTRAS_KERNEL_TOOL', saved.tool],
  ] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

function fakeKernel(name: string, bytes = 'MZ-not-really-a-bzImage'): string {
  const p = join(tmp, name);
  writeFileSync(p, bytes);
  return p;
}

function expectCode(fn: () => unknown, code: string, text: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(isLocalEnclaveError(err), String(err)).toBe(true);
    expect((err as { code: string }).code).toBe(code);
    expect((err as Error).message).toMatch(text);
    return;
  }
  throw new Error('expected an error');
}

describe('local blobs', () => {
  it('uses nitro-cli x86_64 cmdline, trimmed', () => {
    expect(NITRO_CLI_CMDLINE_X86_64).toBe(
      'reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on',
    );
  });

  it('kernel: explicit path first, then ENCLAVE_EXTRAS_KERNEL, then the tool', () => {
    const a = fakeKernel('a');
    const b = fakeKernel('b');
    process.env[KERNEL_ENV] = b;
    expect(resolveKernel({ kernel: a })).toBe(a);
    expect(resolveKernel()).toBe(b);
    delete process.env[KERNEL_ENV];
    const tool = join(tmp, 'enclave-kernel');
    writeFileSync(tool, `#!/bin/sh\necho "enclave-kernel: cached" >&2\necho ${a}\n`);
    chmodSync(tool, 0o755);
    expect(resolveKernel({ kernelTool: tool })).toBe(a);
    process.env.PATH = `${tmp}:${saved.path}`;
    expect(resolveKernel()).toBe(a);
  });

  it('says how to get a kernel when none is found, or it is missing / empty / the tool fails', () => {
    delete process.env[KERNEL_ENV];
    process.env.PATH = '/nonexistent';
    expectCode(
      () => resolveKernel(),
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      /--kernel PATH.*ENCLAVE_EXTRAS_KERNEL.*enclave-kernel/s,
    );
    expectCode(
      () => resolveKernel({ kernel: join(tmp, 'nope') }),
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      /nope cannot be read/,
    );
    expectCode(
      () => resolveKernel({ kernel: fakeKernel('empty', '') }),
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      /is empty/,
    );
    process.env[KERNEL_ENV] = join(tmp, 'gone');
    expectCode(
      () => resolveKernel(),
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      /ENCLAVE_EXTRAS_KERNEL=.*gone/,
    );
    delete process.env[KERNEL_ENV];
    const tool = join(tmp, 'failing-tool');
    writeFileSync(tool, '#!/bin/sh\necho "enclave-kernel: error: no chroot" >&2\nexit 1\n');
    chmodSync(tool, 0o755);
    expectCode(
      () => resolveKernel({ kernelTool: tool }),
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      /no chroot/,
    );
  });

  it('writes a blobs folder in nitro-cli layout (bzImage, bzImage.config, cmdline, init)', () => {
    const k = fakeKernel('bzImage', 'kernel-bytes');
    writeFileSync(`${k}.config`, 'CONFIG_NSM=y\n');
    const dir = join(tmp, 'blobs');
    const blobs = writeBlobsDir(dir, { kernel: k });
    expect(readFileSync(join(dir, 'bzImage'), 'utf8')).toBe('kernel-bytes');
    expect(readFileSync(join(dir, 'bzImage.config'), 'utf8')).toBe('CONFIG_NSM=y\n');
    expect(readFileSync(join(dir, 'cmdline'), 'utf8').trim()).toBe(NITRO_CLI_CMDLINE_X86_64);
    expect(readFileSync(join(dir, 'init')).equals(readFileSync(initPath()))).toBe(true);
    expect(blobs).toEqual({
      kernel: join(dir, 'bzImage'),
      kernelConfig: join(dir, 'bzImage.config'),
      init: join(dir, 'init'),
      cmdline: NITRO_CLI_CMDLINE_X86_64,
    });
    expect(localBlobs({ kernel: k, cmdline: 'console=ttyS0' }).cmdline).toBe('console=ttyS0');
  });
});
