import { createHash } from 'node:crypto';
import { CreateKeyCommand } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AttestedKmsClient,
  KmsError,
  recipientAttestationPolicy,
  type SealedEnvelope,
  seal,
  unseal,
} from '../src/index.js';
import { ACCOUNT, CREDS, type Env, startEnv } from './helpers.js';

const h = (s: string): string => createHash('sha384').update(s).digest('hex');
const PCRS = { 0: h('sealed image'), 1: h('sealed kernel'), 2: h('sealed app') };

let env: Env;
let keyId: string;
let attested: AttestedKmsClient;

beforeAll(async () => {
  env = await startEnv(PCRS);
  const policy = recipientAttestationPolicy({ accountId: ACCOUNT, imageSha384: PCRS[0] });
  keyId = (await env.plain.send(new CreateKeyCommand({ Policy: JSON.stringify(policy) })))
    .KeyMetadata!.KeyId!;
  attested = new AttestedKmsClient({
    endpoint: env.endpoint,
    region: 'us-east-1',
    credentials: CREDS,
    maxAttempts: 1,
    attestation: { nsm: env.nsm },
  });
});
afterAll(() => env?.close());

describe('seal / unseal', () => {
  it('round-trips through JSON with the PCRs and module facts recorded', async () => {
    const sealed = await seal({
      kms: env.plain,
      keyId,
      plaintext: 'db password',
      nsm: env.nsm,
      encryptionContext: { app: 'demo' },
    });
    expect(sealed).toMatchObject({
      type: 'enclave-extras/sealed',
      version: 1,
      pcrs: { 0: PCRS[0], 1: PCRS[1], 2: PCRS[2] },
    });
    expect(sealed.moduleId).toMatch(/enc/);
    const text = JSON.stringify(sealed);
    expect((await unseal(text, { kms: attested, nsm: env.nsm })).toString()).toBe('db password');
  });

  it('refuses with ERR_KMS_SEALED_PCR_MISMATCH before calling KMS when a live PCR differs', async () => {
    const sealed = await seal({ kms: env.plain, keyId, plaintext: 'x', nsm: env.nsm });
    const other = await env.enclave({ ...PCRS, 2: h('upgraded app') });
    let calls = 0;
    attested.middlewareStack.add(
      (next) => async (args) => {
        calls++;
        return next(args);
      },
      { step: 'initialize', name: 'countCalls', override: true },
    );
    const err = await unseal(sealed, { kms: attested, nsm: other }).catch((e) => e);
    attested.middlewareStack.remove('countCalls');
    expect(err).toBeInstanceOf(KmsError);
    expect(err.code).toBe('ERR_KMS_SEALED_PCR_MISMATCH');
    expect(err.message).toContain('PCR2');
    expect(calls).toBe(0);
  });

  it('KMS itself refuses an envelope whose recorded PCRs were edited to match', async () => {
    const sealed = await seal({
      kms: env.plain,
      keyId,
      plaintext: 'x',
      nsm: env.nsm,
      pcrs: [0, 1, 2],
    });
    // An attacker edits PCR2 in the envelope to match their enclave: the context digest no longer matches.
    const other = await env.enclave({ ...PCRS, 2: h('evil app') });
    const forged: SealedEnvelope = { ...sealed, pcrs: { ...sealed.pcrs, 2: h('evil app') } };
    await expect(unseal(forged, { kms: attested, nsm: other })).rejects.toMatchObject({
      name: 'InvalidCiphertextException',
    });
  });

  it('rejects malformed envelopes and bad arguments with typed errors', async () => {
    for (const bad of ['not json', '{}', { type: 'enclave-extras/sealed', version: 2 }, null]) {
      await expect(
        unseal(bad as unknown as string, { kms: attested, nsm: env.nsm }),
      ).rejects.toMatchObject({
        code: 'ERR_KMS_SEALED_MALFORMED',
      });
    }
    await expect(
      seal({ kms: env.plain, keyId: '', plaintext: 'x', nsm: env.nsm }),
    ).rejects.toMatchObject({
      code: 'ERR_KMS_INVALID_ARGUMENT',
    });
    await expect(
      seal({ kms: env.plain, keyId, plaintext: 'x', nsm: env.nsm, pcrs: [99] }),
    ).rejects.toMatchObject({
      code: 'ERR_KMS_INVALID_ARGUMENT',
    });
  });
});
