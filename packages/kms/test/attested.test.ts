// The attested client through the real @aws-sdk/client-kms over HTTP(S) to the local attested
// KMS, with documents from the NSM simulator (the same CBOR protocol as /dev/nsm).
import { execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateKeyCommand,
  DecryptCommand,
  DeriveSharedSecretCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyPairCommand,
  GenerateRandomCommand,
  KMSClient,
} from '@aws-sdk/client-kms';
import { parseDocument } from '@enclave-extras/attestation';
import { NsmClient, NsmSimulator } from '@enclave-extras/nsm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttestedKmsClient, encryptForRecipient, KmsError, withAttestation } from '../src/index.js';
import { createLocalKms, type LocalKms } from '../src/local/index.js';

const CREDS = { accessKeyId: 'AKIDATTESTEDCLIENT', secretAccessKey: 'attested-client-secret' };
const PCR0 = createHash('sha384').update('attested client test image').digest('hex');

let dir: string;
let kms: LocalKms;
let endpoint: string;
let nsm: NsmClient;
let plain: KMSClient;
let pinnedKey: string;
let otherKey: string;

function policy(pcr0: string): string {
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'admin',
        Effect: 'Allow',
        Principal: { AWS: 'arn:aws:iam::111122223333:root' },
        Action: ['kms:Encrypt', 'kms:DescribeKey'],
        Resource: '*',
      },
      {
        Sid: 'enclave',
        Effect: 'Allow',
        Principal: { AWS: 'arn:aws:iam::111122223333:root' },
        Action: [
          'kms:Decrypt',
          'kms:GenerateDataKey',
          'kms:GenerateDataKeyPair',
          'kms:GenerateRandom',
        ],
        Resource: '*',
        Condition: { StringEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': pcr0 } },
      },
    ],
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ee-kms-attested-'));
  const sim = new NsmSimulator({ pcrs: { 0: PCR0 } });
  nsm = await NsmClient.open({ transport: sim });
  const root = await sim.devRoot();
  kms = await createLocalKms({
    dataDir: join(dir, 'kms'),
    credentials: [CREDS],
    roots: [root.pem],
  });
  endpoint = await kms.listen();
  plain = new KMSClient({ endpoint, region: 'us-east-1', credentials: CREDS, maxAttempts: 1 });
  pinnedKey = (await plain.send(new CreateKeyCommand({ Policy: policy(PCR0) }))).KeyMetadata!
    .KeyId!;
  otherKey = (await plain.send(new CreateKeyCommand({ Policy: policy('ab'.repeat(48)) })))
    .KeyMetadata!.KeyId!;
});

afterAll(async () => {
  await kms?.close();
  await nsm?.close();
  rmSync(dir, { recursive: true, force: true });
});

function attested(over: Partial<ConstructorParameters<typeof AttestedKmsClient>[0]> = {}) {
  return new AttestedKmsClient({
    endpoint,
    region: 'us-east-1',
    credentials: CREDS,
    maxAttempts: 1,
    attestation: { nsm },
    ...over,
  });
}

describe('AttestedKmsClient against the local attested KMS', () => {
  it('Decrypt: Plaintext filled, CiphertextForRecipient removed; the plain client is refused', async () => {
    const { CiphertextBlob } = await plain.send(
      new EncryptCommand({ KeyId: pinnedKey, Plaintext: Buffer.from('only for the enclave') }),
    );
    const out = await attested().send(new DecryptCommand({ CiphertextBlob }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('only for the enclave');
    expect(out.CiphertextForRecipient).toBeUndefined();
    expect(out.KeyId).toContain(pinnedKey);
    await expect(plain.send(new DecryptCommand({ CiphertextBlob }))).rejects.toMatchObject({
      name: 'AccessDeniedException',
    });
  });

  it('GenerateDataKey, GenerateDataKeyPair and GenerateRandom fill their plaintext fields', async () => {
    const c = attested();
    const dk = await c.send(new GenerateDataKeyCommand({ KeyId: pinnedKey, KeySpec: 'AES_256' }));
    expect(dk.Plaintext).toHaveLength(32);
    const back = await c.send(new DecryptCommand({ CiphertextBlob: dk.CiphertextBlob }));
    expect(Buffer.from(back.Plaintext!).equals(Buffer.from(dk.Plaintext!))).toBe(true);

    const pair = await c.send(
      new GenerateDataKeyPairCommand({ KeyId: pinnedKey, KeyPairSpec: 'ECC_NIST_P256' }),
    );
    const priv = createPrivateKey({
      key: Buffer.from(pair.PrivateKeyPlaintext!),
      format: 'der',
      type: 'pkcs8',
    });
    const pub = createPublicKey(priv).export({ format: 'der', type: 'spki' });
    expect(pub.equals(Buffer.from(pair.PublicKey!))).toBe(true);
    expect(pair.CiphertextForRecipient).toBeUndefined();

    const r = await c.send(new GenerateRandomCommand({ NumberOfBytes: 48 }));
    expect(r.Plaintext).toHaveLength(48);
  });

  it('withAttestation on a user KMSClient; the document carries the ephemeral key', async () => {
    const c = new KMSClient({ endpoint, region: 'us-east-1', credentials: CREDS, maxAttempts: 1 });
    const session = withAttestation(c, { nsm });
    const { CiphertextBlob } = await c.send(
      new EncryptCommand({ KeyId: pinnedKey, Plaintext: Buffer.from('x') }),
    );
    await c.send(new DecryptCommand({ CiphertextBlob }));
    const cur = session.current!;
    const doc = parseDocument(cur.attestationDocument);
    expect(Buffer.from(doc.publicKey!).equals(Buffer.from(cur.publicKey))).toBe(true);
    expect(
      createPublicKey({ key: Buffer.from(cur.publicKey), format: 'der', type: 'spki' })
        .asymmetricKeyDetails?.modulusLength,
    ).toBe(2048);
  });

  it('rotates the key after keyRotationMs and refreshes the document after documentMaxAgeMs', async () => {
    let t = Date.now();
    const c = attested({
      attestation: { nsm, now: () => t, keyRotationMs: 60_000, documentMaxAgeMs: 10_000 },
    });
    const { CiphertextBlob } = await plain.send(
      new EncryptCommand({ KeyId: pinnedKey, Plaintext: Buffer.from('rotate') }),
    );
    await c.send(new DecryptCommand({ CiphertextBlob }));
    const first = c.attestation.current!;
    t += 11_000; // document too old, key still fresh
    await c.send(new DecryptCommand({ CiphertextBlob }));
    const second = c.attestation.current!;
    expect(Buffer.from(second.publicKey).equals(Buffer.from(first.publicKey))).toBe(true);
    expect(second.documentCreatedAt).toBeGreaterThan(first.documentCreatedAt);
    t += 60_000; // key too old
    const out = await c.send(new DecryptCommand({ CiphertextBlob }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('rotate');
    expect(Buffer.from(c.attestation.current!.publicKey).equals(Buffer.from(first.publicKey))).toBe(
      false,
    );
  });

  it('prepare() creates the key and document before the first call', async () => {
    const c = attested();
    expect(c.attestation.current).toBeUndefined();
    const m = await c.attestation.prepare();
    expect(parseDocument(m.attestationDocument).publicKey).toEqual(m.publicKey);
    c.attestation.rotate();
    expect(c.attestation.current).toBeUndefined();
  });

  it('a key pinned to another PCR0 refuses the attested client', async () => {
    const { CiphertextBlob } = await plain.send(
      new EncryptCommand({ KeyId: otherKey, Plaintext: Buffer.from('no') }),
    );
    await expect(attested().send(new DecryptCommand({ CiphertextBlob }))).rejects.toMatchObject({
      name: 'AccessDeniedException',
    });
  });

  it('leaves calls that bring their own Recipient untouched', async () => {
    const c = attested();
    const session = c.attestation;
    const out = await c.send(
      new GenerateRandomCommand({
        NumberOfBytes: 8,
        Recipient: {
          KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
          AttestationDocument: (await session.prepare()).attestationDocument,
        },
      }),
    );
    expect(out.Plaintext).toBeUndefined();
    expect(out.CiphertextForRecipient?.length).toBeGreaterThan(0);
  });

  it('an NSM failure is ERR_KMS_ATTESTATION', async () => {
    const broken = { getAttestationDocument: async () => Promise.reject(new Error('device gone')) };
    await expect(
      attested({ attestation: { nsm: broken } }).send(
        new GenerateRandomCommand({ NumberOfBytes: 8 }),
      ),
    ).rejects.toMatchObject({ code: 'ERR_KMS_ATTESTATION' });
  });
});

describe('DeriveSharedSecret (not in the local KMS): a real HTTP server answering like KMS', () => {
  let server: Server;
  let url: string;
  const secret = Buffer.from('ecdh shared secret, 32 bytes ok!');
  const seen: string[] = [];
  beforeAll(async () => {
    server = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push(String(req.headers['x-amz-target']));
        const body = JSON.parse(Buffer.concat(chunks).toString());
        const doc = parseDocument(Buffer.from(body.Recipient.AttestationDocument, 'base64'));
        res.setHeader('content-type', 'application/x-amz-json-1.1');
        res.end(
          JSON.stringify({
            KeyId: body.KeyId,
            KeyAgreementAlgorithm: body.KeyAgreementAlgorithm,
            CiphertextForRecipient: encryptForRecipient(secret, doc.publicKey!).toString('base64'),
          }),
        );
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('fills SharedSecret from CiphertextForRecipient', async () => {
    const out = await attested({ endpoint: url }).send(
      new DeriveSharedSecretCommand({
        KeyId: 'k',
        KeyAgreementAlgorithm: 'ECDH',
        PublicKey: Buffer.from('peer public key'),
      }),
    );
    expect(Buffer.from(out.SharedSecret!).equals(secret)).toBe(true);
    expect(out.CiphertextForRecipient).toBeUndefined();
    expect(seen).toEqual(['TrentService.DeriveSharedSecret']);
  });
});

describe('a KMS that ignores Recipient', () => {
  let server: Server;
  let url: string;
  beforeAll(async () => {
    // A real HTTP server answering like a KMS that does not know about attestation.
    server = createHttpServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.setHeader('content-type', 'application/x-amz-json-1.1');
        res.end(
          JSON.stringify({ KeyId: 'k', Plaintext: Buffer.from('leaked').toString('base64') }),
        );
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const a = server.address() as { port: number };
    url = `http://127.0.0.1:${a.port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('is refused with ERR_KMS_RESPONSE rather than trusting its plaintext', async () => {
    const c = attested({ endpoint: url });
    const err = await c
      .send(new DecryptCommand({ CiphertextBlob: Buffer.from('x') }))
      .catch((e) => e);
    expect(err).toBeInstanceOf(KmsError);
    expect(err.code).toBe('ERR_KMS_RESPONSE');
  });
});

describe('dial seam (connect option)', () => {
  it('dials http endpoints through the given dialer', async () => {
    const port = Number(new URL(endpoint).port);
    const dialled: string[] = [];
    const c = attested({
      endpoint: 'http://kms.enclave.internal:8000',
      connect: async ({ host, port: p }) => {
        dialled.push(`${host}:${p}`);
        return netConnect({ host: '127.0.0.1', port });
      },
    });
    const r = await c.send(new GenerateRandomCommand({ NumberOfBytes: 16 }));
    expect(r.Plaintext).toHaveLength(16);
    expect(dialled[0]).toBe('kms.enclave.internal:8000');
  });

  it('runs TLS end to end over the dialled socket, trusting a dev CA via ca', async () => {
    const tdir = join(dir, 'tls');
    execFileSync('mkdir', ['-p', tdir]);
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=kms.enclave.internal',
        '-addext',
        'subjectAltName=DNS:kms.enclave.internal,IP:127.0.0.1',
        '-keyout',
        join(tdir, 'key.pem'),
        '-out',
        join(tdir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    const cert = readFileSync(join(tdir, 'cert.pem'));
    const sim = new NsmSimulator({ pcrs: { 0: PCR0 } });
    const tlsKms = await createLocalKms({
      dataDir: join(dir, 'kms-tls'),
      credentials: [CREDS],
      roots: [(await sim.devRoot()).pem],
      tls: { key: readFileSync(join(tdir, 'key.pem')), cert },
    });
    const port = Number(new URL(await tlsKms.listen()).port);
    const sockets: Socket[] = [];
    try {
      const c = new AttestedKmsClient({
        endpoint: 'https://kms.enclave.internal',
        region: 'us-east-1',
        credentials: CREDS,
        maxAttempts: 1,
        attestation: { nsm: await NsmClient.open({ transport: sim }) },
        ca: cert,
        connect: async () => {
          const s = netConnect({ host: '127.0.0.1', port });
          sockets.push(s);
          return s;
        },
      });
      const r = await c.send(new GenerateRandomCommand({ NumberOfBytes: 16 }));
      expect(r.Plaintext).toHaveLength(16);
      expect(sockets.length).toBeGreaterThan(0);
      // An IP-literal endpoint is checked against the certificate's IP entry, not "localhost".
      const byIp = new AttestedKmsClient({
        endpoint: 'https://127.0.0.1',
        region: 'us-east-1',
        credentials: CREDS,
        maxAttempts: 1,
        attestation: { nsm: await NsmClient.open({ transport: sim }) },
        ca: cert,
        connect: async () => netConnect({ host: '127.0.0.1', port }),
      });
      expect(
        (await byIp.send(new GenerateRandomCommand({ NumberOfBytes: 8 }))).Plaintext,
      ).toHaveLength(8);
      // Without the dev CA the TLS handshake is refused.
      const untrusted = new AttestedKmsClient({
        endpoint: 'https://kms.enclave.internal',
        region: 'us-east-1',
        credentials: CREDS,
        maxAttempts: 1,
        attestation: { nsm },
        connect: async () => netConnect({ host: '127.0.0.1', port }),
      });
      await expect(
        untrusted.send(new GenerateRandomCommand({ NumberOfBytes: 16 })),
      ).rejects.toThrow(/self[- ]signed|certificate/i);
    } finally {
      await tlsKms.close();
    }
  });

  it('a dialer failing without an errno code becomes ERR_KMS_DIAL naming the target', async () => {
    const c = attested({
      endpoint: 'http://kms.enclave.internal:8000',
      connect: () => Promise.reject('gateway said no'),
    });
    await expect(c.send(new GenerateRandomCommand({ NumberOfBytes: 1 }))).rejects.toMatchObject({
      code: 'ERR_KMS_DIAL',
      address: 'kms.enclave.internal:8000',
      syscall: 'connect',
    });
  });

  it('a failing dialer surfaces its error', async () => {
    const c = attested({
      endpoint: 'http://kms.enclave.internal:8000',
      connect: async () => {
        throw Object.assign(new Error('connect ECONNREFUSED vm(3):8000'), { code: 'ECONNREFUSED' });
      },
    });
    await expect(c.send(new GenerateRandomCommand({ NumberOfBytes: 1 }))).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    });
  });
});
