import { FSCRYPT_KEY_SIZE } from './fscrypt.js';

/** Where an encrypted volume's data key comes from. */
export interface DataKeySource {
  /** First boot: a fresh key (`plaintext`, 64 bytes) and its encrypted blob (stored beside the image). */
  generate(): Promise<{ plaintext: Uint8Array; ciphertext: Uint8Array }>;
  /** Every later boot: the key from the stored blob. Throws when refused. */
  decrypt(ciphertext: Uint8Array): Promise<Uint8Array>;
}

/** Anything with the KMSClient `send` (an `AttestedKmsClient` from @enclave-extras/kms in an enclave). */
export interface KmsLike {
  // biome-ignore lint/suspicious/noExplicitAny: the SDK's command types are generic per command
  send(command: any): Promise<any>;
}

export interface KmsDataKeysOptions {
  /**
   * An attested KMS client (`new AttestedKmsClient(...)` from @enclave-extras/kms): it adds the
   * Recipient attestation, so KMS answers only an enclave whose PCRs satisfy the key policy.
   */
  kms: KmsLike;
  /** The KMS key (id, ARN or alias) whose policy pins the enclave's PCRs. */
  keyId: string;
  /** Bound to the blob: the same context is needed to decrypt it. Default `{ "enclave-extras:volume": name }`. */
  encryptionContext?: Record<string, string>;
}

/** A DataKeySource backed by KMS GenerateDataKey / Decrypt (with Recipient attestation through `kms`). */
export function kmsDataKeys(o: KmsDataKeysOptions): DataKeySource {
  const ctx = o.encryptionContext;
  return {
    async generate() {
      // loaded on first use: mounting plain NFS volumes never loads the AWS SDK
      const { GenerateDataKeyCommand } = await import('@aws-sdk/client-kms');
      const r = await o.kms.send(
        new GenerateDataKeyCommand({
          KeyId: o.keyId,
          NumberOfBytes: FSCRYPT_KEY_SIZE,
          ...(ctx ? { EncryptionContext: ctx } : {}),
        }),
      );
      if (!r?.Plaintext || !r?.CiphertextBlob)
        throw new Error('GenerateDataKey answered without Plaintext/CiphertextBlob');
      return { plaintext: r.Plaintext as Uint8Array, ciphertext: r.CiphertextBlob as Uint8Array };
    },
    async decrypt(ciphertext) {
      const { DecryptCommand } = await import('@aws-sdk/client-kms');
      const r = await o.kms.send(
        new DecryptCommand({
          CiphertextBlob: ciphertext,
          KeyId: o.keyId,
          ...(ctx ? { EncryptionContext: ctx } : {}),
        }),
      );
      if (!r?.Plaintext) throw new Error('Decrypt answered without Plaintext');
      return r.Plaintext as Uint8Array;
    },
  };
}
