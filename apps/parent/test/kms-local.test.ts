// Spawns the built `ee-parent kms-local` and talks to it with the real AWS SDK client.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
// The SDK is a dependency of @enclave-extras/kms; resolve it from there.
// Minimal typing of the few SDK parts used here (the app itself does not depend on the SDK).
interface KmsOut {
  KeyMetadata?: { KeyId?: string };
  CiphertextBlob?: Uint8Array;
  Plaintext?: Uint8Array;
}
type Cmd = new (input: object) => object;
interface Sdk {
  KMSClient: new (cfg: object) => { send(cmd: object): Promise<KmsOut> };
  CreateKeyCommand: Cmd;
  EncryptCommand: Cmd;
  DecryptCommand: Cmd;
  ListKeysCommand: Cmd;
}
const sdk = createRequire(new URL('../../../packages/kms/package.json', import.meta.url))(
  '@aws-sdk/client-kms',
) as Sdk;

const CREDS = { accessKeyId: 'AKIDCLITEST', secretAccessKey: 'cli-secret' };
let dir: string;
let child: ChildProcess;
let endpoint: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ee-kms-local-cli-'));
  child = spawn(
    process.execPath,
    [cli, 'kms-local', '--data-dir', join(dir, 'data'), '--port', '0', '--log-level', 'warn'],
    {
      env: {
        ...process.env,
        AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  endpoint = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /kms-local listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`kms-local exited early with ${code}`)));
  });
});

afterAll(() => {
  if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('ee-parent kms-local', () => {
  it('serves KMS to the AWS SDK and persists keys', async () => {
    const kc = new sdk.KMSClient({
      endpoint,
      region: 'us-east-1',
      credentials: CREDS,
      maxAttempts: 1,
    });
    const { KeyMetadata } = await kc.send(new sdk.CreateKeyCommand({}));
    const enc = await kc.send(
      new sdk.EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: Buffer.from('hi') }),
    );
    const dec = await kc.send(new sdk.DecryptCommand({ CiphertextBlob: enc.CiphertextBlob }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('hi');
    expect(statSync(join(dir, 'data', 'keys', `${KeyMetadata!.KeyId}.json`)).mode & 0o777).toBe(
      0o600,
    );
    const bad = new sdk.KMSClient({
      endpoint,
      region: 'us-east-1',
      credentials: { ...CREDS, secretAccessKey: 'x' },
      maxAttempts: 1,
    });
    await expect(bad.send(new sdk.ListKeysCommand({}))).rejects.toMatchObject({
      name: 'InvalidSignatureException',
    });
  });

  it('exits 0 on SIGTERM', async () => {
    const code = await new Promise<number | null>((resolve) => {
      child.once('exit', (c) => resolve(c));
      child.kill('SIGTERM');
    });
    expect(code).toBe(0);
  });

  it('exits 2 on usage errors, naming the flag', () => {
    const noCreds = spawnSync(process.execPath, [cli, 'kms-local', '--data-dir', dir], {
      env: { PATH: process.env.PATH ?? '' },
      encoding: 'utf8',
    });
    expect(noCreds.status).toBe(2);
    expect(noCreds.stderr).toContain('--access-key-id');
    const badPort = spawnSync(
      process.execPath,
      [
        cli,
        'kms-local',
        '--data-dir',
        dir,
        '--port',
        'x',
        '--access-key-id',
        'a',
        '--secret-access-key',
        'b',
      ],
      { encoding: 'utf8' },
    );
    expect(badPort.status).toBe(2);
    expect(badPort.stderr).toContain('--port');
    const noDir = spawnSync(process.execPath, [cli, 'kms-local'], { encoding: 'utf8' });
    expect(noDir.status).toBe(2);
    expect(noDir.stderr).toContain('--data-dir');
  });

  it('reads kms-local.yaml: several credentials, principals seen by key policies, paths relative to the file', async () => {
    const cfgDir = join(dir, 'cfg');
    const yaml = join(dir, 'kms-local.yaml');
    writeFileSync(
      yaml,
      [
        `dataDir: ${join('cfg', 'data')}`,
        'listen: { host: 127.0.0.1, port: 0 }',
        'region: eu-west-1',
        'accountId: "444455556666"',
        'credentials:',
        '  - { accessKeyId: AKIDADMIN, secretAccessKey: admin-secret }',
        '  - { accessKeyId: AKIDAPP, secretAccessKey: app-secret, principal: "arn:aws:iam::444455556666:role/app" }',
      ].join('\n'),
    );
    const c = spawn(process.execPath, [cli, 'kms-local', '--config', yaml, '--log-level', 'warn'], {
      env: { PATH: process.env.PATH ?? '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const ep = await new Promise<string>((resolve, reject) => {
        let out = '';
        c.stdout!.on('data', (b: Buffer) => {
          out += b.toString();
          const m = /kms-local listening on (\S+)/.exec(out);
          if (m) resolve(m[1]!);
        });
        c.once('exit', (code) => reject(new Error(`exited ${code}`)));
      });
      const admin = new sdk.KMSClient({
        endpoint: ep,
        region: 'eu-west-1',
        credentials: { accessKeyId: 'AKIDADMIN', secretAccessKey: 'admin-secret' },
        maxAttempts: 1,
      });
      const app = new sdk.KMSClient({
        endpoint: ep,
        region: 'eu-west-1',
        credentials: { accessKeyId: 'AKIDAPP', secretAccessKey: 'app-secret' },
        maxAttempts: 1,
      });
      const policy = {
        Statement: [
          {
            Effect: 'Allow',
            Principal: { AWS: 'arn:aws:iam::444455556666:user/AKIDADMIN' },
            Action: ['kms:Encrypt'],
            Resource: '*',
          },
          {
            Effect: 'Allow',
            Principal: { AWS: 'arn:aws:iam::444455556666:role/app' },
            Action: ['kms:Decrypt'],
            Resource: '*',
          },
        ],
      };
      const { KeyMetadata } = await admin.send(
        new sdk.CreateKeyCommand({ Policy: JSON.stringify(policy) }),
      );
      expect(KeyMetadata?.KeyId).toBeDefined();
      const enc = await admin.send(
        new sdk.EncryptCommand({
          KeyId: KeyMetadata!.KeyId,
          Plaintext: Buffer.from('for the app'),
        }),
      );
      const dec = await app.send(new sdk.DecryptCommand({ CiphertextBlob: enc.CiphertextBlob }));
      expect(Buffer.from(dec.Plaintext!).toString()).toBe('for the app');
      await expect(
        admin.send(new sdk.DecryptCommand({ CiphertextBlob: enc.CiphertextBlob })),
      ).rejects.toMatchObject({ name: 'AccessDeniedException' });
      expect(statSync(join(cfgDir, 'data', 'keys')).isDirectory()).toBe(true);
    } finally {
      c.kill('SIGTERM');
    }
  });

  it('a config error exits 2 naming the key and the file position', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'dataDir: x\naccountId: 12\n');
    const r = spawnSync(process.execPath, [cli, 'kms-local', '--config', bad], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '' },
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/bad\.yaml:2:\d+: accountId/);
  });
});
