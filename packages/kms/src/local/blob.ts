// Ciphertext blob format of the local KMS (not AWS's, which is opaque):
//   "EEK" 0x01 | keyIdLen u8 | keyId ascii | iv[12] | AES-256-GCM ciphertext | tag[16]
// AAD = the header bytes (magic..keyId) followed by the canonical encryption context, so a
// blob only decrypts under its key and with exactly the context it was made with.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { wire } from './wire-error.js';

const MAGIC = Buffer.from([0x45, 0x45, 0x4b, 0x01]);

export type EncryptionContext = Record<string, string>;

export function canonicalContext(ctx: EncryptionContext | undefined): Buffer {
  const entries = Object.entries(ctx ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Buffer.from(JSON.stringify(entries), 'utf8');
}

function headerOf(keyId: string): Buffer {
  const id = Buffer.from(keyId, 'ascii');
  return Buffer.concat([MAGIC, Buffer.from([id.length]), id]);
}

export function sealBlob(
  keyId: string,
  material: Buffer,
  plaintext: Uint8Array,
  ctx: EncryptionContext | undefined,
): Buffer {
  const head = headerOf(keyId);
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', material, iv);
  c.setAAD(Buffer.concat([head, canonicalContext(ctx)]));
  const body = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([head, iv, body, c.getAuthTag()]);
}

/** The key id a blob names, or an InvalidCiphertextException when it is not one of ours. */
export function blobKeyId(blob: Uint8Array): string {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (b.length < 5 || !b.subarray(0, 4).equals(MAGIC)) {
    throw wire(
      'InvalidCiphertextException',
      'CiphertextBlob was not produced by this local KMS (bad header); pass the CiphertextBlob an Encrypt or GenerateDataKey call returned.',
    );
  }
  const len = b[4]!;
  if (b.length < 5 + len + 12 + 16) {
    throw wire('InvalidCiphertextException', 'CiphertextBlob is truncated.');
  }
  return b.subarray(5, 5 + len).toString('ascii');
}

export function openBlob(
  blob: Uint8Array,
  material: Buffer,
  ctx: EncryptionContext | undefined,
): Buffer {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  const keyId = blobKeyId(b);
  const head = headerOf(keyId);
  const iv = b.subarray(head.length, head.length + 12);
  const tag = b.subarray(b.length - 16);
  const body = b.subarray(head.length + 12, b.length - 16);
  try {
    const d = createDecipheriv('aes-256-gcm', material, iv);
    d.setAAD(Buffer.concat([head, canonicalContext(ctx)]));
    d.setAuthTag(tag);
    return Buffer.concat([d.update(body), d.final()]);
  } catch (err) {
    throw wire(
      'InvalidCiphertextException',
      'CiphertextBlob does not authenticate: it was altered, or the EncryptionContext differs from the one used to encrypt it.',
      err,
    );
  }
}
