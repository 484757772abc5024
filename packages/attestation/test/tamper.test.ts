import { describe, expect, it } from 'vitest';
import { createCertificateChain, parseDocument, verifyDocument } from '../src/index.js';
import { HAVE_FIXTURES, loadFixtures } from './fixtures.js';
import { codeOf, flip, indexOf, join, signWith, split } from './helpers.js';

const valid = loadFixtures().filter((f) => f.expect === 'valid');
const at = 'document' as const;
const policy = { allowDebug: true };

/** Runs every tamper case against one document verifiable with `roots`. */
function tamperCases(name: string, bytes: () => Uint8Array, roots?: string[]) {
  const check = (doc: Uint8Array) => codeOf(() => verifyDocument(doc, { at, policy, roots }));

  describe(name, () => {
    it('verifies untouched', () => {
      expect(check(bytes())).toBe('ACCEPTED');
    });

    it('flipped byte in the payload (module_id) -> BAD_SIGNATURE', () => {
      const doc = bytes();
      const d = parseDocument(doc);
      const off = indexOf(doc, new TextEncoder().encode(d.moduleId));
      expect(off).toBeGreaterThan(0);
      expect(check(flip(doc, off + 2))).toBe('ERR_ATTESTATION_BAD_SIGNATURE');
    });

    it('flipped byte in a PCR value -> BAD_SIGNATURE', () => {
      const doc = bytes();
      const d = parseDocument(doc);
      for (const index of [0, 4]) {
        const off = indexOf(doc, d.pcrs.get(index)!);
        expect(off).toBeGreaterThan(0);
        expect(check(flip(doc, off + 7, 0x80))).toBe('ERR_ATTESTATION_BAD_SIGNATURE');
      }
    });

    it('flipped byte in the signature -> BAD_SIGNATURE', () => {
      const doc = bytes();
      expect(check(flip(doc, doc.length - 1))).toBe('ERR_ATTESTATION_BAD_SIGNATURE');
      expect(check(flip(doc, doc.length - 60, 0x10))).toBe('ERR_ATTESTATION_BAD_SIGNATURE');
    });

    it('flipped byte in the leaf certificate -> CHAIN_INVALID', () => {
      const doc = bytes();
      const leaf = parseDocument(doc).certificate;
      const off = indexOf(doc, leaf);
      // in its signature, in its public key, in its subject
      for (const pos of [leaf.length - 2, leaf.length - 130, 60]) {
        expect(check(flip(doc, off + pos))).toBe('ERR_ATTESTATION_CHAIN_INVALID');
      }
    });

    it('flipped byte in an intermediate -> CHAIN_INVALID', () => {
      const doc = bytes();
      const d = parseDocument(doc);
      for (let i = 1; i < d.cabundle.length; i++) {
        const off = indexOf(doc, d.cabundle[i]!);
        expect(check(flip(doc, off + d.cabundle[i]!.length - 3))).toBe(
          'ERR_ATTESTATION_CHAIN_INVALID',
        );
      }
    });

    it('flipped byte in the root -> UNTRUSTED_ROOT', () => {
      const doc = bytes();
      const off = indexOf(doc, parseDocument(doc).cabundle[0]!);
      expect(check(flip(doc, off + 100))).toBe('ERR_ATTESTATION_UNTRUSTED_ROOT');
    });

    it('truncated document -> MALFORMED_CBOR', () => {
      const doc = bytes();
      for (const len of [0, 1, 5, 100, doc.length >> 1, doc.length - 97, doc.length - 1]) {
        const code = codeOf(() => verifyDocument(doc.subarray(0, len), { at, policy, roots }));
        expect(code).toBe('ERR_ATTESTATION_MALFORMED_CBOR');
      }
    });

    it('swapped cabundle order -> CHAIN_INVALID (reversed: UNTRUSTED_ROOT)', () => {
      const parts = split(bytes());
      const cab = parts.payload.get('cabundle') as Uint8Array[];
      const swapped = [cab[0]!, cab[2]!, cab[1]!, ...cab.slice(3)];
      expect(
        check(join({ ...parts, payload: new Map(parts.payload).set('cabundle', swapped) })),
      ).toBe('ERR_ATTESTATION_CHAIN_INVALID');
      const reversed = [...cab].reverse();
      expect(
        check(join({ ...parts, payload: new Map(parts.payload).set('cabundle', reversed) })),
      ).toBe('ERR_ATTESTATION_UNTRUSTED_ROOT');
    });

    it('trailing garbage -> MALFORMED_CBOR', () => {
      const doc = bytes();
      const longer = new Uint8Array(doc.length + 1);
      longer.set(doc);
      expect(check(longer)).toBe('ERR_ATTESTATION_MALFORMED_CBOR');
    });
  });
}

describe.skipIf(!HAVE_FIXTURES)('tampered real documents', () => {
  for (const f of valid.slice(0, 4)) tamperCases(f.file, () => f.bytes);
});

describe('tampered own documents (no fixtures needed)', () => {
  const chain = createCertificateChain();
  const doc = signWith(chain, { nonce: new Uint8Array(32).fill(5) });
  tamperCases('own ES384 document', () => doc, [chain.root.pem]);

  it('swapped cabundle order, re-signed by the leaf -> CHAIN_INVALID', () => {
    const parts = split(doc);
    const cab = parts.payload.get('cabundle') as Uint8Array[];
    const swapped = new Map(parts.payload).set('cabundle', [cab[0]!, cab[2]!, cab[1]!, cab[3]!]);
    const resigned = join({ ...parts, payload: swapped }, chain.leaf.privateKey);
    expect(codeOf(() => verifyDocument(resigned, { roots: [chain.root.pem] }))).toBe(
      'ERR_ATTESTATION_CHAIN_INVALID',
    );
    const missing = new Map(parts.payload).set('cabundle', [cab[0]!, cab[1]!, cab[3]!]);
    expect(
      codeOf(() =>
        verifyDocument(join({ ...parts, payload: missing }, chain.leaf.privateKey), {
          roots: [chain.root.pem],
        }),
      ),
    ).toBe('ERR_ATTESTATION_CHAIN_INVALID');
  });

  it('a document re-signed by another key with the same certificate -> BAD_SIGNATURE', () => {
    const other = createCertificateChain({ intermediates: 0 });
    const parts = split(doc);
    expect(
      codeOf(() => verifyDocument(join(parts, other.leaf.privateKey), { roots: [chain.root.pem] })),
    ).toBe('ERR_ATTESTATION_BAD_SIGNATURE');
  });
});
