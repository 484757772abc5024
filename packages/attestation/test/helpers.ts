import { type KeyObject, sign } from 'node:crypto';
import { expect } from 'vitest';
import { CborTag, type CborValue, decodeCbor, encodeCbor } from '../src/cbor.js';
import { AttestationError, type CertificateChain, signDocument } from '../src/index.js';
import { sigStructure } from '../src/verify.js';

export const pcr = (b: number, n = 48): Uint8Array => new Uint8Array(n).fill(b);
export const PCRS = { 0: pcr(1), 1: pcr(2), 2: pcr(3), 3: pcr(0), 4: pcr(4), 8: pcr(8) };
export const DEBUG_PCRS = { 0: pcr(0), 1: pcr(0), 2: pcr(0), 3: pcr(7) };

/** The error code thrown by fn, or 'ACCEPTED'. Fails the test on any non-AttestationError. */
export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    return (err as AttestationError).code;
  }
  return 'ACCEPTED';
}

export function signWith(
  chain: CertificateChain,
  fields: Partial<Parameters<typeof signDocument>[0]> = {},
  opts: Partial<Parameters<typeof signDocument>[1]> = {},
): Uint8Array {
  return signDocument(
    { moduleId: 'i-0123456789abcdef0-enc0123456789abcdef', pcrs: PCRS, ...fields },
    {
      privateKey: chain.leaf.privateKey,
      certificate: chain.leaf.certificate,
      cabundle: chain.cabundle,
      ...opts,
    },
  );
}

export interface CoseParts {
  protectedBytes: Uint8Array;
  unprotected: CborValue;
  payload: Map<CborValue, CborValue>;
  signature: Uint8Array;
}

/** Splits a document into its COSE parts with the payload decoded (for crafting variants). */
export function split(doc: Uint8Array): CoseParts {
  let top = decodeCbor(doc, 'document');
  if (top instanceof CborTag) top = top.value;
  const [p, u, payload, s] = top as [Uint8Array, CborValue, Uint8Array, Uint8Array];
  return {
    protectedBytes: p,
    unprotected: u,
    payload: decodeCbor(payload, 'payload') as Map<CborValue, CborValue>,
    signature: s,
  };
}

/** Re-encodes a document; re-signs the payload with `key` when given, else keeps the signature. */
export function join(parts: CoseParts, key?: KeyObject, hash = 'sha384'): Uint8Array {
  const payload = encodeCbor(parts.payload);
  const signature = key
    ? new Uint8Array(
        sign(hash, sigStructure(parts.protectedBytes, payload), { key, dsaEncoding: 'ieee-p1363' }),
      )
    : parts.signature;
  return encodeCbor([parts.protectedBytes, parts.unprotected, payload, signature]);
}

/** Offset of `needle` inside `hay` (first occurrence), -1 if absent. */
export function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  return Buffer.from(hay.buffer, hay.byteOffset, hay.byteLength).indexOf(Buffer.from(needle));
}

export function flip(doc: Uint8Array, offset: number, mask = 0x01): Uint8Array {
  const out = doc.slice();
  out[offset]! ^= mask;
  return out;
}
