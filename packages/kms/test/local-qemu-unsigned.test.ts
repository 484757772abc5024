// QEMU's nitro-enclave machine emulates the NSM but signs nothing (COSE alg -1, zero signature,
// no AWS chain). The local KMS refuses such documents by default, even with roots configured;
// only the loudly named development option insecureAcceptUnsignedQemuAttestation lets them in,
// and the key policy's PCR0 condition still applies to what the document claims.
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateKeyCommand, DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { createCertificateChain } from '@enclave-extras/attestation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptCiphertextForRecipient } from '../src/index.js';
import { createLocalKms, type LocalKms } from '../src/local/index.js';

const CREDS = { accessKeyId: 'AKIDQEMU', secretAccessKey: 'qemu-secret' };
const PCR0 = createHash('sha384').update('local image').digest();
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const spki = rsa.publicKey.export({ format: 'der', type: 'spki' });

// A minimal CBOR encoder for the document QEMU 10's hw/virtio/virtio-nsm.c builds.
type C = number | string | Uint8Array | null | C[] | Map<C, C>;
function head(major: number, n: number): Buffer {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
  if (n < 0x10000) return Buffer.from([(major << 5) | 25, n >> 8, n & 0xff]);
  if (n < 0x100000000) {
    const b = Buffer.alloc(5);
    b[0] = (major << 5) | 26;
    b.writeUInt32BE(n, 1);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = (major << 5) | 27;
  b.writeBigUInt64BE(BigInt(n), 1);
  return b;
}
function cbor(v: C): Buffer {
  if (v === null) return Buffer.from([0xf6]);
  if (typeof v === 'number') return v >= 0 ? head(0, v) : head(1, -1 - v);
  if (typeof v === 'string') return Buffer.concat([head(3, Buffer.byteLength(v)), Buffer.from(v)]);
  if (v instanceof Uint8Array) return Buffer.concat([head(2, v.length), v]);
  if (Array.isArray(v)) return Buffer.concat([head(4, v.length), ...v.map(cbor)]);
  return Buffer.concat([head(5, v.size), ...[...v].flatMap(([k, x]) => [cbor(k), cbor(x)])]);
}
function qemuDocument(pcr0: Uint8Array, signature = new Uint8Array(64)): Uint8Array {
  const pcrs = new Map<C, C>();
  for (let i = 0; i < 16; i++) pcrs.set(i, i === 0 ? pcr0 : new Uint8Array(48));
  const payload = new Map<C, C>([
    ['module_id', 'i-local-enc0011223344556677'],
    ['digest', 'SHA384'],
    ['timestamp', Date.now()],
    ['pcrs', pcrs],
    ['certificate', new Uint8Array(64)],
    ['cabundle', [new Uint8Array(64)]],
    ['public_key', new Uint8Array(spki)],
    ['user_data', null],
    ['nonce', null],
  ]);
  return cbor([cbor(new Map<C, C>([[1, -1]])), new Map(), cbor(payload), signature]);
}

const recipient = (d: Uint8Array) => ({
  KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256' as const,
  AttestationDocument: d,
});

async function refusal(p: Promise<unknown>): Promise<{ name: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return { name: (err as Error).name, message: (err as Error).message };
  }
  throw new Error('expected the request to be refused');
}

interface Started {
  kms: LocalKms;
  client: KMSClient;
  ciphertext: Uint8Array;
  warnings: string[];
}
const dirs: string[] = [];
const started: Started[] = [];

async function start(insecure: boolean | undefined): Promise<Started> {
  const dir = mkdtempSync(join(tmpdir(), 'ee-kms-qemu-'));
  dirs.push(dir);
  const warnings: string[] = [];
  const noop = () => {};
  const kms = await createLocalKms({
    dataDir: dir,
    credentials: [CREDS],
    roots: [createCertificateChain().root.pem],
    ...(insecure === undefined ? {} : { insecureAcceptUnsignedQemuAttestation: insecure }),
    logger: { debug: noop, info: noop, error: noop, warn: (_o, m) => warnings.push(m ?? '') },
  });
  const endpoint = await kms.listen();
  const client = new KMSClient({
    endpoint,
    region: 'us-east-1',
    credentials: CREDS,
    maxAttempts: 1,
  });
  const account = 'arn:aws:iam::111122223333:root';
  const policy = {
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Principal: { AWS: account }, Action: ['kms:Encrypt'], Resource: '*' },
      {
        Effect: 'Allow',
        Principal: { AWS: account },
        Action: ['kms:Decrypt'],
        Resource: '*',
        Condition: {
          StringEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': PCR0.toString('hex') },
        },
      },
    ],
  };
  const { KeyMetadata } = await client.send(
    new CreateKeyCommand({ Policy: JSON.stringify(policy) }),
  );
  const { CiphertextBlob } = await client.send(
    new EncryptCommand({ KeyId: KeyMetadata?.KeyId, Plaintext: Buffer.from('local secret') }),
  );
  const s = { kms, client, ciphertext: CiphertextBlob as Uint8Array, warnings };
  started.push(s);
  return s;
}

let off: Started;
let on: Started;
beforeAll(async () => {
  off = await start(undefined);
  on = await start(true);
});
afterAll(async () => {
  for (const s of started) await s.kms.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('unsigned QEMU attestation documents', () => {
  it('are refused by default, naming the development option', async () => {
    const r = await refusal(
      off.client.send(
        new DecryptCommand({
          CiphertextBlob: off.ciphertext,
          Recipient: recipient(qemuDocument(PCR0)),
        }),
      ),
    );
    expect(r.name).toBe('ValidationException');
    expect(r.message).toContain('ERR_ATTESTATION_UNSUPPORTED_ALG');
    expect(r.message).toContain('insecureAcceptUnsignedQemuAttestation');
    expect(r.message).toContain('--insecure-accept-unsigned-qemu-attestation');
    expect(off.warnings.filter((w) => w.includes('INSECURE'))).toEqual([]);
  });

  it('an explicit false is the same as the default', async () => {
    const explicit = await start(false);
    const r = await refusal(
      explicit.client.send(
        new DecryptCommand({
          CiphertextBlob: explicit.ciphertext,
          Recipient: recipient(qemuDocument(PCR0)),
        }),
      ),
    );
    expect(r.name).toBe('ValidationException');
  });

  it('with insecureAcceptUnsignedQemuAttestation: accepted, loudly, and the PCR0 condition applies', async () => {
    expect(on.warnings.some((w) => w.startsWith('INSECURE DEVELOPMENT MODE'))).toBe(true);
    const out = await on.client.send(
      new DecryptCommand({
        CiphertextBlob: on.ciphertext,
        Recipient: recipient(qemuDocument(PCR0)),
      }),
    );
    expect(
      decryptCiphertextForRecipient(
        Buffer.from(out.CiphertextForRecipient as Uint8Array),
        rsa.privateKey,
      ).toString(),
    ).toBe('local secret');
    expect(
      on.warnings.some((w) => w.includes('accepted an UNSIGNED QEMU attestation document')),
    ).toBe(true);

    const other = createHash('sha384').update('another image').digest();
    const denied = await refusal(
      on.client.send(
        new DecryptCommand({
          CiphertextBlob: on.ciphertext,
          Recipient: recipient(qemuDocument(other)),
        }),
      ),
    );
    expect(denied.name).toBe('AccessDeniedException');
  });

  it('with the option, a document that only looks unsigned (non-zero signature) is still refused', async () => {
    const sig = new Uint8Array(64);
    sig[0] = 1;
    const r = await refusal(
      on.client.send(
        new DecryptCommand({
          CiphertextBlob: on.ciphertext,
          Recipient: recipient(qemuDocument(PCR0, sig)),
        }),
      ),
    );
    expect(r.name).toBe('ValidationException');
  });
});
