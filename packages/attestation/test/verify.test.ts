import { describe, expect, it } from 'vitest';
import { encodeCbor } from '../src/cbor.js';
import {
  AttestationError,
  AttestationVerifier,
  AWS_NITRO_ROOT_PEM,
  createCertificateChain,
  issueCertificate,
  parseDocument,
  signDocument,
  verifyDocument,
} from '../src/index.js';
import { codeOf, DEBUG_PCRS, join, PCRS, pcr, signWith, split } from './helpers.js';

const HOUR = 3_600_000;
const chain = createCertificateChain();
const roots = [chain.root.pem];
const doc = signWith(chain, {
  nonce: pcr(0xaa, 32),
  userData: pcr(0xbb, 10),
  publicKey: pcr(0xcc, 91),
});

function errorOf(fn: () => unknown): AttestationError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    return err as AttestationError;
  }
  throw new Error('accepted');
}

describe('policy', () => {
  const v = (
    policy: Parameters<typeof verifyDocument>[1] extends infer O
      ? O extends { policy?: infer P }
        ? P
        : never
      : never,
  ) => codeOf(() => verifyDocument(doc, { roots, policy, at: 'document' }));

  it('checks expected PCRs given as hex or bytes, Record or Map', () => {
    expect(v({ pcrs: { 0: pcr(1), 4: Buffer.from(pcr(4)).toString('hex') } })).toBe('ACCEPTED');
    expect(v({ pcrs: new Map([[8, Buffer.from(pcr(8)).toString('hex').toUpperCase()]]) })).toBe(
      'ACCEPTED',
    );
    expect(v({ pcrs: { 0: pcr(2) } })).toBe('ERR_ATTESTATION_PCR_MISMATCH');
    expect(v({ pcrs: { 9: pcr(0) } })).toBe('ERR_ATTESTATION_PCR_MISMATCH');
    expect(v({ pcrs: { 0: pcr(1, 32) } })).toBe('ERR_ATTESTATION_PCR_MISMATCH');
    const e = errorOf(() => verifyDocument(doc, { roots, policy: { pcrs: { 4: pcr(5) } } }));
    expect(e.field).toBe('payload.pcrs[4]');
    expect(e.message).toContain('payload.pcrs[4]');
    expect(v({ pcrs: { 40: pcr(0) } })).toBe('ERR_ATTESTATION_BAD_INPUT');
    expect(v({ pcrs: { 0: 'zz' } })).toBe('ERR_ATTESTATION_BAD_INPUT');
  });

  it('rejects debug enclaves unless allowDebug', () => {
    const dbg = signWith(chain, { pcrs: DEBUG_PCRS });
    expect(codeOf(() => verifyDocument(dbg, { roots }))).toBe('ERR_ATTESTATION_DEBUG_ENCLAVE');
    const r = verifyDocument(dbg, { roots, policy: { allowDebug: true } });
    expect(r.debug).toBe(true);
    // PCR0-1 zero but PCR2 not: not debug
    const notDbg = signWith(chain, { pcrs: { ...DEBUG_PCRS, 2: pcr(1) } });
    expect(verifyDocument(notDbg, { roots }).debug).toBe(false);
  });

  it('checks maxAgeMs against the given clock', () => {
    const t = parseDocument(doc).timestamp;
    expect(v({ maxAgeMs: 60_000, now: t + 59_000 })).toBe('ACCEPTED');
    expect(v({ maxAgeMs: 60_000, now: new Date(t + 61_000) })).toBe('ERR_ATTESTATION_STALE');
    expect(v({ maxAgeMs: 60_000, now: t - 120_000 })).toBe('ERR_ATTESTATION_STALE');
    expect(v({ maxAgeMs: 60_000, now: t - 120_000, clockSkewMs: 200_000 })).toBe('ACCEPTED');
    expect(v({ maxAgeMs: -1 })).toBe('ERR_ATTESTATION_BAD_INPUT');
  });

  it('checks nonce, user_data and public_key', () => {
    expect(v({ nonce: pcr(0xaa, 32), userData: pcr(0xbb, 10), publicKey: pcr(0xcc, 91) })).toBe(
      'ACCEPTED',
    );
    expect(v({ nonce: Buffer.from(pcr(0xaa, 32)).toString('hex') })).toBe('ACCEPTED');
    expect(v({ nonce: pcr(0xaa, 31) })).toBe('ERR_ATTESTATION_NONCE_MISMATCH');
    expect(v({ userData: pcr(0xbc, 10) })).toBe('ERR_ATTESTATION_USER_DATA_MISMATCH');
    expect(v({ publicKey: pcr(0xcc, 90) })).toBe('ERR_ATTESTATION_PUBLIC_KEY_MISMATCH');
    const bare = signWith(chain);
    expect(codeOf(() => verifyDocument(bare, { roots, policy: { nonce: pcr(1, 4) } }))).toBe(
      'ERR_ATTESTATION_NONCE_MISMATCH',
    );
  });
});

describe('certificate validity at the chosen time', () => {
  it('honours at: now | document | Date', () => {
    const t = parseDocument(doc).timestamp;
    expect(verifyDocument(doc, { roots, at: 'document' }).verifiedAt.getTime()).toBe(t);
    expect(codeOf(() => verifyDocument(doc, { roots, at: new Date(t + 4 * HOUR) }))).toBe(
      'ERR_ATTESTATION_CERT_EXPIRED',
    );
    expect(codeOf(() => verifyDocument(doc, { roots, at: t - 2 * HOUR }))).toBe(
      'ERR_ATTESTATION_CERT_NOT_YET_VALID',
    );
    expect(codeOf(() => verifyDocument(doc, { roots, policy: { now: t + 4 * HOUR } }))).toBe(
      'ERR_ATTESTATION_CERT_EXPIRED',
    );
    expect(codeOf(() => verifyDocument(doc, { roots, at: new Date(Number.NaN) }))).toBe(
      'ERR_ATTESTATION_BAD_INPUT',
    );
  });

  it('an expired leaf is CERT_EXPIRED at now but verifies at its document time', () => {
    const now = Date.now();
    const old = createCertificateChain({
      intermediates: 1,
      caValidity: { notBefore: now - 100 * HOUR, notAfter: now + 100 * HOUR },
      leafValidity: { notBefore: now - 10 * HOUR, notAfter: now - 7 * HOUR },
    });
    const d = signWith(old, { timestamp: now - 8 * HOUR });
    const e = errorOf(() => verifyDocument(d, { roots: [old.root.pem] }));
    expect(e.code).toBe('ERR_ATTESTATION_CERT_EXPIRED');
    expect(e.field).toBe('payload.certificate');
    expect(verifyDocument(d, { roots: [old.root.pem], at: 'document' }).moduleId).toBeTruthy();
  });

  it('checks every CA certificate, not only the leaf', () => {
    const now = Date.now();
    const c = createCertificateChain({
      intermediates: 2,
      caValidity: { notBefore: now - HOUR, notAfter: now + HOUR },
      leafValidity: { notBefore: now - HOUR, notAfter: now + 5 * HOUR },
    });
    const d = signWith(c);
    expect(verifyDocument(d, { roots: [c.root.pem] }).moduleId).toBeTruthy();
    const e = errorOf(() => verifyDocument(d, { roots: [c.root.pem], at: now + 2 * HOUR }));
    expect(e.code).toBe('ERR_ATTESTATION_CERT_EXPIRED');
    expect(e.field).toBe('payload.cabundle[0]');
  });
});

describe('chain rules', () => {
  const rootOnly = createCertificateChain({ intermediates: 0 });
  const signLeaf = (
    leaf: { privateKey: import('node:crypto').KeyObject; certificate: Uint8Array },
    cabundle: Uint8Array[],
  ) =>
    signDocument(
      { moduleId: 'i-x', pcrs: PCRS },
      { privateKey: leaf.privateKey, certificate: leaf.certificate, cabundle },
    );

  it('rejects a non-CA intermediate', () => {
    const notCa = issueCertificate({ issuer: rootOnly.root, subject: 'not a CA' });
    const leaf = issueCertificate({ issuer: notCa, subject: 'leaf' });
    const d = signLeaf(leaf, [rootOnly.root.certificate, notCa.certificate]);
    const e = errorOf(() => verifyDocument(d, { roots: [rootOnly.root.pem] }));
    expect(e.code).toBe('ERR_ATTESTATION_CHAIN_INVALID');
    expect(e.message).toContain('basicConstraints');
  });

  it('enforces pathLenConstraint', () => {
    const a = issueCertificate({ issuer: rootOnly.root, subject: 'A', ca: true, pathLen: 0 });
    const b = issueCertificate({ issuer: a, subject: 'B', ca: true });
    const leaf = issueCertificate({ issuer: b, subject: 'leaf' });
    const d = signLeaf(leaf, [rootOnly.root.certificate, a.certificate, b.certificate]);
    const e = errorOf(() => verifyDocument(d, { roots: [rootOnly.root.pem] }));
    expect(e.code).toBe('ERR_ATTESTATION_CHAIN_INVALID');
    expect(e.message).toContain('pathLenConstraint');
    // pathLen 1 allows it
    const a1 = issueCertificate({ issuer: rootOnly.root, subject: 'A', ca: true, pathLen: 1 });
    const b1 = issueCertificate({ issuer: a1, subject: 'B', ca: true });
    const leaf1 = issueCertificate({ issuer: b1, subject: 'leaf' });
    const ok = signLeaf(leaf1, [rootOnly.root.certificate, a1.certificate, b1.certificate]);
    expect(verifyDocument(ok, { roots: [rootOnly.root.pem] }).moduleId).toBe('i-x');
  });

  it('rejects a leaf signed by a CA that is not in the bundle', () => {
    const d = signLeaf(chain.leaf, [chain.cabundle[0]!, chain.cabundle[1]!]);
    expect(codeOf(() => verifyDocument(d, { roots }))).toBe('ERR_ATTESTATION_CHAIN_INVALID');
  });

  it('rejects an empty cabundle as UNTRUSTED_ROOT', () => {
    const parts = split(signWith(chain));
    const d = join(
      { ...parts, payload: new Map(parts.payload).set('cabundle', []) },
      chain.leaf.privateKey,
    );
    expect(codeOf(() => verifyDocument(d, { roots }))).toBe('ERR_ATTESTATION_UNTRUSTED_ROOT');
  });

  it('trusts only what is passed: AWS root plus a custom one', () => {
    const d = signWith(chain);
    expect(
      verifyDocument(d, { roots: [AWS_NITRO_ROOT_PEM, chain.root.pem] }).rootSha256,
    ).toHaveLength(64);
    expect(codeOf(() => verifyDocument(d, { roots: [AWS_NITRO_ROOT_PEM] }))).toBe(
      'ERR_ATTESTATION_UNTRUSTED_ROOT',
    );
    expect(codeOf(() => new AttestationVerifier({ roots: [] }))).toBe('ERR_ATTESTATION_BAD_INPUT');
    expect(codeOf(() => new AttestationVerifier({ roots: ['not pem'] }))).toBe(
      'ERR_ATTESTATION_BAD_INPUT',
    );
  });
});

describe('algorithms', () => {
  for (const [curve, alg, sigLen] of [
    ['P-256', 'ES256', 64],
    ['P-384', 'ES384', 96],
    ['P-521', 'ES512', 132],
  ] as const) {
    it(`${alg} documents from a ${curve} leaf verify`, () => {
      const c = createCertificateChain({ intermediates: 1, leafCurve: curve, curve });
      const d = signWith(c);
      const r = verifyDocument(d, { roots: [c.root.pem] });
      expect(r.alg).toBe(alg);
      expect(r.raw.signature).toHaveLength(sigLen);
    });
  }

  it('rejects an alg header that does not match the leaf key', () => {
    const c = createCertificateChain({ intermediates: 1, leafCurve: 'P-256' });
    const parts = split(signWith(c));
    const d = join(
      { ...parts, protectedBytes: encodeCbor(new Map([[1, -35]])) },
      c.leaf.privateKey,
      'sha256',
    );
    expect(codeOf(() => verifyDocument(d, { roots: [c.root.pem] }))).toBe(
      'ERR_ATTESTATION_BAD_SIGNATURE',
    );
    expect(codeOf(() => signWith(c, {}, { alg: 'ES384' }))).toBe('ERR_ATTESTATION_SIGNER');
  });

  it('accepts high-S signatures (s -> n - s)', () => {
    const n = BigInt(
      '0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973',
    );
    const parts = split(doc);
    const s = BigInt(`0x${Buffer.from(parts.signature.subarray(48)).toString('hex')}`);
    const highS = Buffer.from((n - s).toString(16).padStart(96, '0'), 'hex');
    const flipped = new Uint8Array([...parts.signature.subarray(0, 48), ...highS]);
    expect(flipped).not.toEqual(parts.signature);
    expect(verifyDocument(join({ ...parts, signature: flipped }), { roots }).moduleId).toBeTruthy();
  });
});

describe('AttestationVerifier cache', () => {
  it('caches verified intermediates by DER hash', () => {
    const v = new AttestationVerifier({ roots });
    v.verify(doc);
    expect(v.stats).toEqual({ cacheSize: 3, cacheHits: 0, cacheMisses: 3 });
    v.verify(doc);
    v.verify(signWith(chain, { moduleId: 'another' }));
    expect(v.stats).toEqual({ cacheSize: 3, cacheHits: 6, cacheMisses: 3 });
    v.clearCache();
    expect(v.stats.cacheSize).toBe(0);
  });

  it('is bounded (LRU) and can be disabled', () => {
    const v = new AttestationVerifier({ roots, cacheSize: 2 });
    v.verify(doc);
    expect(v.stats.cacheSize).toBe(2);
    const off = new AttestationVerifier({ roots, cacheSize: 0 });
    off.verify(doc);
    off.verify(doc);
    expect(off.stats).toEqual({ cacheSize: 0, cacheHits: 0, cacheMisses: 6 });
  });

  it('still checks validity of cached certificates at every call', () => {
    const now = Date.now();
    const c = createCertificateChain({
      intermediates: 2,
      caValidity: { notBefore: now - HOUR, notAfter: now + HOUR },
      leafValidity: { notBefore: now - HOUR, notAfter: now + 5 * HOUR },
    });
    const v = new AttestationVerifier({ roots: [c.root.pem] });
    const d = signWith(c);
    v.verify(d);
    expect(v.stats.cacheSize).toBe(2);
    const e = errorOf(() => v.verify(d, { at: now + 2 * HOUR }));
    expect(e.code).toBe('ERR_ATTESTATION_CERT_EXPIRED');
  });

  it('does not trust a cached certificate under a different issuer', () => {
    // root B has the same subject name as root A but another key
    const rootB = issueCertificate({
      subject: { CN: 'enclave-extras test root', O: 'enclave-extras', C: 'US' },
      ca: true,
    });
    const v = new AttestationVerifier({ roots: [chain.root.pem, rootB.pem] });
    v.verify(doc);
    const parts = split(doc);
    const cab = [...(parts.payload.get('cabundle') as Uint8Array[])];
    cab[0] = rootB.certificate;
    const forged = join(
      { ...parts, payload: new Map(parts.payload).set('cabundle', cab) },
      chain.leaf.privateKey,
    );
    expect(codeOf(() => v.verify(forged))).toBe('ERR_ATTESTATION_CHAIN_INVALID');
    // and the genuine chain still verifies afterwards
    expect(v.verify(doc).moduleId).toBeTruthy();
  });

  describe('a leaf seen before (its parse is reused) is still checked at every call', () => {
    const now = Date.now();
    const c = createCertificateChain({
      leafValidity: { notBefore: now - HOUR, notAfter: now + HOUR },
    });
    const d = signWith(c, { timestamp: now });
    const leafOf = (bytes: Uint8Array) => parseDocument(bytes).certificate;
    const withLeaf = (leaf: Uint8Array, cabundle = c.cabundle) => {
      const parts = split(d);
      const payload = new Map(parts.payload).set('certificate', leaf).set('cabundle', cabundle);
      return join({ ...parts, payload }, c.leaf.privateKey);
    };
    const verifier = () => {
      const v = new AttestationVerifier({ roots: [c.root.pem] });
      expect(v.verify(d, { at: now }).moduleId).toBeTruthy();
      expect(v.verify(d, { at: now }).moduleId).toBeTruthy();
      return v;
    };

    it('a tampered leaf fails after cached successes', () => {
      const v = verifier();
      const leaf = leafOf(d);
      // a byte of its signature, of its public key, of its subject; the document re-signed by the
      // genuine leaf key so that only the certificate is wrong
      for (const pos of [leaf.length - 2, leaf.length - 130, 60]) {
        const bad = leaf.slice();
        bad[pos]! ^= 0x01;
        expect(codeOf(() => v.verify(withLeaf(bad), { at: now }))).toBe(
          'ERR_ATTESTATION_CHAIN_INVALID',
        );
      }
      expect(v.verify(d, { at: now }).moduleId).toBeTruthy();
    });

    it('the same bytes object altered in place after a success fails', () => {
      const v = new AttestationVerifier({ roots: [c.root.pem] });
      const mine = d.slice();
      expect(v.verify(mine, { at: now }).moduleId).toBeTruthy();
      const off = Buffer.from(mine).indexOf(Buffer.from(leafOf(d)));
      mine[off + leafOf(d).length - 2]! ^= 0x01;
      expect(codeOf(() => v.verify(mine, { at: now }))).toBe('ERR_ATTESTATION_CHAIN_INVALID');
    });

    it('its validity is checked at the requested time', () => {
      const v = verifier();
      expect(codeOf(() => v.verify(d, { at: now + 2 * HOUR }))).toBe(
        'ERR_ATTESTATION_CERT_EXPIRED',
      );
      expect(codeOf(() => v.verify(d, { at: now - 2 * HOUR }))).toBe(
        'ERR_ATTESTATION_CERT_NOT_YET_VALID',
      );
    });

    it('the COSE signature is checked with its key', () => {
      const v = verifier();
      const other = createCertificateChain({ intermediates: 0 });
      expect(codeOf(() => v.verify(join(split(d), other.leaf.privateKey), { at: now }))).toBe(
        'ERR_ATTESTATION_BAD_SIGNATURE',
      );
    });

    it('its signature is checked against the issuer of each document', () => {
      // another PKI with the same names: the leaf's issuer name matches its last intermediate
      const twin = createCertificateChain();
      const v = new AttestationVerifier({ roots: [c.root.pem, twin.root.pem] });
      expect(v.verify(d, { at: now }).moduleId).toBeTruthy();
      expect(v.verify(signWith(twin), { at: now }).moduleId).toBeTruthy();
      expect(codeOf(() => v.verify(withLeaf(leafOf(d), twin.cabundle), { at: now }))).toBe(
        'ERR_ATTESTATION_CHAIN_INVALID',
      );
      expect(v.verify(d, { at: now }).moduleId).toBeTruthy();
    });

    it('clearCache forgets parsed leaves too, and a disabled cache keeps none', () => {
      const v = verifier();
      v.clearCache();
      expect(v.verify(d, { at: now }).moduleId).toBeTruthy();
      const off = new AttestationVerifier({ roots: [c.root.pem], cacheSize: 0 });
      expect(off.verify(d, { at: now }).moduleId).toBeTruthy();
      expect(off.verify(d, { at: now }).moduleId).toBeTruthy();
    });
  });
});
