// Recipient handling: verifies the attestation document with @enclave-extras/attestation
// against the configured roots, and encrypts answers to its public key as CMS
// EnvelopedData with the kms package's encoder (the shape AWS KMS answers with).
import { createPublicKey } from 'node:crypto';
import {
  AttestationError,
  AttestationVerifier,
  type RootCertificate,
} from '@enclave-extras/attestation';
import { encryptForRecipient } from '../cms.js';
import type { VerifiedRecipient } from './ops.js';
import { wire } from './wire-error.js';

export type RecipientRoots = RootCertificate[];

/** Smallest recipient RSA modulus accepted (smaller keys are weak, and under ~600 bits cannot even hold an OAEP-SHA-256 wrapped key). */
const MIN_RECIPIENT_BITS = 2048;

export function makeRecipientVerifier(opts: {
  roots: RecipientRoots | undefined;
  maxAgeMs: number;
  allowDebug: boolean;
}): (doc: Uint8Array) => Promise<VerifiedRecipient> {
  const verifier =
    opts.roots && opts.roots.length > 0
      ? new AttestationVerifier({ roots: opts.roots })
      : undefined;
  return async (doc) => {
    if (!verifier) {
      throw wire(
        'ValidationException',
        'Recipient.AttestationDocument cannot be verified: this local KMS has no trusted attestation roots configured (start it with roots / --root-pem).',
      );
    }
    let verified: ReturnType<AttestationVerifier['verify']>;
    try {
      verified = verifier.verify(doc, {
        at: 'now',
        policy: { maxAgeMs: opts.maxAgeMs, allowDebug: opts.allowDebug },
      });
    } catch (err) {
      if (err instanceof AttestationError) {
        throw wire(
          'ValidationException',
          `Recipient.AttestationDocument was refused (${err.code}): ${err.message}`,
          err,
        );
      }
      throw err;
    }
    const publicKey = verified.publicKey;
    if (!publicKey || publicKey.length === 0) {
      throw wire(
        'ValidationException',
        'Recipient.AttestationDocument has no public_key: request the document with the RSA public key (DER SPKI) the answer must be encrypted to.',
      );
    }
    let bits: number | undefined;
    try {
      const key = createPublicKey({ key: Buffer.from(publicKey), format: 'der', type: 'spki' });
      if (key.asymmetricKeyType !== 'rsa') throw new Error(`${key.asymmetricKeyType} key`);
      bits = key.asymmetricKeyDetails?.modulusLength;
    } catch (err) {
      throw wire(
        'ValidationException',
        `Recipient.AttestationDocument public_key is not a DER SubjectPublicKeyInfo of an RSA key (${(err as Error).message}); RSAES_OAEP_SHA_256 needs RSA.`,
        err,
      );
    }
    if (bits === undefined || bits < MIN_RECIPIENT_BITS) {
      throw wire(
        'ValidationException',
        `Recipient.AttestationDocument public_key is a ${bits ?? 'unknown'}-bit RSA key; the recipient key must be RSA of at least ${MIN_RECIPIENT_BITS} bits (AWS's SDK uses RSA-2048).`,
      );
    }
    return { publicKey, pcrs: verified.pcrs };
  };
}

export function makeRecipientEncryptor(): (p: Uint8Array, spki: Uint8Array) => Promise<Uint8Array> {
  return async (plaintext, spki) => encryptForRecipient(plaintext, spki);
}
