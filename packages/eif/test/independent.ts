// An independent reading of the EIF layout and PCR formulas, written from the reference (not
// from src/): used to check what the implementation produces.
import { createHash } from 'node:crypto';
import * as zlib from 'node:zlib';

export const sha384 = (b: Uint8Array): Buffer => createHash('sha384').update(b).digest();

/** PCR = SHA-384(48 zero bytes || SHA-384(content)). */
export function pcrOf(...parts: Uint8Array[]): string {
  return sha384(Buffer.concat([Buffer.alloc(48), sha384(Buffer.concat(parts))])).toString('hex');
}

export interface RawSection {
  type: number;
  flags: number;
  offset: number;
  data: Buffer;
}

export interface RawEif {
  version: number;
  flags: number;
  defaultMem: bigint;
  defaultCpus: bigint;
  numSections: number;
  offsets: bigint[];
  sizes: bigint[];
  crc: number;
  sections: RawSection[];
}

/** Parses with fixed offsets: magic 0, version 4, flags 6, mem 8, cpus 16, reserved 24,
 * num_sections 26, offsets 28.., sizes 284.., unused 540, crc 544; sections follow at 548. */
export function parseRaw(file: Buffer): RawEif {
  if (file.subarray(0, 4).toString('latin1') !== '.eif') throw new Error('magic');
  const numSections = file.readUInt16BE(26);
  const offsets = Array.from({ length: 32 }, (_, i) => file.readBigUInt64BE(28 + 8 * i));
  const sizes = Array.from({ length: 32 }, (_, i) => file.readBigUInt64BE(284 + 8 * i));
  const sections: RawSection[] = [];
  let pos = 548;
  while (pos < file.length) {
    const type = file.readUInt16BE(pos);
    const flags = file.readUInt16BE(pos + 2);
    const size = Number(file.readBigUInt64BE(pos + 4));
    sections.push({ type, flags, offset: pos, data: file.subarray(pos + 12, pos + 12 + size) });
    pos += 12 + size;
  }
  return {
    version: file.readUInt16BE(4),
    flags: file.readUInt16BE(6),
    defaultMem: file.readBigUInt64BE(8),
    defaultCpus: file.readBigUInt64BE(16),
    numSections,
    offsets,
    sizes,
    crc: file.readUInt32BE(544),
    sections,
  };
}

/** CRC32 (zlib) of the whole file except bytes 544..548. */
export function crcOf(file: Buffer): number {
  return zlib.crc32(file.subarray(548), zlib.crc32(file.subarray(0, 544)));
}

/** PCR0/1/2 from the raw sections (kernel=1, cmdline=2, ramdisk=3). */
export function expectedPcrs(raw: RawEif): { PCR0: string; PCR1: string; PCR2: string } {
  const kernel = raw.sections.filter((s) => s.type === 1).map((s) => s.data);
  const cmdline = raw.sections.filter((s) => s.type === 2).map((s) => s.data);
  const ramdisks = raw.sections.filter((s) => s.type === 3).map((s) => s.data);
  return {
    PCR0: pcrOf(...kernel, ...cmdline, ...ramdisks),
    PCR1: pcrOf(...kernel, ...cmdline, ramdisks[0]!),
    PCR2: pcrOf(...ramdisks.slice(1)),
  };
}

/** Re-computes and stores the CRC after a test modified a file. */
export function fixCrc(file: Buffer): Buffer {
  file.writeUInt32BE(crcOf(file), 544);
  return file;
}

/** Deterministic pseudo-random bytes. */
export function bytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
