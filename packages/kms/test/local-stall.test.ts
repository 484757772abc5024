// Requests that used to stall the local KMS's event loop, against a local KMS in its own
// process (the built dist/): if it stalls, the concurrent request is never answered and the
// test fails on its timeout instead of freezing the test runner.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateKeyCommand,
  DecryptCommand,
  EncryptCommand,
  KMSClient,
  ListKeysCommand,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { glob } from '../src/local/policy.js';

const CREDS = { accessKeyId: 'AKIDSTALLTEST', secretAccessKey: 'stall-test-secret' };
const dist = new URL('../dist/local/index.js', import.meta.url).pathname;
const childScript = new URL('./fixtures/local-kms-child.mjs', import.meta.url).pathname;
let dir: string;
let child: ChildProcess | undefined;
let kc: KMSClient;

beforeAll(async () => {
  if (!existsSync(dist)) {
    throw new Error(`${dist} is missing: run pnpm --filter @enclave-extras/kms build first`);
  }
  dir = mkdtempSync(join(tmpdir(), 'ee-kms-stall-'));
  const proc = spawn(process.execPath, [childScript, join(dir, 'data')], {
    env: { PATH: process.env.PATH, KMS_AKID: CREDS.accessKeyId, KMS_SECRET: CREDS.secretAccessKey },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child = proc;
  const endpoint = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /^(http\S+)\n/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.once('exit', (code) => reject(new Error(`local KMS child exited early (${code})`)));
  });
  kc = new KMSClient({ endpoint, region: 'us-east-1', credentials: CREDS, maxAttempts: 1 });
});

afterAll(() => {
  child?.kill('SIGKILL'); // also when a stalled child is spinning
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('key policy StringLike on pathological input', () => {
  // 13 `*` and a value of 5000 'a's without the final 'b': a backtracking regex tries about
  // C(5000, 12) splits before it gives up; the greedy matcher does at most 27 x 5000 steps.
  const pattern = `${'*a'.repeat(12)}*b`;
  const long = 'a'.repeat(5000);

  it('gives the right answer, and another client is answered meanwhile', async () => {
    const policy = {
      Version: '2012-10-17',
      Statement: [
        {
          Sid: 'admin',
          Effect: 'Allow',
          Principal: { AWS: 'arn:aws:iam::111122223333:root' },
          NotAction: 'kms:Encrypt',
          Resource: '*',
        },
        {
          Sid: 'tenants',
          Effect: 'Allow',
          Principal: { AWS: 'arn:aws:iam::111122223333:root' },
          Action: 'kms:Encrypt',
          Resource: '*',
          Condition: { StringLike: { 'kms:EncryptionContext:tenant': pattern } },
        },
      ],
    };
    const { KeyMetadata } = await kc.send(new CreateKeyCommand({ Policy: JSON.stringify(policy) }));
    const KeyId = KeyMetadata!.KeyId!;
    const [denied, listed] = await Promise.all([
      kc
        .send(
          new EncryptCommand({
            KeyId,
            Plaintext: Buffer.from('x'),
            EncryptionContext: { tenant: long },
          }),
        )
        .then(
          () => 'allowed',
          (e: Error) => e.name,
        ),
      kc.send(new ListKeysCommand({})),
    ]);
    expect(denied).toBe('AccessDeniedException');
    expect(listed.Keys?.map((k) => k.KeyId)).toContain(KeyId);

    // the same pattern matches when the value fits it
    const ok = await kc.send(
      new EncryptCommand({
        KeyId,
        Plaintext: Buffer.from('x'),
        EncryptionContext: { tenant: `${long}b` },
      }),
    );
    const back = await kc.send(
      new DecryptCommand({
        CiphertextBlob: ok.CiphertextBlob,
        EncryptionContext: { tenant: `${long}b` },
      }),
    );
    expect(Buffer.from(back.Plaintext!).toString()).toBe('x');
  });
});

describe('glob (IAM wildcards)', () => {
  // Reference: the regex translation the local KMS used before, safe on short inputs.
  const reference = (p: string, v: string, i: boolean) =>
    new RegExp(
      `^${p
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '.*')
        .replace(/\?/g, '.')}$`,
      i ? 'i' : '',
    ).test(v);

  it('agrees with the regex translation on every short pattern/value over a small alphabet', () => {
    // deterministic pseudo-random cases (no flakiness), including regex metacharacters
    let seed = 42;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const pick = (alphabet: string, max: number) =>
      Array.from({ length: rnd(max + 1) }, () => alphabet[rnd(alphabet.length)]).join('');
    let matches = 0;
    for (let n = 0; n < 20_000; n++) {
      const p = pick('ab*?.A(', 7);
      const v = pick('abA.(', 8);
      const i = rnd(2) === 1;
      const want = reference(p, v, i);
      if (want) matches++;
      expect(glob(p, v, i), `${JSON.stringify(p)} ~ ${JSON.stringify(v)} ignoreCase=${i}`).toBe(
        want,
      );
    }
    expect(matches).toBeGreaterThan(1000); // the table is not all "no match"
  });

  it('is right on pathological input', () => {
    const long = 'a'.repeat(20_000);
    expect(glob(`${'*a'.repeat(50)}*b`, long, false)).toBe(false);
    expect(glob(`${'*a'.repeat(50)}*b`, `${long}b`, false)).toBe(true);
    expect(glob(`${'*a'.repeat(50)}*b`, `${'a'.repeat(49)}b`, false)).toBe(false);
    expect(glob(`${'*a'.repeat(50)}*b`, `${'a'.repeat(50)}b`, false)).toBe(true);
    expect(glob('*'.repeat(10_000), long, false)).toBe(true);
    expect(glob(`${'?'.repeat(20_000)}`, long, false)).toBe(true);
    expect(glob(`${'?'.repeat(20_001)}`, long, false)).toBe(false);
    expect(glob('kms:*', 'KMS:Decrypt', true)).toBe(true);
    expect(glob('kms:*', 'KMS:Decrypt', false)).toBe(false);
  });
});
