// Key-policy evaluation of the local KMS (pure functions, no server).
import { describe, expect, it } from 'vitest';
import {
  authorize,
  parsePolicy,
  type RequestContext,
  requiresAttestation,
} from '../src/local/policy.js';
import { KmsWireError } from '../src/local/wire-error.js';

const PCR0 = 'ab'.repeat(48);
const ARN = 'arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000';

const attested = parsePolicy(
  JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'admin',
        Effect: 'Allow',
        Principal: { AWS: 'arn:aws:iam::111122223333:root' },
        Action: ['kms:Encrypt', 'kms:Describe*', 'kms:*KeyPolicy'],
        Resource: '*',
      },
      {
        Sid: 'enclave',
        Effect: 'Allow',
        Principal: { AWS: 'arn:aws:iam::111122223333:role/enclave' },
        Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
        Resource: '*',
        Condition: {
          StringEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': PCR0.toUpperCase() },
        },
      },
    ],
  }),
);

function ctx(action: string, principal: string, keys: Record<string, string> = {}): RequestContext {
  return {
    action,
    principalArn: principal,
    accountId: '111122223333',
    keys: new Map(Object.entries(keys)),
  };
}

function denial(fn: () => void): KmsWireError {
  try {
    fn();
  } catch (err) {
    if (err instanceof KmsWireError) return err;
    throw err;
  }
  throw new Error('expected a denial');
}

const ENCLAVE = 'arn:aws:iam::111122223333:role/enclave';

describe('key policy evaluation', () => {
  it('allows the attested action when ImageSha384 matches (case-insensitive)', () => {
    expect(() =>
      authorize(
        attested,
        ctx('kms:Decrypt', ENCLAVE, { 'kms:recipientattestation:imagesha384': PCR0 }),
        ARN,
      ),
    ).not.toThrow();
  });

  it('denies without Recipient, naming the missing condition', () => {
    const e = denial(() => authorize(attested, ctx('kms:Decrypt', ENCLAVE), ARN));
    expect(e.type).toBe('AccessDeniedException');
    expect(e.message).toContain('no Recipient attestation document');
  });

  it('denies a different PCR0, naming ImageSha384', () => {
    const e = denial(() =>
      authorize(
        attested,
        ctx('kms:Decrypt', ENCLAVE, { 'kms:recipientattestation:imagesha384': 'cd'.repeat(48) }),
        ARN,
      ),
    );
    expect(e.type).toBe('AccessDeniedException');
    expect(e.message).toContain('ImageSha384 does not satisfy');
  });

  it('matches principals: account root stands for the account, other ARNs exactly', () => {
    expect(() =>
      authorize(attested, ctx('kms:Encrypt', 'arn:aws:iam::111122223333:user/x'), ARN),
    ).not.toThrow();
    expect(() => authorize(attested, ctx('kms:DescribeKey', ENCLAVE), ARN)).not.toThrow();
    expect(
      denial(() => authorize(attested, ctx('kms:Encrypt', 'arn:aws:iam::999999999999:user/x'), ARN))
        .type,
    ).toBe('AccessDeniedException');
    // The root statement does not grant Decrypt, and the enclave role statement needs attestation.
    const e = denial(() =>
      authorize(
        attested,
        ctx('kms:Decrypt', 'arn:aws:iam::111122223333:user/x', {
          'kms:recipientattestation:imagesha384': PCR0,
        }),
        ARN,
      ),
    );
    expect(e.message).toContain('no key policy statement allows it');
  });

  it('lets an explicit Deny win', () => {
    const p = parsePolicy(
      JSON.stringify({
        Statement: [
          { Effect: 'Allow', Principal: '*', Action: 'kms:*', Resource: '*' },
          {
            Sid: 'needs-attestation',
            Effect: 'Deny',
            Principal: '*',
            Action: 'kms:Decrypt',
            Resource: '*',
            Condition: { StringNotEqualsIgnoreCase: { 'kms:RecipientAttestation:PCR8': 'aa' } },
          },
          {
            Effect: 'Deny',
            Principal: '*',
            Action: 'kms:Decrypt',
            Resource: '*',
            Condition: { Null: { 'kms:RecipientAttestation:PCR8': 'true' } },
          },
        ],
      }),
    );
    expect(() =>
      authorize(p, ctx('kms:Decrypt', ENCLAVE, { 'kms:recipientattestation:pcr8': 'AA' }), ARN),
    ).not.toThrow();
    expect(
      denial(() =>
        authorize(p, ctx('kms:Decrypt', ENCLAVE, { 'kms:recipientattestation:pcr8': 'bb' }), ARN),
      ).message,
    ).toContain('explicit deny');
    expect(denial(() => authorize(p, ctx('kms:Decrypt', ENCLAVE), ARN)).message).toContain(
      'explicit deny',
    );
    expect(requiresAttestation(p, 'kms:Decrypt')).toBe(true);
    expect(requiresAttestation(p, 'kms:Encrypt')).toBe(false);
  });

  it('rejects malformed policies with MalformedPolicyDocumentException', () => {
    for (const bad of [
      'not json',
      '[]',
      '{"Statement":[]}',
      '{"Statement":[{"Effect":"Allow","Action":"kms:*"}]}',
      '{"Statement":[{"Effect":"Allow","Principal":"*"}]}',
      '{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"NumericLessThan":{"a":"1"}}}]}',
    ]) {
      const e = denial(() => parsePolicy(bad));
      expect(e.type).toBe('MalformedPolicyDocumentException');
    }
  });
});
