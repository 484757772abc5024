import { createHash } from 'node:crypto';
import {
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttestedKmsClient, KmsError, recipientAttestationPolicy } from '../src/index.js';
import { ACCOUNT, CREDS, type Env, startEnv } from './helpers.js';

const h = (s: string): string => createHash('sha384').update(s).digest('hex');
const PCR0 = h('policy image');
const PCR1 = h('policy kernel');
const PCR2 = h('policy app');

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(KmsError);
    return (err as KmsError).code;
  }
  return 'no error';
}

describe('recipientAttestationPolicy', () => {
  it('builds the admin + attested-enclave statements with StringEqualsIgnoreCase conditions', () => {
    const p = recipientAttestationPolicy({
      accountId: ACCOUNT,
      principal: `arn:aws:iam::${ACCOUNT}:role/enclave`,
      imageSha384: PCR0.toUpperCase(),
      pcrs: { 8: Buffer.from(h('signer'), 'hex') },
      actions: ['kms:Decrypt'],
    });
    expect(p.Statement).toEqual([
      {
        Sid: 'AllowKeyAdministration',
        Effect: 'Allow',
        Principal: { AWS: `arn:aws:iam::${ACCOUNT}:root` },
        NotAction: ['kms:Decrypt'],
        Resource: '*',
      },
      {
        Sid: 'AllowAttestedEnclave',
        Effect: 'Allow',
        Principal: { AWS: `arn:aws:iam::${ACCOUNT}:role/enclave` },
        Action: ['kms:Decrypt'],
        Resource: '*',
        Condition: {
          StringEqualsIgnoreCase: {
            'kms:RecipientAttestation:ImageSha384': PCR0,
            'kms:RecipientAttestation:PCR8': h('signer'),
          },
        },
      },
    ]);
  });

  it('refuses bad input with ERR_KMS_POLICY', () => {
    expect(code(() => recipientAttestationPolicy({ accountId: '123', imageSha384: PCR0 }))).toBe(
      'ERR_KMS_POLICY',
    );
    expect(code(() => recipientAttestationPolicy({ accountId: ACCOUNT }))).toBe('ERR_KMS_POLICY');
    expect(
      code(() => recipientAttestationPolicy({ accountId: ACCOUNT, imageSha384: 'abcd' })),
    ).toBe('ERR_KMS_POLICY');
    expect(code(() => recipientAttestationPolicy({ accountId: ACCOUNT, pcrs: { 40: PCR0 } }))).toBe(
      'ERR_KMS_POLICY',
    );
    expect(
      code(() =>
        recipientAttestationPolicy({
          accountId: ACCOUNT,
          imageSha384: PCR0,
          actions: ['kms:Encrypt' as 'kms:Decrypt'],
        }),
      ),
    ).toBe('ERR_KMS_POLICY');
    expect(
      code(() => recipientAttestationPolicy({ accountId: ACCOUNT, imageSha384: '0'.repeat(96) })),
    ).toBe('ERR_KMS_POLICY');
    expect(
      code(() =>
        recipientAttestationPolicy({
          accountId: ACCOUNT,
          imageSha384: '0'.repeat(96),
          allowDebug: true,
        }),
      ),
    ).toBe('no error');
    expect(
      code(() => recipientAttestationPolicy({ accountId: ACCOUNT, document: Buffer.from('nope') })),
    ).toBe('ERR_KMS_POLICY');
    expect(
      code(() =>
        recipientAttestationPolicy({
          accountId: ACCOUNT,
          imageSha384: PCR0,
          pcrs: { 0: PCR1 },
          document: undefined,
        }),
      ),
    ).toBe('no error');
  });
});

describe('a policy from a live attestation document, enforced by the local KMS', () => {
  let env: Env;
  let keyId: string;
  beforeAll(async () => {
    env = await startEnv({ 0: PCR0, 1: PCR1, 2: PCR2 });
    const document = await env.nsm.getAttestationDocument({});
    const policy = recipientAttestationPolicy({ accountId: ACCOUNT, document });
    expect(policy.Statement[1]?.Condition?.StringEqualsIgnoreCase).toEqual({
      'kms:RecipientAttestation:ImageSha384': PCR0,
      'kms:RecipientAttestation:PCR1': PCR1,
      'kms:RecipientAttestation:PCR2': PCR2,
    });
    keyId = (await env.plain.send(new CreateKeyCommand({ Policy: JSON.stringify(policy) })))
      .KeyMetadata!.KeyId!;
  });
  afterAll(() => env?.close());

  const client = (nsm: Env['nsm']) =>
    new AttestedKmsClient({
      endpoint: env.endpoint,
      region: 'us-east-1',
      credentials: CREDS,
      maxAttempts: 1,
      attestation: { nsm },
    });

  it('lets the admin encrypt, the enclave decrypt; refuses unattested and other-PCR2 enclaves', async () => {
    await env.plain.send(new DescribeKeyCommand({ KeyId: keyId }));
    const { CiphertextBlob } = await env.plain.send(
      new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('pinned') }),
    );
    const out = await client(env.nsm).send(new DecryptCommand({ CiphertextBlob }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('pinned');
    await expect(env.plain.send(new DecryptCommand({ CiphertextBlob }))).rejects.toMatchObject({
      name: 'AccessDeniedException',
    });
    const other = await env.enclave({ 0: PCR0, 1: PCR1, 2: h('another app') });
    await expect(client(other).send(new DecryptCommand({ CiphertextBlob }))).rejects.toMatchObject({
      name: 'AccessDeniedException',
      message: expect.stringContaining('PCR2'),
    });
  });
});
