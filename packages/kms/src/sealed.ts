// Sealed values: a KMS ciphertext stored with the PCRs it was sealed under. unseal() compares
// them with the live PCRs (refusing before any KMS call) and KMS checks them again through the
// encryption context, which binds a digest of those PCRs to the ciphertext.
import { createHash } from 'node:crypto';
import { DecryptCommand, EncryptCommand, type KMSClient } from '@aws-sdk/client-kms';
import { KmsError } from './errors.js';

/** What seal/unseal need from an NSM: `NsmClient` from @enclave-extras/nsm fits. */
export interface PcrSource {
  describePcr(index: number): Promise<{ data: Uint8Array }>;
  describeNsm?(): Promise<{ moduleId: string; digest: string }>;
}

/** JSON-serialisable sealed value (store it anywhere; it is only ciphertext and public facts). */
export interface SealedEnvelope {
  type: 'enclave-extras/sealed';
  version: 1;
  /** The KMS key (id or ARN) it was encrypted under. */
  keyId: string;
  /** KMS CiphertextBlob, base64. */
  ciphertext: string;
  /** PCR index -> lowercase hex, read from the NSM when sealing. */
  pcrs: Record<string, string>;
  /** Module facts when sealed (informational: module ids change with every enclave start). */
  moduleId?: string;
  digest?: string;
  sealedAt: string;
  /** The caller's own encryption context, if any (the PCR binding is added on top). */
  encryptionContext?: Record<string, string>;
}

export interface SealOptions {
  kms: KMSClient;
  keyId: string;
  plaintext: Uint8Array | string;
  nsm: PcrSource;
  /** PCRs to seal under (default [0, 1, 2]: image, kernel, application). */
  pcrs?: number[];
  encryptionContext?: Record<string, string>;
}

export interface UnsealOptions {
  /** Usually an attested client (`AttestedKmsClient`) so key policies can pin PCRs too. */
  kms: KMSClient;
  nsm: PcrSource;
}

/** Encryption-context key that binds the sealed PCRs to the ciphertext. */
export const SEALED_CONTEXT_KEY = 'enclave-extras:sealed-pcrs';

function sealedError(
  code:
    | 'ERR_KMS_SEALED_MALFORMED'
    | 'ERR_KMS_SEALED_PCR_MISMATCH'
    | 'ERR_KMS_INVALID_ARGUMENT'
    | 'ERR_KMS_ATTESTATION',
  message: string,
  cause?: unknown,
): KmsError {
  return new KmsError(code, message, cause === undefined ? {} : { cause });
}

function pcrDigest(pcrs: Record<string, string>): string {
  const canonical = Object.keys(pcrs)
    .map(Number)
    .sort((a, b) => a - b)
    .map((i) => `${i}=${pcrs[String(i)]}`)
    .join(';');
  return createHash('sha256').update(canonical).digest('hex');
}

async function readPcrs(nsm: PcrSource, indexes: number[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const i of indexes) {
    try {
      out[String(i)] = Buffer.from((await nsm.describePcr(i)).data).toString('hex');
    } catch (err) {
      throw sealedError(
        'ERR_KMS_ATTESTATION',
        `could not read PCR${i} from the NSM (${(err as Error)?.message ?? String(err)}).`,
        err,
      );
    }
  }
  return out;
}

/** Encrypts `plaintext` with KMS and records the PCRs it was sealed under. */
export async function seal(options: SealOptions): Promise<SealedEnvelope> {
  const { kms, keyId, nsm } = options;
  if (typeof keyId !== 'string' || keyId.length === 0)
    throw sealedError('ERR_KMS_INVALID_ARGUMENT', 'keyId must be a KMS key id or ARN.');
  if (typeof nsm?.describePcr !== 'function')
    throw sealedError(
      'ERR_KMS_INVALID_ARGUMENT',
      'nsm must have describePcr(): pass an NsmClient.',
    );
  const indexes = options.pcrs ?? [0, 1, 2];
  if (
    !Array.isArray(indexes) ||
    indexes.length === 0 ||
    indexes.some((i) => !Number.isInteger(i) || i < 0 || i > 31)
  ) {
    throw sealedError(
      'ERR_KMS_INVALID_ARGUMENT',
      `pcrs must be a non-empty list of PCR indexes 0..31 (got ${JSON.stringify(indexes)}).`,
    );
  }
  const userContext = options.encryptionContext ?? {};
  if (SEALED_CONTEXT_KEY in userContext)
    throw sealedError(
      'ERR_KMS_INVALID_ARGUMENT',
      `encryptionContext must not use the reserved key ${SEALED_CONTEXT_KEY}.`,
    );
  const pcrs = await readPcrs(
    nsm,
    [...new Set(indexes)].sort((a, b) => a - b),
  );
  const plaintext =
    typeof options.plaintext === 'string'
      ? Buffer.from(options.plaintext, 'utf8')
      : options.plaintext;
  const res = await kms.send(
    new EncryptCommand({
      KeyId: keyId,
      Plaintext: plaintext,
      EncryptionContext: { ...userContext, [SEALED_CONTEXT_KEY]: pcrDigest(pcrs) },
    }),
  );
  if (!res.CiphertextBlob)
    throw new KmsError('ERR_KMS_RESPONSE', 'Encrypt answered without CiphertextBlob.');
  const env: SealedEnvelope = {
    type: 'enclave-extras/sealed',
    version: 1,
    keyId: res.KeyId ?? keyId,
    ciphertext: Buffer.from(res.CiphertextBlob).toString('base64'),
    pcrs,
    sealedAt: new Date().toISOString(),
  };
  if (nsm.describeNsm) {
    const d = await nsm.describeNsm();
    env.moduleId = d.moduleId;
    env.digest = d.digest;
  }
  if (options.encryptionContext) env.encryptionContext = { ...options.encryptionContext };
  return env;
}

function checkEnvelope(value: unknown): SealedEnvelope {
  const bad = (why: string): KmsError =>
    sealedError(
      'ERR_KMS_SEALED_MALFORMED',
      `sealed envelope ${why}: pass the object seal() returned (or its JSON).`,
    );
  let v = value;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch (err) {
      throw sealedError(
        'ERR_KMS_SEALED_MALFORMED',
        'sealed envelope is a string but not JSON.',
        err,
      );
    }
  }
  if (typeof v !== 'object' || v === null) throw bad('is not an object');
  const e = v as Record<string, unknown>;
  if (e.type !== 'enclave-extras/sealed') throw bad('has no type "enclave-extras/sealed"');
  if (e.version !== 1)
    throw bad(`has version ${JSON.stringify(e.version)}, this library reads version 1`);
  if (typeof e.keyId !== 'string' || e.keyId.length === 0) throw bad('has no keyId');
  if (typeof e.ciphertext !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(e.ciphertext))
    throw bad('has no base64 ciphertext');
  const pcrs = e.pcrs as Record<string, unknown> | null;
  if (typeof pcrs !== 'object' || pcrs === null || Object.keys(pcrs).length === 0)
    throw bad('has no pcrs');
  for (const [k, h] of Object.entries(pcrs)) {
    if (
      !/^([0-9]|[12][0-9]|3[01])$/.test(k) ||
      typeof h !== 'string' ||
      !/^([0-9a-f]{2}){32,64}$/.test(h)
    )
      throw bad(`has an invalid pcrs entry ${k}`);
  }
  const ctx = e.encryptionContext;
  if (
    ctx !== undefined &&
    (typeof ctx !== 'object' ||
      ctx === null ||
      Object.values(ctx).some((x) => typeof x !== 'string'))
  ) {
    throw bad('has an invalid encryptionContext');
  }
  return e as unknown as SealedEnvelope;
}

/**
 * Opens a sealed value: reads the live PCRs and refuses with ERR_KMS_SEALED_PCR_MISMATCH, before
 * calling KMS, when any differs from the sealed ones; then decrypts with KMS.
 */
export async function unseal(
  envelope: SealedEnvelope | string,
  options: UnsealOptions,
): Promise<Buffer> {
  const env = checkEnvelope(envelope);
  const indexes = Object.keys(env.pcrs)
    .map(Number)
    .sort((a, b) => a - b);
  const live = await readPcrs(options.nsm, indexes);
  const differing = indexes.filter((i) => live[String(i)] !== env.pcrs[String(i)]);
  if (differing.length > 0) {
    throw sealedError(
      'ERR_KMS_SEALED_PCR_MISMATCH',
      `the value was sealed under other measurements: PCR${differing.join(', PCR')} differ (sealed PCR${differing[0]}=${env.pcrs[String(differing[0])]?.slice(0, 16)}..., live ${live[String(differing[0])]?.slice(0, 16)}...). Only the enclave image it was sealed in can open it; re-seal after an intended upgrade.`,
    );
  }
  const res = await options.kms.send(
    new DecryptCommand({
      KeyId: env.keyId,
      CiphertextBlob: Buffer.from(env.ciphertext, 'base64'),
      EncryptionContext: {
        ...(env.encryptionContext ?? {}),
        [SEALED_CONTEXT_KEY]: pcrDigest(env.pcrs),
      },
    }),
  );
  if (!res.Plaintext)
    throw new KmsError(
      'ERR_KMS_RESPONSE',
      'Decrypt answered without Plaintext (use an attested client when the key policy requires attestation).',
    );
  return Buffer.from(res.Plaintext);
}
