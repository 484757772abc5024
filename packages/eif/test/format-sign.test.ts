import {
  createHash,
  createPrivateKey,
  verify as cryptoVerify,
  generateKeyPairSync,
  X509Certificate,
} from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueCertificate } from '@enclave-extras/attestation';
import { decode as cborDecode, encode as cborEncode } from 'cbor-x';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  describeEif,
  EifError,
  type EifMetadata,
  loadSigningKey,
  pcr,
  readEif,
  signEif,
  verifyEif,
  writeEif,
} from '../src/index.js';
import { bytes, fixCrc, parseRaw, pcrOf, sha384 } from './independent.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eif-sign-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const META: EifMetadata = {
  ImageName: 'signed',
  ImageVersion: '2.0',
  BuildMetadata: {
    BuildTime: '2026-12-01T00:00:00+00:00',
    BuildTool: 'test',
    BuildToolVersion: '0',
    OperatingSystem: 'Linux',
    KernelVersion: '4.14.256',
  },
  DockerInfo: { Id: 'sha256:00' },
  CustomMetadata: { team: 'x' },
};

const kernel = bytes(10_000, 11);
const cmdline = 'console=ttyS0';
const ramdisks = [bytes(5000, 12), bytes(40_000, 13)];

async function expectCode(p: Promise<unknown>, code: string): Promise<EifError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EifError);
  expect((err as EifError).code).toBe(code);
  return err as EifError;
}

/** Decodes the signature section with cbor-x and checks the COSE_Sign1 with node:crypto. */
function independentSignatureCheck(
  section: Buffer,
  pcr0Hex: string,
  certDer: Buffer,
  hash: string,
): void {
  const top = cborDecode(section) as { signing_certificate: number[]; signature: number[] }[];
  expect(Array.isArray(top)).toBe(true);
  expect(top).toHaveLength(1);
  expect(Object.keys(top[0]!)).toEqual(['signing_certificate', 'signature']);
  // serde_cbor writes Vec<u8> as arrays of integers, not byte strings.
  expect(Array.isArray(top[0]!.signing_certificate)).toBe(true);
  const pem = Buffer.from(top[0]!.signing_certificate);
  expect(pem.toString()).toContain('-----BEGIN CERTIFICATE-----');
  const cert = new X509Certificate(pem);
  expect(Buffer.from(cert.raw).equals(certDer)).toBe(true);
  const cose = cborDecode(Buffer.from(top[0]!.signature)) as [
    Uint8Array,
    unknown,
    Uint8Array,
    Uint8Array,
  ];
  expect(cose).toHaveLength(4);
  const [prot, , payload, sig] = cose;
  const alg = cborDecode(Buffer.from(prot)) as Map<number, number> | Record<number, number>;
  const algId = alg instanceof Map ? alg.get(1) : alg[1];
  expect(algId).toBe(hash === 'sha384' ? -35 : hash === 'sha256' ? -7 : -36);
  const info = cborDecode(Buffer.from(payload)) as {
    register_index: number;
    register_value: number[];
  };
  expect(info.register_index).toBe(0);
  expect(Buffer.from(info.register_value).toString('hex')).toBe(pcr0Hex);
  const toBeSigned = cborEncode([
    'Signature1',
    Buffer.from(prot),
    Buffer.alloc(0),
    Buffer.from(payload),
  ]);
  expect(
    cryptoVerify(hash, toBeSigned, { key: cert.publicKey, dsaEncoding: 'ieee-p1363' }, sig),
  ).toBe(true);
}

describe('signing (PCR8)', () => {
  for (const curve of ['P-384', 'P-256', 'P-521'] as const) {
    it(`${curve}: signed image, PCR8 over the certificate DER, COSE_Sign1 over PcrInfo{0, PCR0}`, async () => {
      const leaf = issueCertificate({
        curve,
        subject: { CN: 'eif signer', O: 'Example', C: 'US' },
      });
      const out = join(dir, `signed-${curve}.eif`);
      const res = await writeEif({
        output: out,
        kernel,
        cmdline,
        metadata: META,
        ramdisks,
        signing: {
          privateKey: leaf.privateKey.export({ type: 'pkcs8', format: 'pem' }),
          certificate: leaf.pem,
        },
      });
      const file = await readFile(out);
      const raw = parseRaw(file);
      expect(raw.sections.map((s) => s.type)).toEqual([1, 2, 5, 3, 3, 4]);
      const der = Buffer.from(leaf.certificate);
      expect(res.measurements.PCR8).toBe(pcrOf(der));
      expect(res.measurements.PCR0).toBe(pcrOf(kernel, Buffer.from(cmdline), ...ramdisks));
      independentSignatureCheck(
        raw.sections[5]!.data,
        res.measurements.PCR0,
        der,
        curve === 'P-384' ? 'sha384' : curve === 'P-256' ? 'sha256' : 'sha512',
      );
      const d = await describeEif(out);
      expect(d.IsSigned).toBe(true);
      expect(d.SignatureCheck).toBe(true);
      expect(d.CheckCRC).toBe(true);
      expect(d.Measurements).toEqual(res.measurements);
      expect(Object.keys(d)).toEqual([
        'EifVersion',
        'Measurements',
        'IsSigned',
        'SigningCertificate',
        'CheckCRC',
        'SignatureCheck',
        'ImageName',
        'ImageVersion',
        'Metadata',
      ]);
      expect(d.SigningCertificate!.IssuerName).toEqual({
        commonName: 'eif signer',
        countryName: 'US',
        organizationName: 'Example',
      });
      expect(d.SigningCertificate!.Algorithm).toBe(
        `ecdsa-with-SHA${curve === 'P-384' ? 384 : curve === 'P-256' ? 256 : 512}`,
      );
      expect(d.SigningCertificate!.NotBefore).toBe(new X509Certificate(der).validFrom);
      expect(d.SigningCertificate!.Signature).toMatch(/^[0-9A-F]{2}(:[0-9A-F]{2})+$/);
      expect(d.Metadata).toEqual({
        ...META.BuildMetadata,
        DockerInfo: { Id: 'sha256:00' },
        team: 'x',
      });
      const v = await verifyEif(out, { certificate: leaf.pem });
      expect(v.measurements.PCR8).toBe(res.measurements.PCR8);
      // nitro-cli pcr --signing-certificate
      const certFile = join(dir, `cert-${curve}.pem`);
      await writeFile(certFile, leaf.pem);
      expect(await pcr(certFile, { signingCertificate: true })).toEqual({
        PCR8: res.measurements.PCR8,
      });
    });
  }

  it('signEif adds a signature to an unsigned image without changing PCR0/1/2, and replaces one', async () => {
    const out = join(dir, 'later.eif');
    const unsigned = await writeEif({ output: out, kernel, cmdline, metadata: META, ramdisks });
    expect(unsigned.measurements.PCR8).toBeUndefined();
    await expectCode(verifyEif(out), 'ERR_EIF_NOT_SIGNED');
    const a = issueCertificate({ subject: 'a' });
    const b = issueCertificate({ subject: 'b', curve: 'P-256' });
    const signed = await signEif(out, {
      signing: { privateKey: a.privateKey, certificate: a.pem },
    });
    expect(signed.measurements.PCR0).toBe(unsigned.measurements.PCR0);
    expect(signed.measurements.PCR2).toBe(unsigned.measurements.PCR2);
    expect(signed.measurements.PCR8).toBe(pcrOf(Buffer.from(a.certificate)));
    const other = join(dir, 'later-b.eif');
    const resigned = await signEif(out, {
      output: other,
      signing: { privateKey: b.privateKey, certificate: b.pem },
    });
    expect(resigned.measurements.PCR8).toBe(pcrOf(Buffer.from(b.certificate)));
    const img = await readEif(other);
    expect(img.sections.map((s) => s.kind)).toEqual([
      'kernel',
      'cmdline',
      'metadata',
      'ramdisk',
      'ramdisk',
      'signature',
    ]);
    expect(img.metadataBytes!.equals((await readEif(out)).metadataBytes!)).toBe(true);
    await expectCode(verifyEif(other, { certificate: a.pem }), 'ERR_EIF_SIGNATURE_INVALID');
    await expectCode(
      verifyEif(other, { pcr8: signed.measurements.PCR8! }),
      'ERR_EIF_SIGNATURE_INVALID',
    );
    await verifyEif(other, { pcr8: resigned.measurements.PCR8! });
  });

  it('a tampered signature or a signature over another PCR0 fails the check', async () => {
    const leaf = issueCertificate({});
    const out = join(dir, 'tamper.eif');
    await writeEif({
      output: out,
      kernel,
      cmdline,
      metadata: META,
      ramdisks,
      signing: { privateKey: leaf.privateKey, certificate: leaf.pem },
    });
    const file = await readFile(out);
    const raw = parseRaw(file);
    const sig = raw.sections[5]!;
    // Flip the last byte of the COSE signature (the last integer of the CBOR array).
    const t1 = Buffer.from(file);
    const lastPos = sig.offset + 12 + sig.data.length - 1;
    t1[lastPos] = t1[lastPos]! < 23 ? t1[lastPos]! ^ 1 : t1[lastPos]! ^ 1;
    const p1 = join(dir, 'tamper-sig.eif');
    await writeFile(p1, fixCrc(t1));
    const d1 = await describeEif(p1);
    expect(d1.IsSigned).toBe(true);
    expect(d1.SignatureCheck).toBe(false);
    const e = await expectCode(verifyEif(p1), 'ERR_EIF_SIGNATURE_INVALID');
    expect(e.message).toMatch(/does not verify/);
    // The same signature moved onto another image (different ramdisk): payload != PCR0.
    const other = join(dir, 'other.eif');
    await writeEif({
      output: other,
      kernel,
      cmdline,
      metadata: META,
      ramdisks: [ramdisks[0]!, bytes(40_000, 99)],
    });
    const o = await readFile(other);
    const sigSection = file.subarray(sig.offset);
    const grafted = Buffer.concat([o, sigSection]);
    grafted.writeUInt16BE(6, 26);
    grafted.writeBigUInt64BE(BigInt(o.length), 28 + 8 * 5);
    grafted.writeBigUInt64BE(BigInt(sig.data.length), 284 + 8 * 5);
    const p2 = join(dir, 'grafted.eif');
    await writeFile(p2, fixCrc(grafted));
    expect((await describeEif(p2)).SignatureCheck).toBe(false);
    const e2 = await expectCode(verifyEif(p2), 'ERR_EIF_SIGNATURE_INVALID');
    expect(e2.message).toMatch(/PCR0/);
    // Garbage in the signature section is a typed error.
    const t3 = Buffer.from(file);
    t3[sig.offset + 12] = 0xff;
    const p3 = join(dir, 'garbage-sig.eif');
    await writeFile(p3, fixCrc(t3));
    await expectCode(readEif(p3), 'ERR_EIF_BAD_SIGNATURE_SECTION');
  });

  it('an expired certificate fails verification unless validity is ignored', async () => {
    const leaf = issueCertificate({
      notBefore: Date.now() - 10 * 86_400_000,
      notAfter: Date.now() - 86_400_000,
    });
    const out = join(dir, 'expired.eif');
    await writeEif({
      output: out,
      kernel,
      cmdline,
      metadata: META,
      ramdisks,
      signing: { privateKey: leaf.privateKey, certificate: leaf.pem },
    });
    await expectCode(verifyEif(out), 'ERR_EIF_SIGNATURE_INVALID');
    await verifyEif(out, { at: false });
  });

  it('key problems are ERR_EIF_SIGNING_KEY and happen before anything is written', async () => {
    const a = issueCertificate({});
    const b = issueCertificate({});
    expect(() => loadSigningKey({ privateKey: a.privateKey, certificate: b.pem })).toThrow(
      /does not match/,
    );
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    expect(() => loadSigningKey({ privateKey: rsa.privateKey, certificate: a.pem })).toThrow(
      EifError,
    );
    expect(() => loadSigningKey({ privateKey: 'not a key', certificate: a.pem })).toThrow(
      /private key/,
    );
    expect(() => loadSigningKey({ privateKey: a.privateKey, certificate: 'nope' })).toThrow(
      /certificate/,
    );
    // DER certificate input is accepted; the section stores PEM as nitro-cli does.
    const k = loadSigningKey({
      privateKey: createPrivateKey(a.privateKey.export({ type: 'sec1', format: 'pem' })),
      certificate: a.certificate,
    });
    expect(k.certificatePem.toString()).toContain('BEGIN CERTIFICATE');
    const out = join(dir, 'never.eif');
    await expectCode(
      writeEif({
        output: out,
        kernel,
        cmdline,
        metadata: META,
        ramdisks,
        signing: { privateKey: a.privateKey, certificate: b.pem },
      }),
      'ERR_EIF_SIGNING_KEY',
    );
    await expect(readFile(out)).rejects.toThrow();
  });

  it('pcr(file) is SHA-384(zeros || SHA-384(bytes)) like nitro-cli pcr --input', async () => {
    const f = join(dir, 'blob');
    const data = bytes(3_000_000, 5);
    await writeFile(f, data);
    const want = createHash('sha384').update(Buffer.alloc(48)).update(sha384(data)).digest('hex');
    expect(await pcr(f)).toEqual({ PCR: want });
    await expectCode(pcr(join(dir, 'missing')), 'ERR_EIF_READ');
  });
});
