// The local KMS through the real @aws-sdk/client-kms over HTTP: nothing stubbed in between.
import { execFileSync } from 'node:child_process';
import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  type Hash,
  type Hmac,
  sign,
  verify,
} from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyPairCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  GenerateRandomCommand,
  GetKeyPolicyCommand,
  KMSClient,
  ListKeysCommand,
  PutKeyPolicyCommand,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Checksum, SourceData } from '@smithy/types';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalKms, type LocalKms } from '../src/local/index.js';

const CREDS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-key-for-tests' };
let dataDir: string;
let kms: LocalKms;
let endpoint: string;

function client(over: Partial<ConstructorParameters<typeof KMSClient>[0]> = {}): KMSClient {
  return new KMSClient({
    endpoint,
    region: 'us-east-1',
    credentials: CREDS,
    maxAttempts: 1,
    ...over,
  });
}

async function refusal(
  p: Promise<unknown>,
): Promise<{ name: string; message: string; status?: number }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, message: e.message, status: e.$metadata?.httpStatusCode };
  }
  throw new Error('expected the request to be refused');
}

/** SHA-256 / HMAC for @smithy/signature-v4 (the SDK's signer) over node:crypto. */
class Sha256 implements Checksum {
  private readonly secret: Buffer | undefined;
  private h: Hash | Hmac;
  constructor(secret?: SourceData) {
    this.secret =
      secret === undefined
        ? undefined
        : typeof secret === 'string'
          ? Buffer.from(secret)
          : ArrayBuffer.isView(secret)
            ? Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength)
            : Buffer.from(secret);
    this.h = this.fresh();
  }
  private fresh(): Hash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', this.secret);
  }
  update(d: Uint8Array): void {
    this.h.update(d);
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.h.digest());
  }
  reset(): void {
    this.h = this.fresh();
  }
}

/** One raw HTTP request to the local KMS with exactly these headers. */
function rawPost(
  headers: Record<string, string>,
  body: string | Buffer,
): Promise<{ status: number; json: { __type?: string; message?: string; [k: string]: unknown } }> {
  const url = new URL(endpoint);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, method: 'POST', path: '/', headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            json: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ee-kms-local-'));
  kms = await createLocalKms({ dataDir, credentials: [CREDS] });
  endpoint = await kms.listen();
});

afterAll(async () => {
  await kms?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('local KMS over the AWS SDK', () => {
  it('creates and describes a key, persisted 0600 in dataDir', async () => {
    const kc = client();
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({ Description: 'test key' }));
    expect(KeyMetadata?.KeyId).toMatch(/^[0-9a-f-]{36}$/);
    expect(KeyMetadata?.Arn).toBe(`arn:aws:kms:us-east-1:111122223333:key/${KeyMetadata?.KeyId}`);
    expect(KeyMetadata?.KeySpec).toBe('SYMMETRIC_DEFAULT');
    expect(KeyMetadata?.CreationDate).toBeInstanceOf(Date);
    const d = await kc.send(new DescribeKeyCommand({ KeyId: KeyMetadata!.Arn }));
    expect(d.KeyMetadata?.Description).toBe('test key');
    const file = join(dataDir, 'keys', `${KeyMetadata!.KeyId}.json`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dataDir, 'keys')).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    const { Keys } = await kc.send(new ListKeysCommand({}));
    expect(Keys?.map((k) => k.KeyId)).toContain(KeyMetadata!.KeyId);
  });

  it('encrypts and decrypts with encryption context bound as AAD', async () => {
    const kc = client();
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({}));
    const secret = new TextEncoder().encode('the secret');
    const ctx = { purpose: 'test', tenant: 'a' };
    const enc = await kc.send(
      new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: secret, EncryptionContext: ctx }),
    );
    expect(enc.KeyId).toBe(KeyMetadata!.Arn);
    const dec = await kc.send(
      new DecryptCommand({
        CiphertextBlob: enc.CiphertextBlob,
        EncryptionContext: { tenant: 'a', purpose: 'test' },
      }),
    );
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('the secret');
    expect(dec.KeyId).toBe(KeyMetadata!.Arn);

    const wrongCtx = await refusal(
      kc.send(
        new DecryptCommand({
          CiphertextBlob: enc.CiphertextBlob,
          EncryptionContext: { tenant: 'b', purpose: 'test' },
        }),
      ),
    );
    expect(wrongCtx.name).toBe('InvalidCiphertextException');
    const tampered = Buffer.from(enc.CiphertextBlob!);
    tampered[tampered.length - 20]! ^= 1;
    expect(
      (
        await refusal(
          kc.send(new DecryptCommand({ CiphertextBlob: tampered, EncryptionContext: ctx })),
        )
      ).name,
    ).toBe('InvalidCiphertextException');
    expect(
      (
        await refusal(
          kc.send(new DecryptCommand({ CiphertextBlob: Buffer.from('not a blob at all, no') })),
        )
      ).name,
    ).toBe('InvalidCiphertextException');

    const other = await kc.send(new CreateKeyCommand({}));
    const wrongKey = await refusal(
      kc.send(
        new DecryptCommand({
          CiphertextBlob: enc.CiphertextBlob,
          EncryptionContext: ctx,
          KeyId: other.KeyMetadata!.KeyId,
        }),
      ),
    );
    expect(wrongKey.name).toBe('IncorrectKeyException');
  });

  it('validates inputs with KMS-shaped errors', async () => {
    const kc = client();
    const nf = await refusal(
      kc.send(
        new EncryptCommand({
          KeyId: '00000000-0000-4000-8000-000000000000',
          Plaintext: new Uint8Array([1]),
        }),
      ),
    );
    expect(nf.name).toBe('NotFoundException');
    expect(nf.status).toBe(400);
    expect(nf.message).toContain('does not exist');
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({}));
    const big = await refusal(
      kc.send(new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: new Uint8Array(4097) })),
    );
    expect(big.name).toBe('ValidationException');
    const both = await refusal(
      kc.send(
        new GenerateDataKeyCommand({
          KeyId: KeyMetadata!.KeyId,
          KeySpec: 'AES_256',
          NumberOfBytes: 32,
        }),
      ),
    );
    expect(both.name).toBe('ValidationException');
    const spec = await refusal(
      kc.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'SIGN_VERIFY' })),
    );
    expect(spec.name).toBe('UnsupportedOperationException');
  });

  it('generates data keys with and without plaintext', async () => {
    const kc = client();
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({}));
    const dk = await kc.send(
      new GenerateDataKeyCommand({ KeyId: KeyMetadata!.KeyId, KeySpec: 'AES_256' }),
    );
    expect(dk.Plaintext).toHaveLength(32);
    const back = await kc.send(new DecryptCommand({ CiphertextBlob: dk.CiphertextBlob }));
    expect(Buffer.from(back.Plaintext!).equals(Buffer.from(dk.Plaintext!))).toBe(true);
    const dk16 = await kc.send(
      new GenerateDataKeyCommand({ KeyId: KeyMetadata!.KeyId, NumberOfBytes: 16 }),
    );
    expect(dk16.Plaintext).toHaveLength(16);
    const wp = await kc.send(
      new GenerateDataKeyWithoutPlaintextCommand({
        KeyId: KeyMetadata!.KeyId,
        KeySpec: 'AES_128',
        EncryptionContext: { a: 'b' },
      }),
    );
    expect((wp as { Plaintext?: Uint8Array }).Plaintext).toBeUndefined();
    const wpBack = await kc.send(
      new DecryptCommand({ CiphertextBlob: wp.CiphertextBlob, EncryptionContext: { a: 'b' } }),
    );
    expect(wpBack.Plaintext).toHaveLength(16);
  });

  it('generates data key pairs that sign and verify, private key recoverable by Decrypt', async () => {
    const kc = client();
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({}));
    for (const spec of ['ECC_NIST_P256', 'RSA_2048'] as const) {
      const pair = await kc.send(
        new GenerateDataKeyPairCommand({ KeyId: KeyMetadata!.KeyId, KeyPairSpec: spec }),
      );
      expect(pair.KeyPairSpec).toBe(spec);
      const pub = createPublicKey({
        key: Buffer.from(pair.PublicKey!),
        format: 'der',
        type: 'spki',
      });
      const priv = createPrivateKey({
        key: Buffer.from(pair.PrivateKeyPlaintext!),
        format: 'der',
        type: 'pkcs8',
      });
      const sig = sign('sha256', Buffer.from('msg'), priv);
      expect(verify('sha256', Buffer.from('msg'), pub, sig)).toBe(true);
      const back = await kc.send(
        new DecryptCommand({ CiphertextBlob: pair.PrivateKeyCiphertextBlob }),
      );
      expect(Buffer.from(back.Plaintext!).equals(Buffer.from(pair.PrivateKeyPlaintext!))).toBe(
        true,
      );
    }
  });

  it('generates random bytes', async () => {
    const kc = client();
    const a = await kc.send(new GenerateRandomCommand({ NumberOfBytes: 64 }));
    const b = await kc.send(new GenerateRandomCommand({ NumberOfBytes: 64 }));
    expect(a.Plaintext).toHaveLength(64);
    expect(Buffer.from(a.Plaintext!).equals(Buffer.from(b.Plaintext!))).toBe(false);
    expect((await refusal(kc.send(new GenerateRandomCommand({ NumberOfBytes: 1025 })))).name).toBe(
      'ValidationException',
    );
  });

  it('stores, returns and enforces key policies', async () => {
    const kc = client();
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({}));
    const got = await kc.send(
      new GetKeyPolicyCommand({ KeyId: KeyMetadata!.KeyId, PolicyName: 'default' }),
    );
    expect(JSON.parse(got.Policy!).Statement[0].Action).toBe('kms:*');
    const policy = JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        {
          Effect: 'Allow',
          Principal: { AWS: 'arn:aws:iam::111122223333:root' },
          Action: ['kms:Encrypt', 'kms:GetKeyPolicy', 'kms:PutKeyPolicy', 'kms:DescribeKey'],
          Resource: '*',
        },
        {
          Effect: 'Allow',
          Principal: '*',
          Action: 'kms:Decrypt',
          Resource: '*',
          Condition: { StringEquals: { 'kms:EncryptionContext:app': 'ok' } },
        },
      ],
    });
    await kc.send(
      new PutKeyPolicyCommand({ KeyId: KeyMetadata!.KeyId, PolicyName: 'default', Policy: policy }),
    );
    expect((await kc.send(new GetKeyPolicyCommand({ KeyId: KeyMetadata!.KeyId }))).Policy).toBe(
      policy,
    );
    const ok = await kc.send(
      new EncryptCommand({
        KeyId: KeyMetadata!.KeyId,
        Plaintext: new Uint8Array([7]),
        EncryptionContext: { app: 'ok' },
      }),
    );
    await kc.send(
      new DecryptCommand({ CiphertextBlob: ok.CiphertextBlob, EncryptionContext: { app: 'ok' } }),
    );
    const noCtx = await kc.send(
      new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: new Uint8Array([7]) }),
    );
    const denied = await refusal(
      kc.send(new DecryptCommand({ CiphertextBlob: noCtx.CiphertextBlob })),
    );
    expect(denied.name).toBe('AccessDeniedException');
    expect(denied.message).toContain('kms:EncryptionContext:app');
    const gdk = await refusal(
      kc.send(new GenerateDataKeyCommand({ KeyId: KeyMetadata!.KeyId, KeySpec: 'AES_256' })),
    );
    expect(gdk.name).toBe('AccessDeniedException');
    const bad = await refusal(
      kc.send(
        new PutKeyPolicyCommand({
          KeyId: KeyMetadata!.KeyId,
          PolicyName: 'default',
          Policy: '{"Statement":[{"Effect":"Maybe"}]}',
        }),
      ),
    );
    expect(bad.name).toBe('MalformedPolicyDocumentException');
  });

  it('refuses keys pending deletion', async () => {
    const kc = client();
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({}));
    const enc = await kc.send(
      new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: new Uint8Array([1]) }),
    );
    const del = await kc.send(
      new ScheduleKeyDeletionCommand({ KeyId: KeyMetadata!.KeyId, PendingWindowInDays: 7 }),
    );
    expect(del.KeyState).toBe('PendingDeletion');
    const r = await refusal(kc.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob })));
    expect(r.name).toBe('KMSInvalidStateException');
  });
});

describe('SigV4 verification', () => {
  it('refuses a wrong secret, an unknown access key, a wrong region and clock skew', async () => {
    const wrongSecret = await refusal(
      client({ credentials: { ...CREDS, secretAccessKey: 'nope' } }).send(new ListKeysCommand({})),
    );
    expect(wrongSecret.name).toBe('InvalidSignatureException');
    expect(wrongSecret.message).toContain('signature');
    const unknown = await refusal(
      client({ credentials: { accessKeyId: 'AKIDUNKNOWN', secretAccessKey: 'x' } }).send(
        new ListKeysCommand({}),
      ),
    );
    expect(unknown.name).toBe('UnrecognizedClientException');
    const region = await refusal(client({ region: 'eu-west-1' }).send(new ListKeysCommand({})));
    expect(region.name).toBe('InvalidSignatureException');
    expect(region.message).toContain('region');
    const skewed = await refusal(
      client({ systemClockOffset: -10 * 60_000 }).send(new ListKeysCommand({})),
    );
    expect(skewed.name).toBe('InvalidSignatureException');
    expect(skewed.message).toContain('Signature expired');
  });

  it('requires X-Amz-Target among SignedHeaders: a captured DescribeKey cannot be replayed as ScheduleKeyDeletion', async () => {
    const kc = client();
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({}));
    const keyId = KeyMetadata!.KeyId!;
    const url = new URL(endpoint);
    const body = JSON.stringify({ KeyId: keyId });
    const signWith = async (unsigned: string[]) => {
      const signer = new SignatureV4({
        service: 'kms',
        region: 'us-east-1',
        credentials: CREDS,
        sha256: Sha256,
      });
      const signed = await signer.sign(
        {
          method: 'POST',
          protocol: 'http:',
          hostname: url.hostname,
          port: Number(url.port),
          path: '/',
          query: {},
          headers: {
            host: url.host,
            'content-type': 'application/x-amz-json-1.1',
            'x-amz-target': 'TrentService.DescribeKey',
          },
          body,
        },
        { unsignableHeaders: new Set(unsigned) },
      );
      return signed.headers as Record<string, string>;
    };

    // Control: signed as the SDK does (x-amz-target included), the request is served.
    const good = await signWith([]);
    expect(good.authorization).toMatch(/SignedHeaders=[^,]*x-amz-target/);
    const ok = await rawPost(good, body);
    expect(ok.status).toBe(200);
    expect((ok.json.KeyMetadata as { KeyId: string }).KeyId).toBe(keyId);

    // Signed without x-amz-target: refused as a bad signature, as DescribeKey ...
    const captured = await signWith(['x-amz-target']);
    expect(captured.authorization).not.toContain('x-amz-target');
    const asSigned = await rawPost(captured, body);
    expect(asSigned.status).toBe(400);
    expect(asSigned.json.__type).toBe('InvalidSignatureException');
    expect(asSigned.json.message).toContain('X-Amz-Target');
    // ... and replayed as another operation.
    const replay = await rawPost(
      { ...captured, 'x-amz-target': 'TrentService.ScheduleKeyDeletion' },
      body,
    );
    expect(replay.status).toBe(400);
    expect(replay.json.__type).toBe('InvalidSignatureException');
    const after = await kc.send(new DescribeKeyCommand({ KeyId: keyId }));
    expect(after.KeyMetadata?.KeyState).toBe('Enabled');
  });

  it('refuses an unsigned request and a body altered after signing', async () => {
    const res = await fetch(endpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-amz-json-1.1',
        'x-amz-target': 'TrentService.ListKeys',
      },
      body: '{}',
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { __type: string }).__type).toBe(
      'MissingAuthenticationTokenException',
    );

    // Sign a request with the SDK, then change its body on the wire.
    const kc = client();
    kc.middlewareStack.add(
      (next) => async (args) => {
        const req = args.request as { body: string | Uint8Array };
        const text = typeof req.body === 'string' ? req.body : Buffer.from(req.body).toString();
        expect(text).toContain('"NumberOfBytes":8');
        req.body = text.replace('"NumberOfBytes":8', '"NumberOfBytes":9');
        return next(args);
      },
      { step: 'finalizeRequest', priority: 'low', name: 'tamper' },
    );
    const r = await refusal(kc.send(new GenerateRandomCommand({ NumberOfBytes: 8 })));
    expect(r.name).toBe('InvalidSignatureException');
  });
});

describe('other clients while a key pair is generated', () => {
  it('answers a ListKeys sent while an RSA-4096 data key pair is being generated before that pair', async () => {
    const kc = client();
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({}));
    const order: string[] = [];
    let listed: Promise<unknown> | undefined;
    // The moment the server has the GenerateDataKeyPair request, another client asks ListKeys.
    const onRequest = (req: IncomingMessage) => {
      if (req.headers['x-amz-target'] === 'TrentService.GenerateDataKeyPair' && !listed) {
        listed = client()
          .send(new ListKeysCommand({}))
          .then((out) => {
            order.push('ListKeys');
            return out;
          });
      }
    };
    kms.server.on('request', onRequest);
    try {
      const pair = await kc.send(
        new GenerateDataKeyPairCommand({ KeyId: KeyMetadata!.KeyId, KeyPairSpec: 'RSA_4096' }),
      );
      order.push('GenerateDataKeyPair');
      expect(listed).toBeDefined();
      const keys = (await listed) as { Keys?: unknown[] };
      expect(keys.Keys?.length).toBeGreaterThan(0);
      // With a synchronous generation the server could not read ListKeys until the pair was done.
      expect(order).toEqual(['ListKeys', 'GenerateDataKeyPair']);
      const pub = createPublicKey({
        key: Buffer.from(pair.PublicKey!),
        format: 'der',
        type: 'spki',
      });
      expect(pub.asymmetricKeyDetails?.modulusLength).toBe(4096);
    } finally {
      kms.server.off('request', onRequest);
    }
  });
});

describe('request size', () => {
  it('answers a body over 1 MiB with a 400 ValidationException instead of resetting the connection', async () => {
    // Through the SDK: a 1 MiB plaintext is 1.33 MiB of JSON.
    const kc = client();
    const big = await refusal(
      kc.send(new EncryptCommand({ KeyId: 'alias/any', Plaintext: Buffer.alloc(1024 * 1024, 7) })),
    );
    expect(big.name).toBe('ValidationException');
    expect(big.status).toBe(400);
    expect(big.message).toContain('1048576');
    // Raw: just over the limit, and several MiB, with a keep-alive agent reused afterwards.
    for (const size of [1024 * 1024 + 1, 5 * 1024 * 1024]) {
      const r = await rawPost(
        { 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': 'TrentService.ListKeys' },
        Buffer.alloc(size, 0x20),
      );
      expect(r.status).toBe(400);
      expect(r.json.__type).toBe('ValidationException');
    }
    // A declared length far beyond it: answered at once, then the connection is closed.
    const url = new URL(endpoint);
    const answer = await new Promise<string>((resolve, reject) => {
      const sock = connect({ host: url.hostname, port: Number(url.port) }, () =>
        sock.write(
          `POST / HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.ListKeys\r\nContent-Length: 1000000000\r\n\r\n{`,
        ),
      );
      let text = '';
      sock.on('data', (d: Buffer) => {
        text += d.toString();
      });
      sock.on('close', () => resolve(text));
      sock.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer.toLowerCase()).toContain('connection: close');
    expect(answer).toContain('"__type":"ValidationException"');
    // The server still serves normal requests.
    expect((await kc.send(new ListKeysCommand({}))).Keys?.length).toBeGreaterThan(0);
  });
});

describe('persistence', () => {
  it('keys survive a restart on the same dataDir', async () => {
    const kc = client();
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({}));
    const enc = await kc.send(
      new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: Buffer.from('persist') }),
    );
    const again = await createLocalKms({ dataDir, credentials: [CREDS] });
    const ep2 = await again.listen();
    try {
      const k2 = new KMSClient({
        endpoint: ep2,
        region: 'us-east-1',
        credentials: CREDS,
        maxAttempts: 1,
      });
      const dec = await k2.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob }));
      expect(Buffer.from(dec.Plaintext!).toString()).toBe('persist');
    } finally {
      await again.close();
    }
    expect(readFileSync(join(dataDir, 'keys', `${KeyMetadata!.KeyId}.json`), 'utf8')).toContain(
      KeyMetadata!.KeyId,
    );
  });
});

describe('TLS', () => {
  it('serves HTTPS with the given key and certificate; the SDK trusts it through its CA', async () => {
    // A server certificate for 127.0.0.1 needs a subjectAltName; openssl makes one quickly.
    const keyPem = join(dataDir, 'tls.key');
    const certPem = join(dataDir, 'tls.crt');
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
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        keyPem,
        '-out',
        certPem,
      ],
      { stdio: 'ignore' },
    );
    const tlsKms = await createLocalKms({
      dataDir: join(dataDir, 'tls'),
      credentials: [CREDS],
      tls: { key: readFileSync(keyPem), cert: readFileSync(certPem) },
    });
    const ep = await tlsKms.listen();
    try {
      expect(ep).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const kc = new KMSClient({
        endpoint: ep,
        region: 'us-east-1',
        credentials: CREDS,
        maxAttempts: 1,
        requestHandler: new NodeHttpHandler({
          httpsAgent: new Agent({ ca: readFileSync(certPem) }),
        }),
      });
      const r = await kc.send(new GenerateRandomCommand({ NumberOfBytes: 4 }));
      expect(r.Plaintext).toHaveLength(4);
      // Without trusting the certificate, the connection fails before any KMS exchange.
      const untrusted = new KMSClient({
        endpoint: ep,
        region: 'us-east-1',
        credentials: CREDS,
        maxAttempts: 1,
      });
      await expect(untrusted.send(new GenerateRandomCommand({ NumberOfBytes: 4 }))).rejects.toThrow(
        /self.signed|certificate/i,
      );
    } finally {
      await tlsKms.close();
    }
  });
});
