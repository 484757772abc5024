// The encryption choice (`encryption.kind`, `auto`) and image detection, on real files.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { volumeSchema } from '../src/index.js';
import { chooseEncryption, hasDmCrypt, imageFormat } from '../src/luks.js';

const base = { name: 'v', mountPoint: '/data' };
const enc = { size: '64MiB', keyId: 'alias/k' };

describe('encryption.kind option', () => {
  it('defaults to fscrypt (the stock enclave kernel has no dm-crypt) and accepts luks2 and auto', () => {
    expect(volumeSchema.parse({ ...base, encryption: enc }).encryption?.kind).toBe('fscrypt');
    for (const kind of ['fscrypt', 'luks2', 'auto'] as const)
      expect(volumeSchema.parse({ ...base, encryption: { ...enc, kind } }).encryption?.kind).toBe(
        kind,
      );
  });
  it('rejects other kinds, naming the field', () => {
    const r = volumeSchema.safeParse({ ...base, encryption: { ...enc, kind: 'luks1' } });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(['encryption', 'kind']);
  });
});

describe('chooseEncryption', () => {
  it('auto: LUKS2 with dm-crypt, fscrypt without, and says why', () => {
    expect(chooseEncryption('auto', { dmCrypt: true })).toMatchObject({ kind: 'luks2' });
    expect(chooseEncryption('auto', { dmCrypt: false })).toMatchObject({
      kind: 'fscrypt',
      reason: expect.stringMatching(/no dm-crypt/),
    });
  });
  it('an existing image decides for itself under auto (never reinterpreted)', () => {
    expect(chooseEncryption('auto', { dmCrypt: true, existing: 'ext4' })).toMatchObject({
      kind: 'fscrypt',
    });
    expect(chooseEncryption('auto', { dmCrypt: true, existing: 'luks2' })).toMatchObject({
      kind: 'luks2',
    });
  });
  it('explicit kinds: luks2 without dm-crypt is unsupported; a mismatch with the image is a config error', () => {
    expect(chooseEncryption('luks2', { dmCrypt: false })).toMatchObject({
      error: 'ERR_VOLUME_UNSUPPORTED',
    });
    expect(chooseEncryption('auto', { dmCrypt: false, existing: 'luks2' })).toMatchObject({
      error: 'ERR_VOLUME_UNSUPPORTED',
    });
    expect(chooseEncryption('fscrypt', { dmCrypt: true, existing: 'luks2' })).toMatchObject({
      error: 'ERR_VOLUME_CONFIG',
    });
    expect(chooseEncryption('luks2', { dmCrypt: true, existing: 'ext4' })).toMatchObject({
      error: 'ERR_VOLUME_CONFIG',
    });
    expect(chooseEncryption('fscrypt', { dmCrypt: true })).toMatchObject({ kind: 'fscrypt' });
    expect(chooseEncryption('luks2', { dmCrypt: true })).toMatchObject({ kind: 'luks2' });
  });
  it('an unrecognised or LUKS1 header is corrupt whatever the kind', () => {
    for (const kind of ['fscrypt', 'luks2', 'auto'] as const) {
      expect(chooseEncryption(kind, { dmCrypt: true, existing: 'unknown' })).toMatchObject({
        error: 'ERR_VOLUME_CORRUPT',
      });
      expect(chooseEncryption(kind, { dmCrypt: true, existing: 'luks1' })).toMatchObject({
        error: 'ERR_VOLUME_CORRUPT',
      });
    }
  });
});

describe('kernel and image probes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ee-luks-'));
  it('hasDmCrypt looks for dm_crypt under the module directory', async () => {
    const sys = join(dir, 'module');
    mkdirSync(join(sys, 'loop'), { recursive: true });
    expect(await hasDmCrypt(sys)).toBe(false);
    mkdirSync(join(sys, 'dm_crypt'));
    expect(await hasDmCrypt(sys)).toBe(true);
  });
  it('imageFormat reads the LUKS magic and version, or the ext4 superblock magic', async () => {
    const f = (name: string, b: Buffer) => {
      writeFileSync(join(dir, name), b);
      return join(dir, name);
    };
    const luks = (version: number) => {
      const b = Buffer.alloc(4096);
      Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]).copy(b);
      b.writeUInt16BE(version, 6);
      return b;
    };
    const ext4 = Buffer.alloc(4096);
    ext4.writeUInt16LE(0xef53, 1024 + 56);
    expect(await imageFormat(f('a', luks(2)))).toBe('luks2');
    expect(await imageFormat(f('b', luks(1)))).toBe('luks1');
    expect(await imageFormat(f('c', ext4))).toBe('ext4');
    expect(await imageFormat(f('d', Buffer.alloc(4096)))).toBe('unknown');
    expect(await imageFormat(f('e', Buffer.alloc(10)))).toBe('unknown');
  });
});
