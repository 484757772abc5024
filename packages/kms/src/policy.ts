// Key policies that release keys only to attested enclaves: kms:RecipientAttestation:* conditions
// (compared with StringEqualsIgnoreCase, as AWS documents) from PCR values or a document.
import {
  type AttestationDocument,
  AttestationError,
  parseDocument,
} from '@enclave-extras/attestation';
import { KmsError } from './errors.js';

/** The operations that accept a Recipient (the only ones an attestation condition can allow). */
export const ATTESTED_ACTIONS = [
  'kms:Decrypt',
  'kms:GenerateDataKey',
  'kms:GenerateDataKeyPair',
  'kms:GenerateRandom',
  'kms:DeriveSharedSecret',
] as const;

export type AttestedAction = (typeof ATTESTED_ACTIONS)[number];

export type PcrValue = string | Uint8Array;

export interface RecipientAttestationPolicyOptions {
  /** 12-digit AWS account id of the key. */
  accountId: string;
  /** ARN allowed to call the attested actions (the enclave's role). Default: the account root. */
  principal?: string;
  /** ARN of the key administrators (every other action). Default: the account root. */
  adminPrincipal?: string;
  /** PCR index -> SHA-384 value (96 hex chars or 48 bytes); becomes `kms:RecipientAttestation:PCR<N>`. */
  pcrs?: Record<number, PcrValue>;
  /** The image measurement (PCR0); becomes `kms:RecipientAttestation:ImageSha384`. */
  imageSha384?: PcrValue;
  /**
   * An attestation document (bytes or parsed): PCR0 becomes ImageSha384 and the PCRs listed in
   * `documentPcrs` become PCR<N> conditions. The document is parsed, not verified: verify it first
   * (`verifyDocument`) when it comes from elsewhere.
   */
  document?: Uint8Array | AttestationDocument;
  /** PCRs of `document` to pin besides PCR0 (default [1, 2]: kernel and application). */
  documentPcrs?: number[];
  /** Attested actions to allow (default Decrypt, GenerateDataKey, GenerateDataKeyPair, GenerateRandom). */
  actions?: AttestedAction[];
  /** Allow pinning an all-zero PCR0 (debug-mode enclaves). Default false. */
  allowDebug?: boolean;
}

export interface KeyPolicyStatement {
  Sid: string;
  Effect: 'Allow' | 'Deny';
  Principal: { AWS: string };
  Action?: string[];
  NotAction?: string[];
  Resource: '*';
  Condition?: Record<string, Record<string, string>>;
}

export interface KeyPolicyDocument {
  Version: '2012-10-17';
  Statement: KeyPolicyStatement[];
}

function policyError(message: string, cause?: unknown): KmsError {
  return new KmsError('ERR_KMS_POLICY', message, cause === undefined ? {} : { cause });
}

function pcrHex(v: PcrValue, what: string): string {
  let hex: string;
  if (typeof v === 'string') hex = v.trim().toLowerCase();
  else if (v instanceof Uint8Array) hex = Buffer.from(v).toString('hex');
  else throw policyError(`${what} must be hex or bytes (got ${typeof v}).`);
  if (!/^[0-9a-f]{96}$/.test(hex)) {
    throw policyError(
      `${what} must be a SHA-384 value: 96 hex characters or 48 bytes (got ${hex.length} hex characters).`,
    );
  }
  return hex;
}

/**
 * Builds a key policy with two statements: key administration for `adminPrincipal` (every action
 * except the attested ones) and the attested actions for `principal`, each under
 * `StringEqualsIgnoreCase` conditions on `kms:RecipientAttestation:ImageSha384` / `PCR<N>`.
 * Pass it to CreateKey/PutKeyPolicy as `JSON.stringify(policy)`.
 */
export function recipientAttestationPolicy(
  options: RecipientAttestationPolicyOptions,
): KeyPolicyDocument {
  const { accountId } = options;
  if (typeof accountId !== 'string' || !/^\d{12}$/.test(accountId)) {
    throw policyError(
      `accountId must be the 12-digit AWS account id (got ${JSON.stringify(accountId)}).`,
    );
  }
  const root = `arn:aws:iam::${accountId}:root`;
  const actions = options.actions ?? [
    'kms:Decrypt',
    'kms:GenerateDataKey',
    'kms:GenerateDataKeyPair',
    'kms:GenerateRandom',
  ];
  if (!Array.isArray(actions) || actions.length === 0)
    throw policyError('actions must be a non-empty array.');
  for (const a of actions) {
    if (!(ATTESTED_ACTIONS as readonly string[]).includes(a)) {
      throw policyError(
        `actions: ${String(a)} cannot carry a Recipient, so an attestation condition never matches it; use ${ATTESTED_ACTIONS.join(', ')}.`,
      );
    }
  }
  const conditions: Record<string, string> = {};
  const set = (key: string, hex: string, what: string): void => {
    const prev = conditions[key];
    if (prev !== undefined && prev !== hex)
      throw policyError(`${what} conflicts with another value given for ${key}.`);
    conditions[key] = hex;
  };
  if (options.document !== undefined) {
    let doc: AttestationDocument;
    try {
      doc =
        options.document instanceof Uint8Array ? parseDocument(options.document) : options.document;
    } catch (err) {
      const code = err instanceof AttestationError ? ` (${err.code})` : '';
      throw policyError(
        `document is not an attestation document${code}: pass the COSE_Sign1 bytes from the NSM.`,
        err,
      );
    }
    const pcr0 = doc.pcrs.get(0);
    if (!pcr0) throw policyError('document has no PCR0 to pin.');
    set('kms:RecipientAttestation:ImageSha384', pcrHex(pcr0, 'document PCR0'), 'document PCR0');
    for (const i of options.documentPcrs ?? [1, 2]) {
      const v = doc.pcrs.get(i);
      if (!v) throw policyError(`documentPcrs: the document has no PCR${i}.`);
      set(`kms:RecipientAttestation:PCR${i}`, pcrHex(v, `document PCR${i}`), `document PCR${i}`);
    }
  }
  if (options.imageSha384 !== undefined) {
    set(
      'kms:RecipientAttestation:ImageSha384',
      pcrHex(options.imageSha384, 'imageSha384'),
      'imageSha384',
    );
  }
  for (const [k, v] of Object.entries(options.pcrs ?? {})) {
    const i = Number(k);
    if (!Number.isInteger(i) || i < 0 || i > 31)
      throw policyError(`pcrs: index ${k} is not 0..31.`);
    set(`kms:RecipientAttestation:PCR${i}`, pcrHex(v, `pcrs[${i}]`), `pcrs[${i}]`);
  }
  if (Object.keys(conditions).length === 0) {
    throw policyError(
      'give pcrs, imageSha384 or document: a policy without attestation conditions would release the key to any caller.',
    );
  }
  const zero = '0'.repeat(96);
  const image =
    conditions['kms:RecipientAttestation:ImageSha384'] ??
    conditions['kms:RecipientAttestation:PCR0'];
  if (image === zero && !options.allowDebug) {
    throw policyError(
      'PCR0 is all zeros (a debug-mode enclave, whose memory the parent can read): pass allowDebug: true only for development.',
    );
  }
  const sorted = Object.fromEntries(
    Object.entries(conditions).sort(([a], [b]) => a.localeCompare(b)),
  );
  return {
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'AllowKeyAdministration',
        Effect: 'Allow',
        Principal: { AWS: options.adminPrincipal ?? root },
        NotAction: [...actions],
        Resource: '*',
      },
      {
        Sid: 'AllowAttestedEnclave',
        Effect: 'Allow',
        Principal: { AWS: options.principal ?? root },
        Action: [...actions],
        Resource: '*',
        Condition: { StringEqualsIgnoreCase: sorted },
      },
    ],
  };
}
