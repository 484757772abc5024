// CRC-32/ISO-HDLC (the crc crate's CRC_32_ISO_HDLC, zlib's crc32) with zlib's crc32_combine, so
// the writer can fold in the header's CRC after the sections were streamed without a read-back.
import * as zlib from 'node:zlib';

type Crc32Fn = (data: Uint8Array, value?: number) => number;

let table: Uint32Array | undefined;
function jsCrc32(data: Uint8Array, value = 0): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = ~value >>> 0;
  for (let i = 0; i < data.length; i++) crc = table[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

const native = (zlib as { crc32?: Crc32Fn }).crc32;

/** CRC32 of `data`, continuing from `value` (the CRC of the bytes before it). */
export const crc32: Crc32Fn = typeof native === 'function' ? native : jsCrc32;

/** The pure-JS implementation, exposed for tests that compare it with zlib's. */
export const crc32Js: Crc32Fn = jsCrc32;

// GF(2) 32x32 matrix helpers (zlib's crc32_combine).
function gf2Times(mat: Uint32Array, vec: number): number {
  let sum = 0;
  let i = 0;
  let v = vec >>> 0;
  while (v) {
    if (v & 1) sum ^= mat[i]!;
    v >>>= 1;
    i++;
  }
  return sum >>> 0;
}

function gf2Square(square: Uint32Array, mat: Uint32Array): void {
  for (let n = 0; n < 32; n++) square[n] = gf2Times(mat, mat[n]!);
}

/**
 * CRC of A||B from crc(A), crc(B) and the length of B (zlib's crc32_combine).
 * `lenB` may exceed 2^53 only in theory; EIFs are far smaller.
 */
export function crc32Combine(crcA: number, crcB: number, lenB: number): number {
  if (lenB <= 0) return crcA >>> 0;
  const even = new Uint32Array(32);
  const odd = new Uint32Array(32);
  odd[0] = 0xedb88320;
  let row = 1;
  for (let n = 1; n < 32; n++) {
    odd[n] = row;
    row <<= 1;
  }
  gf2Square(even, odd); // 2 zero bits
  gf2Square(odd, even); // 4 zero bits
  let crc1 = crcA >>> 0;
  let len = lenB;
  do {
    gf2Square(even, odd);
    if (len % 2 === 1) crc1 = gf2Times(even, crc1);
    len = Math.floor(len / 2);
    if (len === 0) break;
    gf2Square(odd, even);
    if (len % 2 === 1) crc1 = gf2Times(odd, crc1);
    len = Math.floor(len / 2);
  } while (len !== 0);
  return (crc1 ^ crcB) >>> 0;
}
