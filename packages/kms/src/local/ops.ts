// The KMS operations. Each takes the parsed JSON input and returns the JSON output, or
// throws a KmsWireError. Blobs travel base64-encoded, as in the JSON 1.1 protocol.
import { generateKeyPair, randomBytes } from 'node:crypto';
import { blobKeyId, type EncryptionContext, openBlob, sealBlob } from './blob.js';
import {
  authorize,
  defaultPolicy,
  type ParsedPolicy,
  parsePolicy,
  type RequestContext,
} from './policy.js';
import type { KeyStore, StoredKey } from './store.js';
import { wire } from './wire-error.js';

/** What a verified Recipient attestation document contributes to a request. */
export interface VerifiedRecipient {
  /** DER SubjectPublicKeyInfo of the RSA key responses are encrypted to. */
  publicKey: Uint8Array;
  /** PCR index -> value. */
  pcrs: Map<number, Uint8Array>;
}

export interface OpEnv {
  store: KeyStore;
  accountId: string;
  region: string;
  principalArn: string;
  /** Verifies Recipient.AttestationDocument (throws KmsWireError). */
  verifyRecipient(doc: Uint8Array): Promise<VerifiedRecipient>;
  /** CMS EnvelopedData (BER) of plaintext for the recipient's RSA key. */
  encryptForRecipient(plaintext: Uint8Array, spki: Uint8Array): Promise<Uint8Array>;
}

type Json = Record<string, unknown>;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** KMS's answer for a required member that is absent or null. */
function missing(field: string) {
  return wire(
    'ValidationException',
    `1 validation error detected: Value null at '${field}' failed to satisfy constraint: Member must not be null.`,
  );
}

function str(input: Json, field: string, required: true): string;
function str(input: Json, field: string, required?: false): string | undefined;
function str(input: Json, field: string, required = false): string | undefined {
  const v = input[field];
  if (v === undefined || v === null) {
    if (required) throw missing(field);
    return undefined;
  }
  if (typeof v !== 'string') throw wire('SerializationException', `${field} must be a string.`);
  return v;
}

function int(input: Json, field: string): number | undefined {
  const v = input[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw wire('SerializationException', `${field} must be an integer.`);
  return v;
}

function blob(input: Json, field: string, required: true, max?: number): Buffer;
function blob(input: Json, field: string, required: false, max?: number): Buffer | undefined;
function blob(input: Json, field: string, required: boolean, max = 6144): Buffer | undefined {
  const v = input[field];
  if (v === undefined || v === null) {
    if (required) throw missing(field);
    return undefined;
  }
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) {
    throw wire('SerializationException', `${field} must be a base64-encoded blob.`);
  }
  const b = Buffer.from(v, 'base64');
  if (b.length < 1 || b.length > max) {
    throw wire(
      'ValidationException',
      `1 validation error detected: Value at '${field}' failed to satisfy constraint: Member must have length between 1 and ${max}.`,
    );
  }
  return b;
}

function context(input: Json): EncryptionContext | undefined {
  const v = input.EncryptionContext;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v))
    throw wire('SerializationException', 'EncryptionContext must be a map of strings.');
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string')
      throw wire('SerializationException', `EncryptionContext.${k} must be a string.`);
  }
  return v as EncryptionContext;
}

function b64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

function resolveKey(env: OpEnv, keyRef: string, field = 'KeyId'): StoredKey {
  let id = keyRef;
  const arnPrefix = `arn:aws:kms:${env.region}:${env.accountId}:key/`;
  if (keyRef.startsWith('arn:')) {
    if (!keyRef.startsWith(arnPrefix)) {
      throw wire(
        'NotFoundException',
        `Invalid arn ${keyRef}: this local KMS serves ${arnPrefix}<key-id>.`,
      );
    }
    id = keyRef.slice(arnPrefix.length);
  }
  if (keyRef.startsWith('alias/')) {
    throw wire(
      'NotFoundException',
      `Alias ${keyRef} is not found (the local KMS has no aliases; use the key id or ARN).`,
    );
  }
  if (!UUID_RE.test(id)) {
    throw wire(
      'NotFoundException',
      `Invalid keyId '${keyRef}' in ${field}: pass a key id (UUID) or key ARN.`,
    );
  }
  const key = env.store.get(id);
  if (!key) throw wire('NotFoundException', `Key '${arnPrefix}${id}' does not exist.`);
  return key;
}

function usable(key: StoredKey): void {
  if (key.keyState === 'PendingDeletion') {
    throw wire('KMSInvalidStateException', `${key.arn} is pending deletion.`);
  }
  if (key.keyState === 'Disabled') throw wire('DisabledException', `${key.arn} is disabled.`);
}

function keyMetadata(env: OpEnv, key: StoredKey): Json {
  return {
    AWSAccountId: env.accountId,
    KeyId: key.keyId,
    Arn: key.arn,
    CreationDate: key.creationDate / 1000,
    Enabled: key.keyState === 'Enabled',
    Description: key.description,
    KeyUsage: 'ENCRYPT_DECRYPT',
    KeyState: key.keyState,
    ...(key.deletionDate ? { DeletionDate: key.deletionDate / 1000 } : {}),
    Origin: 'AWS_KMS',
    KeyManager: 'CUSTOMER',
    CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT',
    KeySpec: 'SYMMETRIC_DEFAULT',
    EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
    MultiRegion: false,
  };
}

function material(key: StoredKey): Buffer {
  return Buffer.from(key.material, 'base64');
}

/** Parses Recipient, verifies its document, and adds the attestation condition keys. */
async function recipient(
  env: OpEnv,
  input: Json,
  ctx: RequestContext,
): Promise<VerifiedRecipient | undefined> {
  const r = input.Recipient;
  if (r === undefined || r === null) return undefined;
  if (typeof r !== 'object' || Array.isArray(r))
    throw wire('SerializationException', 'Recipient must be an object.');
  const rec = r as Json;
  const alg = str(rec, 'KeyEncryptionAlgorithm') ?? 'RSAES_OAEP_SHA_256';
  if (alg !== 'RSAES_OAEP_SHA_256') {
    throw wire(
      'ValidationException',
      `Recipient.KeyEncryptionAlgorithm '${alg}' is not supported; use RSAES_OAEP_SHA_256.`,
    );
  }
  const v = rec.AttestationDocument;
  if (typeof v !== 'string' || v.length === 0) {
    throw wire(
      'ValidationException',
      'Recipient.AttestationDocument is required when Recipient is set.',
    );
  }
  const verified = await env.verifyRecipient(Buffer.from(v, 'base64'));
  for (const [i, val] of verified.pcrs) {
    const hex = Buffer.from(val).toString('hex');
    ctx.keys.set(`kms:recipientattestation:pcr${i}`, hex);
    if (i === 0) ctx.keys.set('kms:recipientattestation:imagesha384', hex);
  }
  return verified;
}

function addContextKeys(ctx: RequestContext, ec: EncryptionContext | undefined): void {
  for (const [k, v] of Object.entries(ec ?? {})) ctx.keys.set(`kms:encryptioncontext:${k}`, v);
}

function newContext(env: OpEnv, op: string): RequestContext {
  const keys = new Map<string, string>([
    ['kms:calleraccount', env.accountId],
    ['aws:principalarn', env.principalArn],
  ]);
  return { action: `kms:${op}`, principalArn: env.principalArn, accountId: env.accountId, keys };
}

function policyOf(key: StoredKey): ParsedPolicy {
  return parsePolicy(key.policy);
}

function dataKeyBytes(input: Json): number {
  const spec = str(input, 'KeySpec');
  const n = int(input, 'NumberOfBytes');
  if ((spec === undefined) === (n === undefined)) {
    throw wire(
      'ValidationException',
      'Specify exactly one of KeySpec (AES_256 or AES_128) and NumberOfBytes.',
    );
  }
  if (spec !== undefined) {
    if (spec === 'AES_256') return 32;
    if (spec === 'AES_128') return 16;
    throw wire('ValidationException', `KeySpec '${spec}' is not valid; use AES_256 or AES_128.`);
  }
  if (n! < 1 || n! > 1024)
    throw wire('ValidationException', 'NumberOfBytes must be between 1 and 1024.');
  return n!;
}

type KeyPairDer = { publicKey: Buffer; privateKey: Buffer };

const KEY_PAIRS: Record<string, () => Promise<KeyPairDer>> = {
  RSA_2048: () => rsa(2048),
  RSA_3072: () => rsa(3072),
  RSA_4096: () => rsa(4096),
  ECC_NIST_P256: () => ec('prime256v1'),
  ECC_NIST_P384: () => ec('secp384r1'),
  ECC_NIST_P521: () => ec('secp521r1'),
  ECC_SECG_P256K1: () => ec('secp256k1'),
};

// Generated on libuv's thread pool: an RSA-4096 pair takes up to seconds and must not stall
// the requests of other clients.
function rsa(modulusLength: number): Promise<KeyPairDer> {
  return new Promise((resolve, reject) =>
    generateKeyPair(
      'rsa',
      {
        modulusLength,
        publicKeyEncoding: { type: 'spki', format: 'der' },
        privateKeyEncoding: { type: 'pkcs8', format: 'der' },
      },
      (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey })),
    ),
  );
}

function ec(namedCurve: string): Promise<KeyPairDer> {
  return new Promise((resolve, reject) =>
    generateKeyPair(
      'ec',
      {
        namedCurve,
        publicKeyEncoding: { type: 'spki', format: 'der' },
        privateKeyEncoding: { type: 'pkcs8', format: 'der' },
      },
      (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey })),
    ),
  );
}

export const OPERATIONS: Record<string, (env: OpEnv, input: Json) => Promise<Json>> = {
  async CreateKey(env, input) {
    const spec =
      str(input, 'KeySpec') ?? str(input, 'CustomerMasterKeySpec') ?? 'SYMMETRIC_DEFAULT';
    if (spec !== 'SYMMETRIC_DEFAULT') {
      throw wire(
        'UnsupportedOperationException',
        `KeySpec ${spec} is not supported by the local KMS; only SYMMETRIC_DEFAULT keys.`,
      );
    }
    const usage = str(input, 'KeyUsage') ?? 'ENCRYPT_DECRYPT';
    if (usage !== 'ENCRYPT_DECRYPT') {
      throw wire(
        'UnsupportedOperationException',
        `KeyUsage ${usage} is not supported by the local KMS; only ENCRYPT_DECRYPT.`,
      );
    }
    const policy = str(input, 'Policy') ?? defaultPolicy(env.accountId);
    parsePolicy(policy);
    const key = await env.store.create({
      arnPrefix: `arn:aws:kms:${env.region}:${env.accountId}:`,
      description: str(input, 'Description') ?? '',
      policy,
    });
    return { KeyMetadata: keyMetadata(env, key) };
  },

  async DescribeKey(env, input) {
    const key = resolveKey(env, str(input, 'KeyId', true));
    authorize(policyOf(key), newContext(env, 'DescribeKey'), key.arn);
    return { KeyMetadata: keyMetadata(env, key) };
  },

  async ListKeys(env) {
    const keys = env.store.list().map((k) => ({ KeyId: k.keyId, KeyArn: k.arn }));
    return { Keys: keys, Truncated: false };
  },

  async ScheduleKeyDeletion(env, input) {
    const key = resolveKey(env, str(input, 'KeyId', true));
    authorize(policyOf(key), newContext(env, 'ScheduleKeyDeletion'), key.arn);
    const days = int(input, 'PendingWindowInDays') ?? 30;
    if (days < 7 || days > 30)
      throw wire('ValidationException', 'PendingWindowInDays must be between 7 and 30.');
    usable(key);
    const updated: StoredKey = {
      ...key,
      keyState: 'PendingDeletion',
      deletionDate: Date.now() + days * 86400000,
    };
    await env.store.save(updated);
    return {
      KeyId: key.arn,
      DeletionDate: updated.deletionDate! / 1000,
      KeyState: 'PendingDeletion',
      PendingWindowInDays: days,
    };
  },

  async GetKeyPolicy(env, input) {
    const key = resolveKey(env, str(input, 'KeyId', true));
    authorize(policyOf(key), newContext(env, 'GetKeyPolicy'), key.arn);
    const name = str(input, 'PolicyName') ?? 'default';
    if (name !== 'default')
      throw wire(
        'NotFoundException',
        `Policy '${name}' does not exist; keys have one policy named 'default'.`,
      );
    return { Policy: key.policy, PolicyName: 'default' };
  },

  async PutKeyPolicy(env, input) {
    const key = resolveKey(env, str(input, 'KeyId', true));
    authorize(policyOf(key), newContext(env, 'PutKeyPolicy'), key.arn);
    const name = str(input, 'PolicyName') ?? 'default';
    if (name !== 'default')
      throw wire('ValidationException', `PolicyName must be 'default' (got '${name}').`);
    const policy = str(input, 'Policy', true);
    parsePolicy(policy);
    await env.store.save({ ...key, policy });
    return {};
  },

  async Encrypt(env, input) {
    const key = resolveKey(env, str(input, 'KeyId', true));
    const plaintext = blob(input, 'Plaintext', true, 4096);
    const ec = context(input);
    checkAlgorithm(input);
    const ctx = newContext(env, 'Encrypt');
    addContextKeys(ctx, ec);
    authorize(policyOf(key), ctx, key.arn);
    usable(key);
    return {
      CiphertextBlob: b64(sealBlob(key.keyId, material(key), plaintext, ec)),
      KeyId: key.arn,
      EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
    };
  },

  async Decrypt(env, input) {
    const ct = blob(input, 'CiphertextBlob', true);
    const ec = context(input);
    checkAlgorithm(input);
    const blobKey = resolveKey(env, blobKeyId(ct), 'CiphertextBlob');
    const named = str(input, 'KeyId');
    if (named !== undefined && resolveKey(env, named).keyId !== blobKey.keyId) {
      throw wire(
        'IncorrectKeyException',
        `The CiphertextBlob was encrypted under ${blobKey.arn}, not under the KeyId ${named} of the request.`,
      );
    }
    const ctx = newContext(env, 'Decrypt');
    addContextKeys(ctx, ec);
    const rec = await recipient(env, input, ctx);
    authorize(policyOf(blobKey), ctx, blobKey.arn);
    usable(blobKey);
    const plaintext = openBlob(ct, material(blobKey), ec);
    const out: Json = { KeyId: blobKey.arn, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
    if (rec)
      out.CiphertextForRecipient = b64(await env.encryptForRecipient(plaintext, rec.publicKey));
    else out.Plaintext = b64(plaintext);
    return out;
  },

  async GenerateDataKey(env, input) {
    return dataKey(env, input, 'GenerateDataKey', true);
  },

  async GenerateDataKeyWithoutPlaintext(env, input) {
    return dataKey(env, input, 'GenerateDataKeyWithoutPlaintext', false);
  },

  async GenerateDataKeyPair(env, input) {
    return dataKeyPair(env, input, 'GenerateDataKeyPair', true);
  },

  async GenerateDataKeyPairWithoutPlaintext(env, input) {
    return dataKeyPair(env, input, 'GenerateDataKeyPairWithoutPlaintext', false);
  },

  async GenerateRandom(env, input) {
    const n = int(input, 'NumberOfBytes');
    if (n === undefined || n < 1 || n > 1024) {
      throw wire('ValidationException', 'NumberOfBytes must be between 1 and 1024.');
    }
    if (input.CustomKeyStoreId !== undefined) {
      throw wire(
        'UnsupportedOperationException',
        'CustomKeyStoreId is not supported by the local KMS.',
      );
    }
    const rec = await recipient(env, input, newContext(env, 'GenerateRandom'));
    const bytes = randomBytes(n);
    if (rec)
      return { CiphertextForRecipient: b64(await env.encryptForRecipient(bytes, rec.publicKey)) };
    return { Plaintext: b64(bytes) };
  },
};

function checkAlgorithm(input: Json): void {
  const alg = str(input, 'EncryptionAlgorithm');
  if (alg !== undefined && alg !== 'SYMMETRIC_DEFAULT') {
    throw wire(
      'InvalidKeyUsageException',
      `EncryptionAlgorithm ${alg} is not valid for a symmetric key; use SYMMETRIC_DEFAULT.`,
    );
  }
}

async function dataKey(env: OpEnv, input: Json, op: string, withPlaintext: boolean): Promise<Json> {
  const key = resolveKey(env, str(input, 'KeyId', true));
  const n = dataKeyBytes(input);
  const ec = context(input);
  const ctx = newContext(env, op);
  addContextKeys(ctx, ec);
  const rec = withPlaintext ? await recipient(env, input, ctx) : undefined;
  authorize(policyOf(key), ctx, key.arn);
  usable(key);
  const dk = randomBytes(n);
  const out: Json = {
    CiphertextBlob: b64(sealBlob(key.keyId, material(key), dk, ec)),
    KeyId: key.arn,
  };
  if (rec) out.CiphertextForRecipient = b64(await env.encryptForRecipient(dk, rec.publicKey));
  else if (withPlaintext) out.Plaintext = b64(dk);
  return out;
}

async function dataKeyPair(
  env: OpEnv,
  input: Json,
  op: string,
  withPlaintext: boolean,
): Promise<Json> {
  const key = resolveKey(env, str(input, 'KeyId', true));
  const spec = str(input, 'KeyPairSpec', true);
  const gen = KEY_PAIRS[spec];
  if (!gen) {
    throw wire(
      'ValidationException',
      `KeyPairSpec '${spec}' is not valid; use one of ${Object.keys(KEY_PAIRS).join(', ')}.`,
    );
  }
  const ec = context(input);
  const ctx = newContext(env, op);
  addContextKeys(ctx, ec);
  const rec = withPlaintext ? await recipient(env, input, ctx) : undefined;
  authorize(policyOf(key), ctx, key.arn);
  usable(key);
  const pair = await gen();
  const out: Json = {
    PrivateKeyCiphertextBlob: b64(sealBlob(key.keyId, material(key), pair.privateKey, ec)),
    PublicKey: b64(pair.publicKey),
    KeyId: key.arn,
    KeyPairSpec: spec,
  };
  if (rec)
    out.CiphertextForRecipient = b64(await env.encryptForRecipient(pair.privateKey, rec.publicKey));
  else if (withPlaintext) out.PrivateKeyPlaintext = b64(pair.privateKey);
  return out;
}
