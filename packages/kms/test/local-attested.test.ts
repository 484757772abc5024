// Attested requests to the local KMS through the real AWS SDK: documents signed by a
// development chain (the same signer the NSM simulator uses), refusals for each way an
// attested request can be wrong.
import { execFileSync } from 'node:child_process';
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
} from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateKeyCommand,
  DecryptCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyPairCommand,
  GenerateRandomCommand,
  KMSClient,
} from '@aws-sdk/client-kms';
import {
  type CertificateChain,
  createCertificateChain,
  signDocument,
} from '@enclave-extras/attestation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptCiphertextForRecipient } from '../src/index.js';
import { createLocalKms, type LocalKms } from '../src/local/index.js';

const CREDS = { accessKeyId: 'AKIDATTESTED', secretAccessKey: 'attested-secret' };
const PCR0 = createHash('sha384').update('image').digest();
const OTHER_PCR0 = createHash('sha384').update('another image').digest();

let dir: string;
let kms: LocalKms;
let kc: KMSClient;
let chain: CertificateChain;
let keyId: string;
let ciphertext: Uint8Array;
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const spki = rsa.publicKey.export({ format: 'der', type: 'spki' });

function doc(
  over: {
    pcr0?: Uint8Array;
    timestamp?: number;
    publicKey?: Uint8Array | null;
    signer?: CertificateChain;
  } = {},
): Uint8Array {
  const c = over.signer ?? chain;
  return signDocument(
    {
      moduleId: 'i-local-enc0123456789',
      pcrs: {
        0: over.pcr0 ?? PCR0,
        1: Buffer.alloc(48, 1),
        2: Buffer.alloc(48, 2),
        8: Buffer.alloc(48, 8),
      },
      publicKey: over.publicKey === undefined ? spki : over.publicKey,
      ...(over.timestamp !== undefined ? { timestamp: over.timestamp } : {}),
    },
    { privateKey: c.leaf.privateKey, certificate: c.leaf.certificate, cabundle: c.cabundle },
  );
}

function recipient(d: Uint8Array) {
  return { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256' as const, AttestationDocument: d };
}

async function refusal(p: Promise<unknown>): Promise<{ name: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return { name: (err as Error).name, message: (err as Error).message };
  }
  throw new Error('expected the request to be refused');
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ee-kms-local-att-'));
  chain = createCertificateChain({ name: 'local kms test' });
  kms = await createLocalKms({ dataDir: dir, credentials: [CREDS], roots: [chain.root.pem] });
  const endpoint = await kms.listen();
  kc = new KMSClient({ endpoint, region: 'us-east-1', credentials: CREDS, maxAttempts: 1 });
  const policy = {
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'admin',
        Effect: 'Allow',
        Principal: { AWS: 'arn:aws:iam::111122223333:root' },
        Action: ['kms:Encrypt', 'kms:DescribeKey', 'kms:GetKeyPolicy', 'kms:PutKeyPolicy'],
        Resource: '*',
      },
      {
        Sid: 'enclave',
        Effect: 'Allow',
        Principal: { AWS: 'arn:aws:iam::111122223333:root' },
        Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
        Resource: '*',
        Condition: {
          StringEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': PCR0.toString('hex') },
        },
      },
    ],
  };
  const { KeyMetadata } = await kc.send(new CreateKeyCommand({ Policy: JSON.stringify(policy) }));
  keyId = KeyMetadata!.KeyId!;
  ciphertext = (
    await kc.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('enclave only') }))
  ).CiphertextBlob!;
});

afterAll(async () => {
  await kms?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('attested requests refused', () => {
  it('missing Recipient: AccessDeniedException naming the attestation condition', async () => {
    const r = await refusal(kc.send(new DecryptCommand({ CiphertextBlob: ciphertext })));
    expect(r.name).toBe('AccessDeniedException');
    expect(r.message).toContain('kms:RecipientAttestation:ImageSha384');
    expect(r.message).toContain('no Recipient');
    const g = await refusal(
      kc.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256' })),
    );
    expect(g.name).toBe('AccessDeniedException');
  });

  it('PCR0 mismatch: AccessDeniedException', async () => {
    const r = await refusal(
      kc.send(
        new DecryptCommand({
          CiphertextBlob: ciphertext,
          Recipient: recipient(doc({ pcr0: OTHER_PCR0 })),
        }),
      ),
    );
    expect(r.name).toBe('AccessDeniedException');
    expect(r.message).toContain('ImageSha384 does not satisfy');
  });

  it('stale document: ValidationException ERR_ATTESTATION_STALE', async () => {
    const old = doc({ timestamp: Date.now() - 10 * 60_000 });
    const r = await refusal(
      kc.send(new DecryptCommand({ CiphertextBlob: ciphertext, Recipient: recipient(old) })),
    );
    expect(r.name).toBe('ValidationException');
    expect(r.message).toContain('ERR_ATTESTATION_STALE');
  });

  it('tampered document: ValidationException ERR_ATTESTATION_BAD_SIGNATURE', async () => {
    const d = Buffer.from(doc());
    d[d.length - 5]! ^= 0x01; // inside the raw r||s signature
    const r = await refusal(
      kc.send(new DecryptCommand({ CiphertextBlob: ciphertext, Recipient: recipient(d) })),
    );
    expect(r.name).toBe('ValidationException');
    expect(r.message).toContain('ERR_ATTESTATION_BAD_SIGNATURE');
  });

  it('document from an untrusted root: ValidationException ERR_ATTESTATION_UNTRUSTED_ROOT', async () => {
    const foreign = createCertificateChain({ name: 'foreign', intermediates: 1 });
    const r = await refusal(
      kc.send(
        new GenerateRandomCommand({
          NumberOfBytes: 8,
          Recipient: recipient(doc({ signer: foreign })),
        }),
      ),
    );
    expect(r.name).toBe('ValidationException');
    expect(r.message).toContain('ERR_ATTESTATION_UNTRUSTED_ROOT');
  });

  it('document without public_key or with a non-RSA key: ValidationException', async () => {
    const none = await refusal(
      kc.send(
        new DecryptCommand({
          CiphertextBlob: ciphertext,
          Recipient: recipient(doc({ publicKey: null })),
        }),
      ),
    );
    expect(none.name).toBe('ValidationException');
    expect(none.message).toContain('no public_key');
    const ecKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({
      format: 'der',
      type: 'spki',
    });
    const ec = await refusal(
      kc.send(
        new DecryptCommand({
          CiphertextBlob: ciphertext,
          Recipient: recipient(doc({ publicKey: ecKey })),
        }),
      ),
    );
    expect(ec.name).toBe('ValidationException');
    expect(ec.message).toContain('RSA');
  });

  it('a recipient RSA key under 2048 bits (512, 768, 1024): 400 ValidationException, not a 500 or an answer', async () => {
    for (const bits of [512, 768, 1024]) {
      const weak = generateKeyPairSync('rsa', { modulusLength: bits }).publicKey.export({
        format: 'der',
        type: 'spki',
      });
      let err: { name: string; message: string; $metadata?: { httpStatusCode?: number } };
      try {
        await kc.send(
          new DecryptCommand({
            CiphertextBlob: ciphertext,
            Recipient: recipient(doc({ publicKey: weak })),
          }),
        );
        throw new Error(`a ${bits}-bit recipient key was accepted`);
      } catch (e) {
        err = e as typeof err;
      }
      expect(err.name, `${bits} bits`).toBe('ValidationException');
      expect(err.$metadata?.httpStatusCode).toBe(400);
      expect(err.message).toContain(`${bits}-bit`);
      expect(err.message).toContain('2048');
    }
    const random = await refusal(
      kc.send(
        new GenerateRandomCommand({
          NumberOfBytes: 16,
          Recipient: recipient(
            doc({
              publicKey: generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({
                format: 'der',
                type: 'spki',
              }),
            }),
          ),
        }),
      ),
    );
    expect(random.name).toBe('ValidationException');
  });

  it('unsupported key encryption algorithm: ValidationException', async () => {
    const r = await refusal(
      kc.send(
        new DecryptCommand({
          CiphertextBlob: ciphertext,
          Recipient: {
            KeyEncryptionAlgorithm: 'RSA_OAEP_SHA_1' as 'RSAES_OAEP_SHA_256',
            AttestationDocument: doc(),
          },
        }),
      ),
    );
    expect(r.name).toBe('ValidationException');
  });

  it('a KMS without roots refuses every Recipient', async () => {
    const bare = await createLocalKms({ dataDir: join(dir, 'bare'), credentials: [CREDS] });
    const ep = await bare.listen();
    try {
      const c = new KMSClient({
        endpoint: ep,
        region: 'us-east-1',
        credentials: CREDS,
        maxAttempts: 1,
      });
      const r = await refusal(
        c.send(new GenerateRandomCommand({ NumberOfBytes: 8, Recipient: recipient(doc()) })),
      );
      expect(r.name).toBe('ValidationException');
      expect(r.message).toContain('no trusted attestation roots');
    } finally {
      await bare.close();
    }
  });
});

describe('attested requests answered with CiphertextForRecipient', () => {
  it('Decrypt: CMS for the recipient key, Plaintext empty, decryptable by the package and by openssl cms', async () => {
    const out = await kc.send(
      new DecryptCommand({ CiphertextBlob: ciphertext, Recipient: recipient(doc()) }),
    );
    expect(out.Plaintext).toBeUndefined();
    expect(out.KeyId).toContain(keyId);
    const cms = Buffer.from(out.CiphertextForRecipient!);
    expect(cms[0]).toBe(0x30);
    expect(cms[1]).toBe(0x80); // BER indefinite length, as AWS sends
    expect(decryptCiphertextForRecipient(cms, rsa.privateKey).toString()).toBe('enclave only');

    const keyPem = join(dir, 'recipient.pem');
    const cmsFile = join(dir, 'answer.ber');
    writeFileSync(keyPem, rsa.privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    writeFileSync(cmsFile, cms);
    const plain = execFileSync(
      'openssl',
      ['cms', '-decrypt', '-inform', 'DER', '-in', cmsFile, '-inkey', keyPem],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    expect(plain.toString()).toBe('enclave only');
  });

  it('GenerateDataKey: the data key only inside CMS, same key as the CiphertextBlob holds', async () => {
    const out = await kc.send(
      new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256', Recipient: recipient(doc()) }),
    );
    expect(out.Plaintext).toBeUndefined();
    const dk = decryptCiphertextForRecipient(
      Buffer.from(out.CiphertextForRecipient!),
      rsa.privateKey,
    );
    expect(dk).toHaveLength(32);
    const again = await kc.send(
      new DecryptCommand({ CiphertextBlob: out.CiphertextBlob, Recipient: recipient(doc()) }),
    );
    expect(
      decryptCiphertextForRecipient(
        Buffer.from(again.CiphertextForRecipient!),
        rsa.privateKey,
      ).equals(dk),
    ).toBe(true);
  });

  it('GenerateDataKeyPair: private key only inside CMS, matching the public key', async () => {
    // Allow the pair operation for attested callers on a key of its own.
    const policy = {
      Statement: [
        {
          Effect: 'Allow',
          Principal: '*',
          Action: 'kms:GenerateDataKeyPair',
          Resource: '*',
          Condition: {
            StringEqualsIgnoreCase: { 'kms:RecipientAttestation:PCR0': PCR0.toString('hex') },
          },
        },
      ],
    };
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({ Policy: JSON.stringify(policy) }));
    const out = await kc.send(
      new GenerateDataKeyPairCommand({
        KeyId: KeyMetadata!.KeyId,
        KeyPairSpec: 'ECC_NIST_P256',
        Recipient: recipient(doc()),
      }),
    );
    expect(out.PrivateKeyPlaintext).toBeUndefined();
    const pkcs8 = decryptCiphertextForRecipient(
      Buffer.from(out.CiphertextForRecipient!),
      rsa.privateKey,
    );
    const priv = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    const pub = createPublicKey({ key: Buffer.from(out.PublicKey!), format: 'der', type: 'spki' });
    expect(verify('sha256', Buffer.from('m'), pub, sign('sha256', Buffer.from('m'), priv))).toBe(
      true,
    );
    const denied = await refusal(
      kc.send(
        new GenerateDataKeyPairCommand({
          KeyId: KeyMetadata!.KeyId,
          KeyPairSpec: 'ECC_NIST_P256',
          Recipient: recipient(doc({ pcr0: OTHER_PCR0 })),
        }),
      ),
    );
    expect(denied.name).toBe('AccessDeniedException');
  });

  it('GenerateRandom: bytes only inside CMS', async () => {
    const out = await kc.send(
      new GenerateRandomCommand({ NumberOfBytes: 48, Recipient: recipient(doc()) }),
    );
    expect(out.Plaintext).toBeUndefined();
    expect(
      decryptCiphertextForRecipient(Buffer.from(out.CiphertextForRecipient!), rsa.privateKey),
    ).toHaveLength(48);
  });
});
