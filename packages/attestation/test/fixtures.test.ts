import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AttestationError,
  AWS_NITRO_ROOT_PEM,
  AWS_NITRO_ROOT_SHA256,
  parseDocument,
  pemToDer,
  verifyDocument,
} from '../src/index.js';
import { FIXTURE_DIR, HAVE_FIXTURES, loadFixtures } from './fixtures.js';

const fixtures = loadFixtures();
const valid = fixtures.filter((f) => f.expect === 'valid');
const rejected = fixtures.filter((f) => f.expect.startsWith('reject'));

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    return (err as AttestationError).code;
  }
  return 'ACCEPTED';
}

describe('embedded AWS Nitro root', () => {
  it('has the pinned SHA-256 fingerprint', () => {
    const der = pemToDer(AWS_NITRO_ROOT_PEM);
    expect(createHash('sha256').update(der).digest('hex')).toBe(AWS_NITRO_ROOT_SHA256);
    expect(AWS_NITRO_ROOT_SHA256).toBe(
      '641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b',
    );
  });

  it.skipIf(!HAVE_FIXTURES)('equals the published PEM in the fixtures', () => {
    const pem = readFileSync(join(FIXTURE_DIR, 'aws-nitro-enclaves-root-g1.pem'), 'utf8');
    expect(pemToDer(pem)).toEqual(pemToDer(AWS_NITRO_ROOT_PEM));
  });
});

describe.skipIf(!HAVE_FIXTURES)('real AWS Nitro documents (../shared/fixtures/attestation)', () => {
  it('has the fixtures', () => {
    expect(valid.length).toBeGreaterThanOrEqual(10);
    expect(rejected.length).toBeGreaterThanOrEqual(2);
  });

  for (const f of valid) {
    describe(f.file, () => {
      it('parses with the manifest values', () => {
        const doc = parseDocument(f.bytes);
        expect(doc.moduleId).toBe(f.module_id);
        expect(doc.timestamp).toBe(f.timestamp_ms);
        expect(doc.date.getTime()).toBe(f.timestamp_ms);
        expect(doc.pcrs.size).toBe(f.n_pcrs);
        expect(doc.alg).toBe('ES384');
        expect(doc.digest).toBe('SHA384');
        expect(doc.cabundle.length).toBeGreaterThanOrEqual(2);
        expect(doc.publicKey?.length ?? null).toBe(f.public_key ?? null);
        expect(doc.userData?.length ?? null).toBe(f.user_data ?? null);
        expect(doc.nonce?.length ?? null).toBe(f.nonce ?? null);
      });

      it('verifies at its own timestamp', () => {
        const policy = { allowDebug: f.debug_zero_pcr012 === true };
        const doc = verifyDocument(f.bytes, { at: 'document', policy });
        expect(doc.verifiedAt.getTime()).toBe(f.timestamp_ms);
        expect(doc.debug).toBe(f.debug_zero_pcr012 === true);
        expect(doc.rootSha256).toBe(
          '641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b',
        );
      });

      it("is rejected as expired at today's time", () => {
        expect(codeOf(() => verifyDocument(f.bytes, { policy: { allowDebug: true } }))).toBe(
          'ERR_ATTESTATION_CERT_EXPIRED',
        );
        expect(
          codeOf(() => verifyDocument(f.bytes, { at: new Date(), policy: { allowDebug: true } })),
        ).toBe('ERR_ATTESTATION_CERT_EXPIRED');
      });

      it(
        f.debug_zero_pcr012
          ? 'is a debug enclave: passes only with allowDebug'
          : 'is not a debug enclave',
        () => {
          const code = codeOf(() => verifyDocument(f.bytes, { at: 'document' }));
          expect(code).toBe(f.debug_zero_pcr012 ? 'ERR_ATTESTATION_DEBUG_ENCLAVE' : 'ACCEPTED');
        },
      );
    });
  }

  for (const f of rejected) {
    it(`${f.file} is rejected (${f.expect})`, () => {
      for (const at of ['document', 'now'] as const) {
        const code = codeOf(() => verifyDocument(f.bytes, { at, policy: { allowDebug: true } }));
        expect(['ERR_ATTESTATION_UNTRUSTED_ROOT', 'ERR_ATTESTATION_CHAIN_INVALID']).toContain(code);
      }
    });
  }
});
