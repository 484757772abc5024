// pnpm --filter @enclave-extras/kms bench
// Prints costs as ratios against baselines measured in the same run:
//  1. CMS decrypt/encrypt vs the bare node:crypto floor (RSA-OAEP + AES-CBC on the same bytes),
//  2. an attested Decrypt vs a plain Decrypt, both through @aws-sdk/client-kms to the local KMS.
import {
  constants,
  createCipheriv,
  createDecipheriv,
  generateKeyPairSync,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateKeyCommand, DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { NsmClient, NsmSimulator } from '@enclave-extras/nsm';
import {
  AttestedKmsClient,
  decryptCiphertextForRecipient,
  encryptForRecipient,
} from '../dist/index.js';
import { createLocalKms } from '../dist/local/index.js';

// The machine is shared: candidates are measured in interleaved rounds and each reports the
// median round, so a burst of load hits baseline and candidate alike.
async function compare(title, rounds, n, cases) {
  console.log(title);
  const per = cases.map(() => []);
  for (const [, fn] of cases) for (let i = 0; i < Math.min(10, n); i++) await fn(); // warm-up
  for (let r = 0; r < rounds; r++) {
    for (let c = 0; c < cases.length; c++) {
      const fn = cases[c][1];
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) await fn();
      per[c].push(Number(process.hrtime.bigint() - t0) / 1000 / n);
    }
  }
  const med = per.map((xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]);
  cases.forEach(([label], c) => {
    console.log(
      `  ${label.padEnd(46)} ${med[c].toFixed(1).padStart(9)} us/op   x${(med[c] / med[0]).toFixed(2)}`,
    );
  });
}

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const spki = publicKey.export({ format: 'der', type: 'spki' });
const plaintext = randomBytes(32); // a data key, the usual payload
const ber = encryptForRecipient(plaintext, spki);

// The floor: exactly the crypto the CMS layer must do, without any parsing/encoding.
const cek = randomBytes(32);
const iv = randomBytes(16);
const wrapped = publicEncrypt(
  { key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
  cek,
);
const c = createCipheriv('aes-256-cbc', cek, iv);
const ct = Buffer.concat([c.update(plaintext), c.final()]);

const rsaOaep = { padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' };
await compare('CMS EnvelopedData decrypt (32-byte payload, RSA-2048)', 7, 40, [
  [
    'floor: privateDecrypt OAEP + AES-256-CBC',
    () => {
      const k = privateDecrypt({ key: privateKey, ...rsaOaep }, wrapped);
      const d = createDecipheriv('aes-256-cbc', k, iv);
      return Buffer.concat([d.update(ct), d.final()]);
    },
  ],
  ['decryptCiphertextForRecipient', () => decryptCiphertextForRecipient(ber, privateKey)],
]);
await compare('CMS EnvelopedData encrypt', 7, 100, [
  [
    'floor: publicEncrypt OAEP + AES-256-CBC',
    () => {
      publicEncrypt({ key: publicKey, ...rsaOaep }, cek);
      const e = createCipheriv('aes-256-cbc', cek, iv);
      return Buffer.concat([e.update(plaintext), e.final()]);
    },
  ],
  ['encryptForRecipient (DER SPKI, as the local KMS)', () => encryptForRecipient(plaintext, spki)],
]);

const dir = mkdtempSync(join(tmpdir(), 'ee-kms-bench-'));
const sim = new NsmSimulator();
const nsm = await NsmClient.open({ transport: sim });
const creds = { accessKeyId: 'AKIDBENCH', secretAccessKey: 'bench' };
const kms = await createLocalKms({
  dataDir: dir,
  credentials: [creds],
  roots: [(await sim.devRoot()).pem],
});
try {
  const endpoint = await kms.listen();
  const plain = new KMSClient({ endpoint, region: 'us-east-1', credentials: creds });
  const attested = new AttestedKmsClient({
    endpoint,
    region: 'us-east-1',
    credentials: creds,
    attestation: { nsm },
  });
  const keyId = (await plain.send(new CreateKeyCommand({}))).KeyMetadata.KeyId;
  const { CiphertextBlob } = await plain.send(
    new EncryptCommand({ KeyId: keyId, Plaintext: plaintext }),
  );
  const t0 = process.hrtime.bigint();
  await new AttestedKmsClient({
    endpoint,
    region: 'us-east-1',
    credentials: creds,
    attestation: { nsm },
  }).send(new DecryptCommand({ CiphertextBlob }));
  const first = { us: Number(process.hrtime.bigint() - t0) / 1000 };
  console.log(
    `  (first attested call: RSA keygen + document: ${(first.us / 1000).toFixed(0)} ms; prepare() moves it to start-up)`,
  );
  await compare('KMS Decrypt through @aws-sdk/client-kms over HTTP to the local KMS', 5, 10, [
    ['plain Decrypt (no Recipient)', () => plain.send(new DecryptCommand({ CiphertextBlob }))],
    [
      'attested Decrypt (cached key + document)',
      () => attested.send(new DecryptCommand({ CiphertextBlob })),
    ],
  ]);
} finally {
  await kms.close();
  rmSync(dir, { recursive: true, force: true });
}
