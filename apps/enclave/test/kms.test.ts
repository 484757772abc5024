// Spawns the built `ee-enclave kms ...` against the local attested KMS (in this process) with
// attestation documents from NSM simulator daemons.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash, createPrivateKey } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalKms, type LocalKms } from '@enclave-extras/kms/local';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const simulatorBin = new URL('../../../packages/nsm/dist/bin.js', import.meta.url).pathname;
const CREDS = { accessKeyId: 'AKIDENCLAVECLI', secretAccessKey: 'enclave-cli-secret' };
const PCR0 = createHash('sha384').update('cli image').digest('hex');
const OTHER = createHash('sha384').update('other image').digest('hex');

let dir: string;
let kms: LocalKms;
let env: NodeJS.ProcessEnv;
const daemons: ChildProcess[] = [];

async function daemon(name: string, pcr0: string): Promise<string> {
  const sock = join(dir, `${name}.sock`);
  daemons.push(
    spawn(
      process.execPath,
      [simulatorBin, '--socket', sock, '--state-dir', join(dir, 'state'), '--pcr', `0=${pcr0}`],
      { stdio: 'ignore' },
    ),
  );
  for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  if (!existsSync(sock)) throw new Error(`simulator ${name} did not start`);
  return `socket:${sock}`;
}

/** Runs the CLI asynchronously: the KMS answering it lives in this process's event loop. */
function ee(
  args: string[],
  extra: NodeJS.ProcessEnv = {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, 'kms', ...args], { env: { ...env, ...extra } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

let good: string;
let other: string;
let keyArn: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ee-kms-cli-'));
  const root = spawnSync(
    process.execPath,
    [simulatorBin, '--state-dir', join(dir, 'state'), '--print-root'],
    { encoding: 'utf8' },
  ).stdout;
  kms = await createLocalKms({ dataDir: join(dir, 'kms'), credentials: [CREDS], roots: [root] });
  const endpoint = await kms.listen();
  good = await daemon('good', PCR0);
  other = await daemon('other', OTHER);
  const { HTTPS_PROXY: _p, https_proxy: _q, ...rest } = process.env;
  env = {
    ...rest,
    AWS_ENDPOINT_URL_KMS: endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    ENCLAVE_EXTRAS_NSM: good,
  };
  const created = await ee([
    'create-key',
    '--policy-from-nsm',
    '--account-id',
    '111122223333',
    '--description',
    'cli test',
  ]);
  if (created.status !== 0) throw new Error(created.stderr);
  keyArn = created.stdout.trim();
});

afterAll(async () => {
  for (const d of daemons) d.kill('SIGTERM');
  await kms?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('ee-enclave kms', () => {
  it('create-key --policy-from-nsm pins the live PCR0', async () => {
    expect(keyArn).toMatch(/^arn:aws:kms:us-east-1:111122223333:key\//);
  });

  it('encrypt, then attested decrypt returns the plaintext; --no-attest and another PCR0 are refused', async () => {
    const enc = await ee([
      'encrypt',
      '--key-id',
      keyArn,
      '--plaintext',
      'top secret',
      '--context',
      'app=cli',
    ]);
    expect(enc.status, enc.stderr).toBe(0);
    const blob = enc.stdout.trim();
    const dec = await ee([
      'decrypt',
      '--ciphertext',
      `base64:${blob}`,
      '--context',
      'app=cli',
      '--output',
      'raw',
    ]);
    expect(dec.status, dec.stderr).toBe(0);
    expect(dec.stdout).toBe('top secret');

    const plain = await ee([
      'decrypt',
      '--ciphertext',
      `base64:${blob}`,
      '--context',
      'app=cli',
      '--no-attest',
    ]);
    expect(plain.status).toBe(1);
    expect(plain.stderr).toContain('AccessDeniedException');
    expect(plain.stderr).toContain('no Recipient');
    const wrong = await ee([
      'decrypt',
      '--ciphertext',
      `base64:${blob}`,
      '--context',
      'app=cli',
      '--nsm',
      other,
    ]);
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toContain('ImageSha384');
  });

  it('generate-data-key --json: the attested Plaintext matches what its CiphertextBlob decrypts to', async () => {
    const gdk = await ee(['generate-data-key', '--key-id', keyArn, '--json']);
    expect(gdk.status, gdk.stderr).toBe(0);
    const out = JSON.parse(gdk.stdout);
    expect(Buffer.from(out.Plaintext, 'base64')).toHaveLength(32);
    expect(out.CiphertextForRecipient).toBeUndefined();
    const again = await ee([
      'decrypt',
      '--ciphertext',
      `base64:${out.CiphertextBlob}`,
      '--output',
      'hex',
    ]);
    expect(again.stdout.trim()).toBe(Buffer.from(out.Plaintext, 'base64').toString('hex'));
    const small = await ee([
      'generate-data-key',
      '--key-id',
      keyArn,
      '--bytes',
      '16',
      '--output',
      'hex',
    ]);
    expect(small.stdout.trim()).toMatch(/^[0-9a-f]{32}$/);
  });

  it('generate-data-key-pair writes a usable PKCS#8 private key with --out (0600)', async () => {
    const keyFile = join(dir, 'pair.der');
    const r = await ee([
      'generate-data-key-pair',
      '--key-id',
      keyArn,
      '--key-pair-spec',
      'ECC_NIST_P256',
      '--out',
      keyFile,
    ]);
    expect(r.status, r.stderr).toBe(0);
    const k = createPrivateKey({ key: readFileSync(keyFile), format: 'der', type: 'pkcs8' });
    expect(k.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('generate-random (attested) prints the asked number of bytes', async () => {
    const r = await ee(['generate-random', '--bytes', '24', '--output', 'hex']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^[0-9a-f]{48}$/);
  });

  it('--proxy (or HTTPS_PROXY) sends every KMS connection through an HTTP CONNECT proxy', async () => {
    const seen: string[] = [];
    const proxy: Server = createServer((_req, res) => res.writeHead(405).end());
    proxy.on('connect', (req, client, head) => {
      seen.push(req.url ?? '');
      const [host, port] = (req.url ?? '').split(':');
      const upstream = tcpConnect(Number(port), host, () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const { port } = proxy.address() as { port: number };
    try {
      const r = await ee(['generate-random', '--bytes', '8', '--output', 'hex'], {
        HTTPS_PROXY: `http://127.0.0.1:${port}`,
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.trim()).toMatch(/^[0-9a-f]{16}$/);
      expect(seen).toEqual([new URL(env.AWS_ENDPOINT_URL_KMS!).host]);
      const denied = await ee(['generate-random', '--proxy', 'http://127.0.0.1:1']);
      expect(denied.status).toBe(1);
    } finally {
      proxy.close();
    }
  });

  it('usage errors exit 2 naming the flag', async () => {
    const noKey = await ee(['encrypt', '--plaintext', 'x']);
    expect(noKey.status).toBe(2);
    expect(noKey.stderr).toContain('--key-id');
    const bytes = await ee(['generate-random', '--bytes', '5000']);
    expect(bytes.status).toBe(2);
    expect(bytes.stderr).toContain('--bytes');
    const ctx = await ee(['decrypt', '--ciphertext', 'hex:00', '--context', 'novalue']);
    expect(ctx.status).toBe(2);
    const region = await ee(['generate-random'], { AWS_REGION: '' });
    expect(region.status).toBe(2);
    expect(region.stderr).toContain('--region');
    const spec = await ee([
      'generate-data-key-pair',
      '--key-id',
      keyArn,
      '--key-pair-spec',
      'RSA_1024',
    ]);
    expect(spec.status).toBe(2);
    expect(spec.stderr).toContain('--key-pair-spec RSA_1024 must be one of RSA_2048');
    const aes = await ee(['generate-data-key', '--key-id', keyArn, '--key-spec', 'AES_512']);
    expect(aes.status).toBe(2);
    expect(aes.stderr).toContain('--key-spec AES_512');
  });
});
