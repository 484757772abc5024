// Real AF_VSOCK suite: runs inside ../shared/tools/vsock-vm (vsock loopback, CID 1) through
// `pnpm test:vm`. The enclave side reaches KMS the way it does on AWS: credentials from the
// parent's relay over vsock, KMS through a vsock port the parent forwards to KMS over TCP,
// with TLS end to end (the forwarder only sees ciphertext).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { CreateKeyCommand, DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { NsmClient, NsmSimulator } from '@enclave-extras/nsm';
import {
  CID_LOCAL,
  createServer,
  kernelTransport,
  connect as vsockConnect,
} from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AttestedKmsClient,
  createCredentialsRelay,
  fromParentInstance,
  recipientAttestationPolicy,
} from '../../src/index.js';
import { createLocalKms, type LocalKms } from '../../src/local/index.js';

const inVm = process.env.VSOCK_VM === '1';
if (!inVm) console.log('kms VM suite SKIPPED: not inside vsock-vm (run `pnpm test:vm`)');

const CREDS = { accessKeyId: 'AKIDVMTEST', secretAccessKey: 'vm-secret', sessionToken: 'vm-token' };
const RELAY_PORT = 21000;
const KMS_PORT = 21001;

describe.skipIf(!inVm)('attested KMS over real AF_VSOCK', () => {
  const dir = inVm ? mkdtempSync('/tmp/kms-vm-') : '';
  let kms: LocalKms;
  let cert: Buffer;
  let kmsTcpPort: number;
  let forwarded = 0;
  const open = new Set<{ destroy(): void }>();
  const forwarder = createServer({ transport: kernelTransport }, (v) => {
    forwarded++;
    open.add(v);
    v.on('close', () => open.delete(v));
    const t = netConnect({ host: '127.0.0.1', port: kmsTcpPort });
    v.pipe(t).pipe(v);
    v.on('error', () => t.destroy());
    t.on('error', () => v.destroy());
  });
  let relay: Awaited<ReturnType<typeof createCredentialsRelay>>;
  let sim: NsmSimulator;

  beforeAll(async () => {
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
        '/CN=kms.us-east-1.amazonaws.com',
        '-addext',
        'subjectAltName=DNS:kms.us-east-1.amazonaws.com',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    cert = readFileSync(join(dir, 'cert.pem'));
    sim = new NsmSimulator();
    kms = await createLocalKms({
      dataDir: join(dir, 'kms'),
      credentials: [CREDS],
      roots: [(await sim.devRoot()).pem],
      tls: { key: readFileSync(join(dir, 'key.pem')), cert },
    });
    kmsTcpPort = Number(new URL(await kms.listen()).port);
    await new Promise<void>((r) => forwarder.listen({ port: KMS_PORT }, r));
    relay = await createCredentialsRelay({
      provider: async () => ({ ...CREDS, expiration: new Date(Date.now() + 3600_000) }),
      listen: { port: RELAY_PORT },
      allowCids: [CID_LOCAL], // the test dials over vsock loopback: the peer is local(1)
      transport: kernelTransport,
    });
  });
  afterAll(async () => {
    await relay?.close();
    for (const s of open) s.destroy(); // keep-alive connections of the enclave client
    await new Promise<void>((r) => forwarder.close(() => r()));
    await kms?.close();
  });

  it('fromParentInstance reads the relayed credentials over AF_VSOCK', async () => {
    const c = await fromParentInstance({
      cid: CID_LOCAL,
      port: RELAY_PORT,
      transport: kernelTransport,
    })();
    expect(c.accessKeyId).toBe(CREDS.accessKeyId);
    expect(c.sessionToken).toBe(CREDS.sessionToken);
    expect(relay.served).toBeGreaterThan(0);
  });

  it('attested Decrypt with credentials and KMS traffic both over vsock, TLS end to end', async () => {
    // The "parent": creates a key pinned to the simulator's PCR0 and encrypts (plain TCP to KMS).
    const parent = new KMSClient({
      endpoint: `https://127.0.0.1:${kmsTcpPort}`,
      region: 'us-east-1',
      credentials: CREDS,
      maxAttempts: 1,
      requestHandler: (await import('../../src/index.js')).createDialingRequestHandler({
        connect: async () => netConnect({ host: '127.0.0.1', port: kmsTcpPort }),
        ca: cert,
        servername: 'kms.us-east-1.amazonaws.com',
      }),
    });
    const nsm = await NsmClient.open({ transport: sim });
    const policy = recipientAttestationPolicy({
      accountId: '111122223333',
      document: await nsm.getAttestationDocument({}),
    });
    const keyId = (await parent.send(new CreateKeyCommand({ Policy: JSON.stringify(policy) })))
      .KeyMetadata!.KeyId!;
    const { CiphertextBlob } = await parent.send(
      new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('over vsock') }),
    );

    // The "enclave": the real KMS host name, reached through vsock CID 1 (CID 3 on AWS).
    const enclave = new AttestedKmsClient({
      endpoint: 'https://kms.us-east-1.amazonaws.com',
      region: 'us-east-1',
      maxAttempts: 1,
      credentials: fromParentInstance({
        cid: CID_LOCAL,
        port: RELAY_PORT,
        transport: kernelTransport,
      }),
      attestation: { nsm },
      ca: cert,
      connect: async () =>
        new Promise((resolve, reject) => {
          const s = vsockConnect(
            { cid: CID_LOCAL, port: KMS_PORT, transport: kernelTransport },
            () => resolve(s),
          );
          s.once('error', reject);
        }),
    });
    const before = forwarded;
    const out = await enclave.send(new DecryptCommand({ CiphertextBlob }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('over vsock');
    expect(forwarded).toBeGreaterThan(before);
    enclave.destroy();
    parent.destroy();
    await nsm.close();
  });
});
