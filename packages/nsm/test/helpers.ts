import { createHash } from 'node:crypto';
import { Decoder, Encoder } from 'cbor-x';
import { expect } from 'vitest';
import { NsmError } from '../src/index.js';

export const sha384 = (...parts: Uint8Array[]) => {
  const h = createHash('sha384');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};

export const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

const mapDecoder = new Decoder({ mapsAsObjects: false, useRecords: false });
const encoder = new Encoder({
  useRecords: false,
  mapsAsObjects: true,
  tagUint8Array: false,
  variableMapSize: true,
});

/** Any CBOR value as bytes (for hand-made raw requests). */
export const cbor = (v: unknown) => new Uint8Array(encoder.encode(v));

/** The payload of a COSE_Sign1 document, decoded without verifying (QEMU's are unsigned). */
export function documentParts(doc: Uint8Array): {
  protectedHeader: Map<number, number>;
  payload: Map<string, unknown>;
  signature: Uint8Array;
} {
  let cose = mapDecoder.decode(Buffer.from(doc)) as unknown;
  if (cose && typeof cose === 'object' && 'tag' in cose && (cose as { tag: number }).tag === 18) {
    cose = (cose as unknown as { value: unknown }).value;
  }
  if (!Array.isArray(cose) || cose.length !== 4) throw new Error('not a COSE_Sign1 array');
  return {
    protectedHeader: mapDecoder.decode(cose[0]) as Map<number, number>,
    payload: mapDecoder.decode(cose[2]) as Map<string, unknown>,
    signature: new Uint8Array(cose[3] as Uint8Array),
  };
}

/** Asserts that `p` rejects with an NsmError of `code` (and `nsmError` when given). */
export async function rejectsWith(
  p: Promise<unknown>,
  code: string,
  nsmError?: string,
): Promise<NsmError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a rejection with ${code}`).toBeInstanceOf(NsmError);
  const e = err as NsmError;
  expect(e.code, e.message).toBe(code);
  if (nsmError !== undefined) expect(e.nsmError).toBe(nsmError);
  return e;
}
