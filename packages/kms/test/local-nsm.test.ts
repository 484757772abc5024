// The local KMS with documents from the NSM simulator and the package's attested client: what
// an enclave app does, minus the enclave. Every refusal the key policy or verification makes.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateKeyCommand,
  DecryptCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateRandomCommand,
  KMSClient,
} from '@aws-sdk/client-kms';
import { NsmClient, NsmSimulator } from '@enclave-extras/nsm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttestedKmsClient, recipientAttestationPolicy } from '../src/index.js';
import { createLocalKms, type LocalKms } from '../src/local/index.js';

const CREDS = { accessKeyId: 'AKIDNSMSIM', secretAccessKey: 'nsm-sim-secret' };
const PCR0 = createHash('sha384').update('good image').digest('hex');
const BAD_PCR0 = createHash('sha384').update('bad image').digest('hex');

let dir: string;
let kms: LocalKms;
let endpoint: string;
let keyId: string;
let blob: Uint8Array;
const clients: NsmClient[] = [];

async function enclave(pcr0: string, now?: () => number): Promise<NsmClient> {
  const sim = new NsmSimulator({
    stateDir: join(dir, 'nsm'),
    pcrs: { 0: pcr0 },
    ...(now ? { now } : {}),
  });
  const c = await NsmClient.open({ transport: sim });
  clients.push(c);
  return c;
}

function attested(nsm: NsmClient): AttestedKmsClient {
  return new AttestedKmsClient({
    endpoint,
    region: 'us-east-1',
    credentials: CREDS,
    maxAttempts: 1,
    attestation: { nsm },
  });
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
  dir = mkdtempSync(join(tmpdir(), 'ee-kms-local-nsm-'));
  const root = await new NsmSimulator({ stateDir: join(dir, 'nsm') }).devRoot();
  kms = await createLocalKms({
    dataDir: join(dir, 'kms'),
    credentials: [CREDS],
    roots: [root.pem],
  });
  endpoint = await kms.listen();
  const admin = new KMSClient({
    endpoint,
    region: 'us-east-1',
    credentials: CREDS,
    maxAttempts: 1,
  });
  const policy = recipientAttestationPolicy({ accountId: '111122223333', imageSha384: PCR0 });
  const { KeyMetadata } = await admin.send(
    new CreateKeyCommand({ Policy: JSON.stringify(policy) }),
  );
  keyId = KeyMetadata!.KeyId!;
  blob = (
    await admin.send(
      new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('sealed for the good image') }),
    )
  ).CiphertextBlob!;
});

afterAll(async () => {
  for (const c of clients) await c.close();
  await kms?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('local KMS with the NSM simulator and AttestedKmsClient', () => {
  it('the attested enclave decrypts, generates data keys and random bytes', async () => {
    const kc = attested(await enclave(PCR0));
    const out = await kc.send(new DecryptCommand({ CiphertextBlob: blob }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('sealed for the good image');
    const dk = await kc.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256' }));
    expect(dk.Plaintext).toHaveLength(32);
    const rnd = await kc.send(new GenerateRandomCommand({ NumberOfBytes: 16 }));
    expect(rnd.Plaintext).toHaveLength(16);
  });

  it('PCR0 mismatch: AccessDeniedException', async () => {
    const r = await refusal(
      attested(await enclave(BAD_PCR0)).send(new DecryptCommand({ CiphertextBlob: blob })),
    );
    expect(r.name).toBe('AccessDeniedException');
    expect(r.message).toContain('ImageSha384');
  });

  it('missing Recipient (plain client): AccessDeniedException', async () => {
    const plain = new KMSClient({
      endpoint,
      region: 'us-east-1',
      credentials: CREDS,
      maxAttempts: 1,
    });
    const r = await refusal(plain.send(new DecryptCommand({ CiphertextBlob: blob })));
    expect(r.name).toBe('AccessDeniedException');
    expect(r.message).toContain('no Recipient');
  });

  it('stale document (NSM clock 10 minutes behind): ValidationException ERR_ATTESTATION_STALE', async () => {
    const nsm = await enclave(PCR0, () => Date.now() - 10 * 60_000);
    const r = await refusal(attested(nsm).send(new DecryptCommand({ CiphertextBlob: blob })));
    expect(r.name).toBe('ValidationException');
    expect(r.message).toContain('ERR_ATTESTATION_STALE');
  });

  it('tampered document (PCR0 byte changed after signing): ValidationException ERR_ATTESTATION_BAD_SIGNATURE', async () => {
    const nsm = await enclave(BAD_PCR0);
    const doc = Buffer.from(await nsm.getAttestationDocument({ publicKey: Buffer.alloc(0) }));
    // Swap the BAD PCR0 in the signed payload for the GOOD one: policy would pass, signature must not.
    const at = doc.indexOf(Buffer.from(BAD_PCR0, 'hex'));
    expect(at).toBeGreaterThan(0);
    Buffer.from(PCR0, 'hex').copy(doc, at);
    const plain = new KMSClient({
      endpoint,
      region: 'us-east-1',
      credentials: CREDS,
      maxAttempts: 1,
    });
    const r = await refusal(
      plain.send(
        new DecryptCommand({
          CiphertextBlob: blob,
          Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: doc },
        }),
      ),
    );
    expect(r.name).toBe('ValidationException');
    expect(r.message).toContain('ERR_ATTESTATION_BAD_SIGNATURE');
  });
});
