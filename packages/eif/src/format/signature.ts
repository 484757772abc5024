// The EIF signature section (PCR8) as aws-nitro-enclaves-image-format writes it:
// serde_cbor of Vec<PcrSignature> = [ { "signing_certificate": [PEM bytes as an array of
// integers], "signature": [COSE_Sign1 bytes as an array of integers] } ], where the COSE_Sign1
// (untagged, protected {1: alg}, unprotected {}) signs serde_cbor of
// PcrInfo { "register_index": 0, "register_value": [PCR0 bytes as integers] }.
import {
  createPrivateKey,
  createPublicKey,
  sign as cryptoSign,
  verify as cryptoVerify,
  type KeyObject,
  X509Certificate,
} from 'node:crypto';
import { EifError } from '../errors.js';
import {
  byteArray,
  CborMap,
  CborTagged,
  type CborValue,
  decodeCbor,
  encodeCbor,
  fromByteArray,
} from './cbor.js';

type CurveParams = {
  alg: number;
  name: 'ES256' | 'ES384' | 'ES512';
  hash: string;
  keyLength: number;
};
const CURVES: Record<string, CurveParams> = {
  prime256v1: { alg: -7, name: 'ES256', hash: 'sha256', keyLength: 32 },
  secp384r1: { alg: -35, name: 'ES384', hash: 'sha384', keyLength: 48 },
  secp521r1: { alg: -36, name: 'ES512', hash: 'sha512', keyLength: 66 },
};

function curveOf(key: KeyObject): CurveParams | undefined {
  if (key.asymmetricKeyType !== 'ec') return undefined;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  return curve ? CURVES[curve] : undefined;
}

/** A private key and its certificate, ready to sign EIFs (see {@link loadSigningKey}). */
export interface EifSigningKey {
  privateKey: KeyObject;
  /** The certificate bytes stored in the EIF (PEM text, as nitro-cli stores the file it read). */
  certificatePem: Buffer;
  /** DER of the certificate: PCR8 measures these bytes. */
  certificateDer: Buffer;
  alg: 'ES256' | 'ES384' | 'ES512';
}

/** Signing input: PEM text/bytes or a KeyObject for the key; PEM or DER for the certificate. */
export interface SigningInput {
  /** EC private key (P-256, P-384 or P-521), PEM (SEC1 or PKCS#8) or a KeyObject. */
  privateKey: string | Uint8Array | KeyObject;
  /** X.509 certificate of that key, PEM or DER. */
  certificate: string | Uint8Array;
}

function keyError(message: string, cause?: unknown): EifError {
  return new EifError('ERR_EIF_SIGNING_KEY', message, cause === undefined ? {} : { cause });
}

/** Checks a key/certificate pair the way nitro-cli needs it (EC key, matching certificate). */
export function loadSigningKey(input: SigningInput | EifSigningKey): EifSigningKey {
  if ('certificateDer' in input) return input;
  let privateKey: KeyObject;
  try {
    privateKey =
      input.privateKey instanceof Uint8Array || typeof input.privateKey === 'string'
        ? createPrivateKey(Buffer.from(input.privateKey as string | Uint8Array))
        : input.privateKey;
  } catch (err) {
    throw keyError(
      'signing key: cannot read the private key; give a PEM EC private key (P-256, P-384 or P-521).',
      err,
    );
  }
  if (privateKey.type !== 'private') throw keyError('signing key: not a private key.');
  const params = curveOf(privateKey);
  if (!params) {
    throw keyError(
      `signing key: ${privateKey.asymmetricKeyType ?? 'unknown'} keys cannot sign EIFs; use an EC key on P-256, P-384 or P-521 (nitro-cli's COSE signer supports only these).`,
    );
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(Buffer.from(input.certificate as string | Uint8Array));
  } catch (err) {
    throw keyError('signing certificate: not a PEM or DER X.509 certificate.', err);
  }
  const pub = createPublicKey(privateKey);
  if (!cert.publicKey.equals(pub)) {
    throw keyError(
      'signing certificate: its public key does not match the private key; give the certificate issued for this key.',
    );
  }
  const certificateDer = Buffer.from(cert.raw);
  const raw = Buffer.from(input.certificate as string | Uint8Array);
  const isPem = raw.includes('-----BEGIN CERTIFICATE-----');
  const certificatePem = isPem ? raw : Buffer.from(cert.toString(), 'utf8');
  return { privateKey, certificatePem, certificateDer, alg: params.name };
}

/** serde_cbor of PcrInfo { register_index, register_value }: what the COSE_Sign1 signs. */
export function pcrInfoPayload(registerIndex: number, registerValue: Uint8Array): Buffer {
  return encodeCbor(
    new CborMap([
      ['register_index', registerIndex],
      ['register_value', byteArray(registerValue)],
    ]),
  );
}

function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Buffer {
  return encodeCbor(['Signature1', protectedBytes, new Uint8Array(0), payload]);
}

/** The signature section bytes for an image whose PCR0 is `pcr0`. */
export function signatureSection(pcr0: Uint8Array, key: EifSigningKey): Buffer {
  const params = curveOf(key.privateKey)!;
  const protectedBytes = encodeCbor(new CborMap([[1, params.alg]]));
  const payload = pcrInfoPayload(0, pcr0);
  const sig = cryptoSign(params.hash, sigStructure(protectedBytes, payload), {
    key: key.privateKey,
    dsaEncoding: 'ieee-p1363',
  });
  const cose = encodeCbor([protectedBytes, new CborMap([]), payload, sig]);
  return encodeCbor([
    new CborMap([
      ['signing_certificate', byteArray(key.certificatePem)],
      ['signature', byteArray(cose)],
    ]),
  ]);
}

/** A decoded signature section. */
export interface ParsedSignature {
  /** The certificate bytes as stored (PEM). */
  certificatePem: Buffer;
  certificateDer: Buffer;
  certificate: X509Certificate;
  cose: { protected: Uint8Array; unprotected: CborMap; payload: Uint8Array; signature: Uint8Array };
  /** The COSE algorithm id from the protected header (-7, -35, -36), if present. */
  alg: number | undefined;
}

function sectionError(message: string, cause?: unknown): EifError {
  return new EifError(
    'ERR_EIF_BAD_SIGNATURE_SECTION',
    `signature section: ${message}`,
    cause === undefined ? { field: 'signature' } : { field: 'signature', cause },
  );
}

export function parseSignatureSection(bytes: Uint8Array): ParsedSignature {
  let top: CborValue;
  try {
    top = decodeCbor(bytes);
  } catch (err) {
    throw sectionError(`not valid CBOR (${(err as Error).message}).`, err);
  }
  if (!Array.isArray(top) || top.length === 0)
    throw sectionError('expected a non-empty CBOR array of PCR signatures.');
  const first = top[0];
  if (!(first instanceof CborMap)) throw sectionError('entry 0 is not a map.');
  const certificatePem = fromByteArray(first.get('signing_certificate'));
  const coseBytes = fromByteArray(first.get('signature'));
  if (!certificatePem) throw sectionError('signing_certificate is not an array of bytes.');
  if (!coseBytes) throw sectionError('signature is not an array of bytes.');
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(certificatePem);
  } catch (err) {
    throw sectionError('signing_certificate is not a PEM certificate.', err);
  }
  let cose: CborValue;
  try {
    cose = decodeCbor(coseBytes);
  } catch (err) {
    throw sectionError(`the COSE_Sign1 is not valid CBOR (${(err as Error).message}).`, err);
  }
  if (cose instanceof CborTagged) {
    if (cose.tag !== 18) throw sectionError(`COSE tag ${cose.tag} is not COSE_Sign1 (18).`);
    cose = cose.value;
  }
  if (!Array.isArray(cose) || cose.length !== 4) throw sectionError('COSE_Sign1 is not a 4-array.');
  const [p, u, payload, sig] = cose;
  if (!(p instanceof Uint8Array) || !(u instanceof CborMap) || !(payload instanceof Uint8Array)) {
    throw sectionError('COSE_Sign1 fields have the wrong types.');
  }
  if (!(sig instanceof Uint8Array))
    throw sectionError('COSE_Sign1 signature is not a byte string.');
  let alg: number | undefined;
  if (p.length > 0) {
    let ph: CborValue;
    try {
      ph = decodeCbor(p);
    } catch (err) {
      throw sectionError('the protected header is not valid CBOR.', err);
    }
    if (!(ph instanceof CborMap)) throw sectionError('the protected header is not a map.');
    const a = ph.get(1);
    if (typeof a === 'number') alg = a;
  }
  return {
    certificatePem,
    certificateDer: Buffer.from(certificate.raw),
    certificate,
    cose: { protected: p, unprotected: u, payload, signature: sig },
    alg,
  };
}

/** Result of checking a signature section against an image's PCR0. */
export interface SignatureCheck {
  ok: boolean;
  /** Why it failed, when it failed. */
  reason?: string;
}

/**
 * Checks the COSE_Sign1 with the certificate's key (algorithm matching the key's curve, as the
 * COSE library requires) and that it signs PcrInfo{0, pcr0} byte for byte (describe-eif's check).
 * Certificate validity dates are checked at `at` when given (nitro-cli run-enclave does, at now).
 */
export function checkSignature(sig: ParsedSignature, pcr0: Uint8Array, at?: Date): SignatureCheck {
  const pub = sig.certificate.publicKey;
  const params = curveOf(pub);
  if (!params) return { ok: false, reason: 'the certificate key is not EC P-256/P-384/P-521' };
  if (sig.alg === undefined) return { ok: false, reason: 'the protected header has no algorithm' };
  if (sig.alg !== params.alg) {
    return { ok: false, reason: `algorithm ${sig.alg} does not match the key (${params.name})` };
  }
  if (sig.cose.signature.length !== 2 * params.keyLength) {
    return { ok: false, reason: 'the signature has the wrong length for the key' };
  }
  const valid = cryptoVerify(
    params.hash,
    sigStructure(sig.cose.protected, sig.cose.payload),
    { key: pub, dsaEncoding: 'ieee-p1363' },
    sig.cose.signature,
  );
  if (!valid)
    return { ok: false, reason: 'the COSE signature does not verify with the certificate key' };
  if (!Buffer.from(sig.cose.payload).equals(pcrInfoPayload(0, pcr0))) {
    return { ok: false, reason: "the signed payload is not this image's PCR0" };
  }
  if (at) {
    const t = at.getTime();
    if (t < Date.parse(sig.certificate.validFrom) || t > Date.parse(sig.certificate.validTo)) {
      return { ok: false, reason: `the signing certificate is not valid at ${at.toISOString()}` };
    }
  }
  return { ok: true };
}
