import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type CborValue, decodeCbor, encodeCbor } from '../src/cbor.js';
import {
  AttestationError,
  AttestationVerifier,
  AWS_NITRO_ROOT_PEM,
  createCertificateChain,
  parseDocument,
} from '../src/index.js';
import { HAVE_FIXTURES, loadFixtures } from './fixtures.js';
import { DEBUG_PCRS, pcr, signWith, split } from './helpers.js';

/**
 * Property: no mutation of a genuine document is accepted (unless it only re-encodes the same
 * signed content), and every rejection is an AttestationError. >= 10,000 mutated documents per run.
 */
const own = createCertificateChain();
const own256 = createCertificateChain({ intermediates: 1, leafCurve: 'P-256', curve: 'P-256' });
const own521 = createCertificateChain({ intermediates: 2, leafCurve: 'P-521' });
const seeds: Uint8Array[] = [
  signWith(own, { nonce: pcr(1, 64), userData: pcr(2, 16), publicKey: pcr(3, 91) }),
  signWith(own, { pcrs: DEBUG_PCRS }, { tagged: true }),
  signWith(own, {}, { indefiniteLength: true }),
  signWith(own256),
  signWith(own521, { nonce: pcr(9, 1024) }),
  ...loadFixtures()
    .filter((f) => f.expect === 'valid')
    .map((f) => f.bytes),
];
if (!HAVE_FIXTURES)
  console.warn('[attestation] fuzz: fixtures missing, mutating own documents only');

const verifier = new AttestationVerifier({
  roots: [AWS_NITRO_ROOT_PEM, own.root.pem, own256.root.pem, own521.root.pem],
});
const options = { at: 'document', policy: { allowDebug: true } } as const;

interface Tally {
  runs: number;
  accepted: number;
  reencoded: number;
  codes: Map<string, number>;
  maxMs: number;
}

function sameSigned(a: Uint8Array, b: Uint8Array): boolean {
  const x = parseDocument(a).raw;
  const y = parseDocument(b).raw;
  const eq = (p: Uint8Array, q: Uint8Array) => Buffer.compare(Buffer.from(p), Buffer.from(q)) === 0;
  return eq(x.protected, y.protected) && eq(x.payload, y.payload) && eq(x.signature, y.signature);
}

function check(original: Uint8Array, mutated: Uint8Array, t: Tally): void {
  t.runs++;
  const start = performance.now();
  try {
    verifier.verify(mutated, options);
    // Accepted: only legitimate when the signed content is unchanged (e.g. the unsigned
    // unprotected header or a CBOR head was re-encoded).
    if (!sameSigned(original, mutated)) {
      t.accepted++;
      throw new Error(`accepted an altered document: ${Buffer.from(mutated).toString('hex')}`);
    }
    t.reencoded++;
  } catch (err) {
    if (!(err instanceof AttestationError)) throw err;
    t.codes.set(err.code, (t.codes.get(err.code) ?? 0) + 1);
  } finally {
    t.maxMs = Math.max(t.maxMs, performance.now() - start);
  }
}

const seedArb = fc.integer({ min: 0, max: seeds.length - 1 });

/** Byte-level mutations of a document. */
const byteMutation = fc.oneof(
  // flip 1-4 bits anywhere
  fc
    .array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 4 })
    .map((flips) => (d: Uint8Array) => {
      const out = d.slice();
      for (const [pos, bit] of flips) out[pos % out.length]! ^= 1 << bit;
      return out;
    }),
  // overwrite one byte
  fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([pos, v]) => (d: Uint8Array) => {
    const out = d.slice();
    out[pos % out.length] = v;
    return out;
  }),
  // truncate
  fc.nat().map((n) => (d: Uint8Array) => d.slice(0, n % d.length)),
  // insert random bytes
  fc
    .tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 }))
    .map(([pos, b]) => (d: Uint8Array) => {
      const p = pos % (d.length + 1);
      return new Uint8Array([...d.subarray(0, p), ...b, ...d.subarray(p)]);
    }),
  // delete a range
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 64 })).map(([pos, n]) => (d: Uint8Array) => {
    const p = pos % d.length;
    return new Uint8Array([...d.subarray(0, p), ...d.subarray(p + n)]);
  }),
  // replace a range with random bytes
  fc
    .tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 32 }))
    .map(([pos, b]) => (d: Uint8Array) => {
      const out = d.slice();
      out.set(b.subarray(0, Math.max(0, out.length - (pos % out.length))), pos % out.length);
      return out;
    }),
  // splice a segment of another document in
  fc
    .tuple(seedArb, fc.nat(), fc.nat(), fc.integer({ min: 1, max: 200 }))
    .map(([other, from, to, n]) => (d: Uint8Array) => {
      const src = seeds[other]!;
      const f = from % src.length;
      const t = to % d.length;
      return new Uint8Array([...d.subarray(0, t), ...src.subarray(f, f + n), ...d.subarray(t + n)]);
    }),
);

/** Structural mutations: decode the payload, change a field, re-encode, keep the signature. */
const fieldValue = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.integer(),
  fc.string({ maxLength: 8 }),
  fc.constant(null),
  fc.constant<CborValue>([]),
  fc.constant<CborValue>(new Map()),
);
const structMutation = fc.oneof(
  fc
    .tuple(
      fc.constantFrom(
        'module_id',
        'digest',
        'timestamp',
        'pcrs',
        'certificate',
        'cabundle',
        'public_key',
        'user_data',
        'nonce',
      ),
      fieldValue,
    )
    .map(([field, value]) => (m: Map<CborValue, CborValue>) => {
      m.set(field, value as CborValue);
    }),
  fc
    .tuple(fc.integer({ min: -2, max: 40 }), fc.uint8Array({ minLength: 0, maxLength: 70 }))
    .map(([index, value]) => (m: Map<CborValue, CborValue>) => {
      const pcrs = new Map(m.get('pcrs') as Map<CborValue, CborValue>);
      pcrs.set(index, value);
      m.set('pcrs', pcrs);
    }),
  fc.tuple(fc.nat(), fc.nat()).map(([i, j]) => (m: Map<CborValue, CborValue>) => {
    const cab = [...(m.get('cabundle') as Uint8Array[])];
    const a = i % cab.length;
    const b = j % cab.length;
    [cab[a], cab[b]] = [cab[b]!, cab[a]!];
    if (a === b) cab.pop();
    m.set('cabundle', cab);
  }),
  fc
    .integer({ min: -100_000_000, max: 100_000_000 })
    .map((delta) => (m: Map<CborValue, CborValue>) => {
      m.set('timestamp', (m.get('timestamp') as number) + (delta || 1));
    }),
);

describe('fuzz: mutated documents', () => {
  it('rejects random bytes with typed errors', () => {
    const t: Tally = { runs: 0, accepted: 0, reencoded: 0, codes: new Map(), maxMs: 0 };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        check(seeds[0]!, bytes, t);
      }),
      { numRuns: 1_000 },
    );
    expect(t.accepted).toBe(0);
    expect(t.codes.has('ERR_ATTESTATION_INTERNAL')).toBe(false);
  });

  it('rejects >= 10,000 mutated documents with typed errors and accepts none', () => {
    const t: Tally = { runs: 0, accepted: 0, reencoded: 0, codes: new Map(), maxMs: 0 };
    fc.assert(
      fc.property(seedArb, byteMutation, (i, mutate) => {
        const doc = seeds[i]!;
        const mutated = mutate(doc);
        fc.pre(Buffer.compare(Buffer.from(mutated), Buffer.from(doc)) !== 0);
        check(doc, mutated, t);
      }),
      { numRuns: 9_000 },
    );
    fc.assert(
      fc.property(seedArb, structMutation, (i, mutate) => {
        const doc = seeds[i]!;
        const parts = split(doc);
        const payload = new Map(parts.payload);
        mutate(payload);
        const mutated = encodeCbor([
          parts.protectedBytes,
          new Map(),
          encodeCbor(payload),
          parts.signature,
        ]);
        fc.pre(!sameSignedSafe(doc, mutated));
        check(doc, mutated, t);
      }),
      { numRuns: 2_000 },
    );
    console.log(
      `[attestation] fuzz: ${t.runs} mutated documents, ${t.accepted} accepted, ${t.reencoded} same-content re-encodings accepted, ` +
        `slowest ${t.maxMs.toFixed(1)} ms; codes ${JSON.stringify(Object.fromEntries(t.codes))}`,
    );
    expect(t.runs).toBeGreaterThanOrEqual(10_000);
    expect(t.accepted).toBe(0);
    expect(t.codes.has('ERR_ATTESTATION_INTERNAL')).toBe(false);
    // hang guard only (not a speed assertion): no single input may take anywhere near this long
    expect(t.maxMs).toBeLessThan(5_000);
  }, 240_000);
});

function sameSignedSafe(a: Uint8Array, b: Uint8Array): boolean {
  try {
    return sameSigned(a, b);
  } catch {
    return false;
  }
}

describe('CBOR text strings', () => {
  it('encode as major type 3 with the UTF-8 bytes TextEncoder gives (ASCII fast path and not)', () => {
    const te = new TextEncoder();
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: 'grapheme', maxLength: 80 })),
        (s) => {
          const utf8 = te.encode(s);
          const out = encodeCbor(s);
          expect(out.subarray(out.length - utf8.length)).toEqual(utf8);
          expect(out[0]! >> 5).toBe(3);
          expect(decodeCbor(out, 's')).toBe(s);
        },
      ),
    );
  });
});

describe('encodeCbor', () => {
  it('refuses values it cannot write instead of writing nothing', () => {
    for (const bad of [1.5, Number.NaN, { a: 1 }, () => 0, Symbol('s')]) {
      expect(() => encodeCbor(bad as unknown as CborValue)).toThrowError(
        expect.objectContaining({ code: 'ERR_ATTESTATION_BAD_INPUT' }),
      );
    }
  });
});
