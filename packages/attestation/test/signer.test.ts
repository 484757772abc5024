import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AttestationError,
  AttestationVerifier,
  createCertificateChain,
  issueCertificate,
  parseDocument,
  signDocument,
  verifyDocument,
} from '../src/index.js';

const pcr = (b: number, n = 48) => new Uint8Array(n).fill(b);
const PCRS = { 0: pcr(1), 1: pcr(2), 2: pcr(3), 3: pcr(0), 4: pcr(4) };

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    return (err as AttestationError).code;
  }
  return 'ACCEPTED';
}

describe('own chain (createCertificateChain + signDocument)', () => {
  const chain = createCertificateChain();
  const sign = (fields: Partial<Parameters<typeof signDocument>[0]> = {}, opts = {}) =>
    signDocument(
      { moduleId: 'i-0123456789abcdef0-enc0123456789abcdef', pcrs: PCRS, ...fields },
      {
        privateKey: chain.leaf.privateKey,
        certificate: chain.leaf.certificate,
        cabundle: chain.cabundle,
        ...opts,
      },
    );

  it('makes certificates OpenSSL understands', () => {
    const leaf = new X509Certificate(chain.leaf.certificate);
    const root = new X509Certificate(chain.root.certificate);
    expect(root.ca).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(root.verify(root.publicKey)).toBe(true);
    let issuer = root;
    for (const c of chain.intermediates) {
      const x = new X509Certificate(c.certificate);
      expect(x.ca).toBe(true);
      expect(x.checkIssued(issuer)).toBe(true);
      expect(x.verify(issuer.publicKey)).toBe(true);
      issuer = x;
    }
    expect(leaf.checkIssued(issuer)).toBe(true);
    expect(leaf.verify(issuer.publicKey)).toBe(true);
    expect(chain.cabundle).toHaveLength(4);
  });

  it('a signed document verifies when its root is passed', () => {
    const bytes = sign({ nonce: pcr(9, 16) });
    const doc = verifyDocument(bytes, { roots: [chain.root.pem] });
    expect(doc.moduleId).toBe('i-0123456789abcdef0-enc0123456789abcdef');
    expect(doc.pcrs.get(4)).toEqual(pcr(4));
    expect(doc.nonce).toEqual(pcr(9, 16));
    expect(doc.debug).toBe(false);
    // DER roots work too
    expect(verifyDocument(bytes, { roots: [chain.root.certificate] }).alg).toBe('ES384');
  });

  it('is rejected with the default roots (UNTRUSTED_ROOT)', () => {
    expect(codeOf(() => verifyDocument(sign()))).toBe('ERR_ATTESTATION_UNTRUSTED_ROOT');
    expect(codeOf(() => new AttestationVerifier().verify(sign()))).toBe(
      'ERR_ATTESTATION_UNTRUSTED_ROOT',
    );
  });

  it('is rejected under another test root (UNTRUSTED_ROOT)', () => {
    const other = createCertificateChain({ intermediates: 1 });
    expect(codeOf(() => verifyDocument(sign(), { roots: [other.root.pem] }))).toBe(
      'ERR_ATTESTATION_UNTRUSTED_ROOT',
    );
  });

  it('issueCertificate makes a new leaf that signs verifiable documents', () => {
    const issuer = chain.intermediates.at(-1)!;
    const leaf = issueCertificate({ issuer, subject: 'second leaf' });
    const bytes = signDocument(
      { moduleId: 'i-x', pcrs: PCRS },
      { privateKey: leaf.privateKey, certificate: leaf.certificate, cabundle: chain.cabundle },
    );
    expect(verifyDocument(bytes, { roots: [chain.root.pem] }).certificate).toEqual(
      leaf.certificate,
    );
    expect(parseDocument(bytes).certificate).toEqual(leaf.certificate);
  });
});

const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
if (openssl.status !== 0)
  console.warn('[attestation] SKIPPING openssl cross-check: openssl not found');

describe.skipIf(openssl.status !== 0)('certificates cross-checked by the openssl CLI', () => {
  it('openssl verify -x509_strict accepts the generated chain and purpose-checks the leaf', () => {
    const chain = createCertificateChain();
    const dir = mkdtempSync(join(tmpdir(), 'att-openssl-'));
    try {
      writeFileSync(join(dir, 'root.pem'), chain.root.pem);
      writeFileSync(join(dir, 'inter.pem'), chain.intermediates.map((c) => c.pem).join(''));
      writeFileSync(join(dir, 'leaf.pem'), chain.leaf.pem);
      const r = spawnSync(
        'openssl',
        ['verify', '-x509_strict', '-CAfile', 'root.pem', '-untrusted', 'inter.pem', 'leaf.pem'],
        { cwd: dir, encoding: 'utf8' },
      );
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('leaf.pem: OK');
      // and a leaf from another chain is refused by openssl too
      const other = createCertificateChain({ intermediates: 1 });
      writeFileSync(join(dir, 'leaf2.pem'), other.leaf.pem);
      const bad = spawnSync(
        'openssl',
        ['verify', '-x509_strict', '-CAfile', 'root.pem', '-untrusted', 'inter.pem', 'leaf2.pem'],
        { cwd: dir, encoding: 'utf8' },
      );
      expect(bad.status).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
