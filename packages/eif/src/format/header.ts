// Big-endian (de)serialisation of the EIF header and section headers, field by field in the
// order of the image-format crate's EifHeader / EifSectionHeader.
import {
  EIF_CRC_OFFSET,
  EIF_HEADER_SIZE,
  EIF_MAGIC,
  MAX_SECTIONS,
  SECTION_HEADER_SIZE,
} from './constants.js';

export interface EifHeader {
  magic: Buffer;
  version: number;
  flags: number;
  defaultMem: bigint;
  defaultCpus: bigint;
  reserved: number;
  numSections: number;
  /** File offsets of each section's 12-byte header (32 entries). */
  sectionOffsets: bigint[];
  /** Data sizes of each section (32 entries). */
  sectionSizes: bigint[];
  unused: number;
  crc32: number;
}

export interface SectionHeader {
  type: number;
  flags: number;
  size: bigint;
}

export function encodeHeader(h: EifHeader): Buffer {
  const b = Buffer.alloc(EIF_HEADER_SIZE);
  let p = 0;
  h.magic.copy(b, p, 0, 4);
  p += 4;
  b.writeUInt16BE(h.version, p);
  p += 2;
  b.writeUInt16BE(h.flags, p);
  p += 2;
  b.writeBigUInt64BE(h.defaultMem, p);
  p += 8;
  b.writeBigUInt64BE(h.defaultCpus, p);
  p += 8;
  b.writeUInt16BE(h.reserved, p);
  p += 2;
  b.writeUInt16BE(h.numSections, p);
  p += 2;
  for (let i = 0; i < MAX_SECTIONS; i++) {
    b.writeBigUInt64BE(h.sectionOffsets[i] ?? 0n, p);
    p += 8;
  }
  for (let i = 0; i < MAX_SECTIONS; i++) {
    b.writeBigUInt64BE(h.sectionSizes[i] ?? 0n, p);
    p += 8;
  }
  b.writeUInt32BE(h.unused >>> 0, p);
  p += 4;
  b.writeUInt32BE(h.crc32 >>> 0, p);
  p += 4;
  if (p !== EIF_HEADER_SIZE || p - 4 !== EIF_CRC_OFFSET) throw new Error('EIF header size drift');
  return b;
}

/** Decodes a 548-byte header; it does not validate (see the reader). */
export function decodeHeader(b: Uint8Array): EifHeader {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  let p = 0;
  const magic = Buffer.from(buf.subarray(0, 4));
  p += 4;
  const version = buf.readUInt16BE(p);
  p += 2;
  const flags = buf.readUInt16BE(p);
  p += 2;
  const defaultMem = buf.readBigUInt64BE(p);
  p += 8;
  const defaultCpus = buf.readBigUInt64BE(p);
  p += 8;
  const reserved = buf.readUInt16BE(p);
  p += 2;
  const numSections = buf.readUInt16BE(p);
  p += 2;
  const sectionOffsets: bigint[] = [];
  for (let i = 0; i < MAX_SECTIONS; i++) {
    sectionOffsets.push(buf.readBigUInt64BE(p));
    p += 8;
  }
  const sectionSizes: bigint[] = [];
  for (let i = 0; i < MAX_SECTIONS; i++) {
    sectionSizes.push(buf.readBigUInt64BE(p));
    p += 8;
  }
  const unused = buf.readUInt32BE(p);
  p += 4;
  const crc32 = buf.readUInt32BE(p);
  return {
    magic,
    version,
    flags,
    defaultMem,
    defaultCpus,
    reserved,
    numSections,
    sectionOffsets,
    sectionSizes,
    unused,
    crc32,
  };
}

export function encodeSectionHeader(s: SectionHeader): Buffer {
  const b = Buffer.alloc(SECTION_HEADER_SIZE);
  b.writeUInt16BE(s.type, 0);
  b.writeUInt16BE(s.flags, 2);
  b.writeBigUInt64BE(s.size, 4);
  return b;
}

export function decodeSectionHeader(b: Uint8Array): SectionHeader {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  return { type: buf.readUInt16BE(0), flags: buf.readUInt16BE(2), size: buf.readBigUInt64BE(4) };
}

export function isMagic(b: Uint8Array): boolean {
  return b.length >= 4 && Buffer.from(b.buffer, b.byteOffset, 4).equals(EIF_MAGIC);
}
