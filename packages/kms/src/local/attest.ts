// Recipient handling: verifies the attestation document with @enclave-extras/attestation
// against the configured roots, and encrypts answers to its public key as CMS
// EnvelopedData with the kms package's encoder (the shape AWS KMS answers with).
import { createPublicKey } from 'node:crypto';
import {
  AttestationError,
  AttestationVerifier,
  parseUnsignedQemuDocument,
  type RootCertificate,
} from '@enclave-extras/attestation';
import { encryptForRecipient } from '../cms.js';
import type { VerifiedRecipient } from './ops.js';
import { wire } from './wire-error.js';

export type RecipientRoots = RootCertificate[];

/** Smallest recipient RSA modulus accepted (smaller keys are weak, and under ~600 bits cannot even hold an OAEP-SHA-256 wrapped key). */
const MIN_RECIPIENT_BITS = 2048;

const UNSIGNED_QEMU_HINT =
  "an unsigned document from QEMU's nitro-enclave machine (COSE alg -1) is accepted only with the development option insecureAcceptUnsignedQemuAttestation (ee-parent kms-local --insecure-accept-unsigned-qemu-attestation)";

/**
 * INSECURE (local development): a document of QEMU's emulated NSM, which nothing signs. Only its
 * structure and age are checked; anyone who can reach the KMS can forge one.
 */
function acceptUnsignedQemu(
  doc: Uint8Array,
  maxAgeMs: number,
  onAccept: ((pcr0: string) => void) | undefined,
): { publicKey: Uint8Array | null; pcrs: Map<number, Uint8Array> } {
  let parsed: ReturnType<typeof parseUnsignedQemuDocument>;
  try {
    parsed = parseUnsignedQemuDocument(doc);
  } catch (err) {
    const e = err as AttestationError;
    throw wire(
      'ValidationException',
      `Recipient.AttestationDocument was refused (${e.code}): ${e.message}`,
      err,
    );
  }
  const age = Date.now() - parsed.timestamp;
  if (age > maxAgeMs || age < -maxAgeMs) {
    throw wire(
      'ValidationException',
      `Recipient.AttestationDocument was refused (ERR_ATTESTATION_EXPIRED): its timestamp ${parsed.date.toISOString()} is more than ${maxAgeMs} ms from now.`,
    );
  }
  onAccept?.(Buffer.from(parsed.pcrs.get(0) ?? []).toString('hex'));
  return { publicKey: parsed.publicKey, pcrs: parsed.pcrs };
}

export function makeRecipientVerifier(opts: {
  roots: RecipientRoots | undefined;
  maxAgeMs: number;
  allowDebug: boolean;
  /** INSECURE development option: accept QEMU's unsigned documents (see LocalKmsOptions). */
  insecureAcceptUnsignedQemuAttestation?: boolean;
  onUnsignedAccepted?: (pcr0: string) => void;
}): (doc: Uint8Array) => Promise<VerifiedRecipient> {
  const verifier =
    opts.roots && opts.roots.length > 0
      ? new AttestationVerifier({ roots: opts.roots })
      : undefined;
  const unsignedOk = opts.insecureAcceptUnsignedQemuAttestation === true;
  return async (doc) => {
    let verified: { publicKey: Uint8Array | null; pcrs: Map<number, Uint8Array> } | undefined;
    if (unsignedOk && isUnsignedQemuShape(doc)) {
      verified = acceptUnsignedQemu(doc, opts.maxAgeMs, opts.onUnsignedAccepted);
    } else {
      verified = verifySigned(doc);
    }
    return checkRecipientKey(verified);
  };

  function verifySigned(doc: Uint8Array): {
    publicKey: Uint8Array | null;
    pcrs: Map<number, Uint8Array>;
  } {
    if (!verifier) {
      const hint = isUnsignedQemuShape(doc) ? `; ${UNSIGNED_QEMU_HINT}` : '';
      throw wire(
        'ValidationException',
        `Recipient.AttestationDocument cannot be verified: this local KMS has no trusted attestation roots configured (start it with roots / --root-pem)${hint}.`,
      );
    }
    try {
      return verifier.verify(doc, {
        at: 'now',
        policy: { maxAgeMs: opts.maxAgeMs, allowDebug: opts.allowDebug },
      });
    } catch (err) {
      if (err instanceof AttestationError) {
        const hint =
          err.code === 'ERR_ATTESTATION_UNSUPPORTED_ALG' && isUnsignedQemuShape(doc)
            ? ` (${UNSIGNED_QEMU_HINT})`
            : '';
        throw wire(
          'ValidationException',
          `Recipient.AttestationDocument was refused (${err.code}): ${err.message}${hint}`,
          err,
        );
      }
      throw err;
    }
  }
}

/** True when the document's protected header is QEMU's unsigned `{1: -1}` (no other check). */
function isUnsignedQemuShape(doc: Uint8Array): boolean {
  try {
    parseUnsignedQemuDocument(doc);
    return true;
  } catch {
    return false;
  }
}

function checkRecipientKey(verified: {
  publicKey: Uint8Array | null;
  pcrs: Map<number, Uint8Array>;
}): VerifiedRecipient {
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
}

export function makeRecipientEncryptor(): (p: Uint8Array, spki: Uint8Array) => Promise<Uint8Array> {
  return async (plaintext, spki) => encryptForRecipient(plaintext, spki);
}
