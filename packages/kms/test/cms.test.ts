import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptCiphertextForRecipient, encryptForRecipient, KmsError } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const sharedCms = resolve(here, '../../../../shared/fixtures/cms');
const hasFixtures = existsSync(join(sharedCms, 'kms-recipient-hello-world.ber'));
if (!hasFixtures) console.warn(`[kms] SKIPPING shared CMS fixture tests: ${sharedCms} is missing`);

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const openssl = hasOpenssl();
if (!openssl) console.warn('[kms] SKIPPING OpenSSL cross-checks: openssl is not on PATH');

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof KmsError)) throw err;
    return err.code;
  }
  return 'no error';
}

describe.skipIf(!hasFixtures)('shared fixture (AWS-shaped CiphertextForRecipient)', () => {
  it('decrypts to "Hello, World"', () => {
    const ber = readFileSync(join(sharedCms, 'kms-recipient-hello-world.ber'));
    const key = readFileSync(join(sharedCms, 'kms-recipient-hello-world.key.pem'), 'utf8');
    expect(decryptCiphertextForRecipient(ber, key).toString('latin1')).toBe('Hello, World');
  });

  it('rejects every truncation with a typed error', () => {
    const ber = readFileSync(join(sharedCms, 'kms-recipient-hello-world.ber'));
    const key = readFileSync(join(sharedCms, 'kms-recipient-hello-world.key.pem'), 'utf8');
    const codes = new Set<string>();
    for (let n = 0; n < ber.length - 1; n++)
      codes.add(codeOf(() => decryptCiphertextForRecipient(ber.subarray(0, n), key)));
    expect(codes.has('no error')).toBe(false);
    expect(codes.has('ERR_KMS_CMS_TRUNCATED')).toBe(true);
  });

  it('rejects another RSA key as ERR_KMS_CMS_WRONG_RECIPIENT', () => {
    const ber = readFileSync(join(sharedCms, 'kms-recipient-hello-world.ber'));
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    expect(codeOf(() => decryptCiphertextForRecipient(ber, other))).toBe(
      'ERR_KMS_CMS_WRONG_RECIPIENT',
    );
  });
});

describe.skipIf(!openssl)('OpenSSL cross-checks', () => {
  let dir: string;
  let keyPem: string;
  const cert = (): string => join(dir, 'cert.pem');
  const plaintext = Buffer.from('attested secret \u2713 '.repeat(300));

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'kms-cms-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-subj',
        '/CN=recipient',
        '-days',
        '1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        cert(),
      ],
      { stdio: 'ignore' },
    );
    keyPem = readFileSync(join(dir, 'key.pem'), 'utf8');
    writeFileSync(join(dir, 'plain.bin'), plaintext);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function opensslEncrypt(extra: string[], oaep = true): Buffer {
    const out = join(dir, `out-${randomBytes(4).toString('hex')}.der`);
    execFileSync('openssl', [
      'cms',
      '-encrypt',
      '-binary',
      '-in',
      join(dir, 'plain.bin'),
      '-recip',
      cert(),
      ...(oaep ? ['-keyopt', 'rsa_padding_mode:oaep', '-keyopt', 'rsa_oaep_md:sha256'] : []),
      '-outform',
      'DER',
      '-out',
      out,
      ...extra,
    ]);
    return readFileSync(out);
  }

  it('decrypts DER output (definite lengths, primitive [0])', () => {
    const der = opensslEncrypt(['-aes-256-cbc']);
    expect(der[1]).not.toBe(0x80);
    expect(decryptCiphertextForRecipient(der, keyPem).equals(plaintext)).toBe(true);
  });

  it('decrypts -stream output (BER, indefinite lengths, chunked constructed [0])', () => {
    const ber = opensslEncrypt(['-aes-256-cbc', '-stream']);
    expect(ber[1]).toBe(0x80);
    expect(decryptCiphertextForRecipient(ber, keyPem).equals(plaintext)).toBe(true);
  });

  it('refuses AES-128-CBC and PKCS#1 v1.5 as ERR_KMS_CMS_UNSUPPORTED_ALGORITHM', () => {
    expect(
      codeOf(() => decryptCiphertextForRecipient(opensslEncrypt(['-aes-128-cbc']), keyPem)),
    ).toBe('ERR_KMS_CMS_UNSUPPORTED_ALGORITHM');
    expect(
      codeOf(() => decryptCiphertextForRecipient(opensslEncrypt(['-aes-256-cbc'], false), keyPem)),
    ).toBe('ERR_KMS_CMS_UNSUPPORTED_ALGORITHM');
  });

  it('openssl cms -decrypt accepts encryptForRecipient output (both content forms)', () => {
    const spki = execFileSync('openssl', ['x509', '-in', cert(), '-noout', '-pubkey']);
    const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'DER'], { input: spki });
    for (const contentForm of ['constructed', 'primitive'] as const) {
      const ber = encryptForRecipient(plaintext, der, { contentForm, chunkSize: 700 });
      const file = join(dir, `ours-${contentForm}.ber`);
      writeFileSync(file, ber);
      const out = execFileSync('openssl', [
        'cms',
        '-decrypt',
        '-binary',
        '-inform',
        'DER',
        '-in',
        file,
        '-inkey',
        join(dir, 'key.pem'),
      ]);
      expect(out.equals(plaintext)).toBe(true);
    }
  });

  it('encryptForRecipient output has AWS shape (indefinite lengths, SKI = SHA-256 of the SPKI)', () => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const spki = publicKey.export({ format: 'der', type: 'spki' });
    const ber = encryptForRecipient(Buffer.from('x'), spki);
    const dump = execFileSync('openssl', ['asn1parse', '-inform', 'DER', '-i'], {
      input: ber,
    }).toString();
    expect(dump).toMatch(/l=inf\s+cons: SEQUENCE/);
    expect(dump).toContain('rsaesOaep');
    expect(dump).toContain('mgf1');
    expect(dump).toContain('aes-256-cbc');
    expect(dump).toMatch(/l=inf\s+cons:\s+cont \[ 0 \]/);
    const ski = createHash('sha256').update(spki).digest().toString('hex').toUpperCase();
    expect(ber.toString('hex').toUpperCase()).toContain(`8020${ski}`);
  });
});

describe('round trip and rejections without external tools', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = publicKey.export({ format: 'der', type: 'spki' });

  it('round-trips every length around the block size', () => {
    for (const n of [0, 1, 15, 16, 17, 31, 32, 33, 1023, 1024, 1025, 4096]) {
      const p = randomBytes(n);
      expect(
        decryptCiphertextForRecipient(
          encryptForRecipient(p, spki, { chunkSize: 100 }),
          privateKey,
        ).equals(p),
      ).toBe(true);
    }
  });

  it('accepts the recipient key as DER SPKI, public KeyObject or private KeyObject', () => {
    for (const k of [spki, publicKey, privateKey]) {
      const ber = encryptForRecipient(Buffer.from('k'), k);
      expect(decryptCiphertextForRecipient(ber, privateKey).toString()).toBe('k');
    }
  });

  it('detects bad padding', () => {
    // Flip a bit in the IV-side of the last block: the padding bytes change.
    const ber = encryptForRecipient(Buffer.from('0123456789abcdef'), spki, {
      contentForm: 'primitive',
    });
    // layout: ... [0] 0x80 0x20 <32 bytes>, 00 00 x3 at the end
    const end = ber.length - 6; // past the content
    const tampered = Buffer.from(ber);
    tampered[end - 17] = (tampered[end - 17] as number) ^ 0x01; // last byte of the first block
    expect(codeOf(() => decryptCiphertextForRecipient(tampered, privateKey))).toBe(
      'ERR_KMS_CMS_BAD_PADDING',
    );
  });

  it('rejects non-RSA and public keys as ERR_KMS_INVALID_ARGUMENT', () => {
    const ber = encryptForRecipient(Buffer.from('x'), spki);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    expect(codeOf(() => decryptCiphertextForRecipient(ber, ec))).toBe('ERR_KMS_INVALID_ARGUMENT');
    expect(codeOf(() => decryptCiphertextForRecipient(ber, 'not a key'))).toBe(
      'ERR_KMS_INVALID_ARGUMENT',
    );
    expect(codeOf(() => encryptForRecipient(Buffer.from('x'), Buffer.from('nope')))).toBe(
      'ERR_KMS_INVALID_ARGUMENT',
    );
  });

  it('rejects garbage as malformed/truncated', () => {
    expect(codeOf(() => decryptCiphertextForRecipient(Buffer.alloc(0), privateKey))).toBe(
      'ERR_KMS_CMS_TRUNCATED',
    );
    expect(
      codeOf(() => decryptCiphertextForRecipient(Buffer.from([0x04, 0x01, 0x00]), privateKey)),
    ).toBe('ERR_KMS_CMS_MALFORMED');
    expect(
      codeOf(() =>
        decryptCiphertextForRecipient(Buffer.from([0x30, 0x80, 0x30, 0x80]), privateKey),
      ),
    ).toBe('ERR_KMS_CMS_TRUNCATED');
  });

  it('mutation loop: never an untyped throw, never a wrong plaintext', () => {
    const plain = Buffer.from('Hello, mutation');
    const base = encryptForRecipient(plain, spki, { chunkSize: 5 });
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const seen = new Map<string, number>();
    for (let i = 0; i < 600; i++) {
      const m = Buffer.from(base);
      const kind = rnd(4);
      if (kind === 0) m[rnd(m.length)] = rnd(256);
      else if (kind === 1) {
        const at = rnd(m.length);
        m[at] = (m[at] as number) ^ (1 << rnd(8));
      } else if (kind === 2) m[rnd(m.length)] = [0x00, 0x80, 0xff, 0x7f][rnd(4)] as number;
      const input = kind === 3 ? m.subarray(0, rnd(m.length)) : m;
      let code: string;
      try {
        const out = decryptCiphertextForRecipient(input, privateKey);
        // AES-CBC in CMS has no integrity (as in AWS's format): a flipped IV or ciphertext bit can
        // still yield well-padded output. Only the type of the outcome is asserted here.
        expect(Buffer.isBuffer(out)).toBe(true);
        code = out.equals(plain) ? 'ok' : 'altered';
      } catch (err) {
        expect(err).toBeInstanceOf(KmsError);
        code = (err as KmsError).code;
        expect(code).toMatch(/^ERR_KMS_CMS_/);
      }
      seen.set(code, (seen.get(code) ?? 0) + 1);
    }
    expect(seen.size).toBeGreaterThan(2);
  });
});
