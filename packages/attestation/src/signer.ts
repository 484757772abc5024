import {
  createHash,
  sign as cryptoSign,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { CborTag, type CborValue, encodeCbor, IndefiniteMap } from './cbor.js';
import {
  der,
  derBitString,
  derOid,
  derSmallUint,
  derTime,
  derUint,
  derUtf8,
  seq,
  TAG,
} from './der.js';
import { type CoseAlgorithm, type PcrDigest, parseDocument } from './document.js';
import { bytesOrHex, derToPem } from './encoding.js';
import { AttestationError, wrapError } from './errors.js';
import { sigStructure } from './verify.js';
import { KEY_USAGE, OID, parseCertificate } from './x509.js';

export type CurveName = 'P-256' | 'P-384' | 'P-521';

/** A subject name: a bare string is the CN. */
export type SubjectName = string | { CN: string; O?: string; OU?: string; C?: string };

export interface Validity {
  notBefore?: Date | number;
  notAfter?: Date | number;
}

/** A certificate made by this package, with its keys. */
export interface IssuedCertificate {
  /** DER bytes. */
  certificate: Uint8Array;
  /** PEM text of the certificate. */
  pem: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export interface IssueCertificateOptions extends Validity {
  /** The issuing CA. Omit to make a self-signed root. */
  issuer?: { certificate: Uint8Array; privateKey: KeyObject };
  subject?: SubjectName;
  /** Make a CA certificate (basicConstraints cA, keyUsage keyCertSign+cRLSign). Default false. */
  ca?: boolean;
  /** pathLenConstraint of a CA. */
  pathLen?: number;
  /** Curve of the new key pair (ignored when `keyPair` is given). Default P-384. */
  curve?: CurveName;
  /** Certify an existing key pair instead of generating one. */
  keyPair?: { privateKey: KeyObject; publicKey: KeyObject };
}

export interface CreateCertificateChainOptions {
  /** Number of intermediate CAs between root and leaf. Default 3 (like AWS: regional, zonal, host). */
  intermediates?: number;
  /** Curve of every CA key. Default P-384. */
  curve?: CurveName;
  /** Curve of the leaf key (decides ES256/ES384/ES512 of signed documents). Default P-384. */
  leafCurve?: CurveName;
  /** Validity of the root and intermediates. Default now-1h .. now+10 years. */
  caValidity?: Validity;
  /** Validity of the leaf. Default now-1min .. now+3h (like the NSM's leaves). */
  leafValidity?: Validity;
  /** CN prefix for the generated names. Default "enclave-extras test". */
  name?: string;
}

export interface CertificateChain {
  root: IssuedCertificate;
  /** Intermediates, top (issued by the root) first. */
  intermediates: IssuedCertificate[];
  leaf: IssuedCertificate;
  /** The document cabundle: [root, intermediates...] (root first). */
  cabundle: Uint8Array[];
}

/** Payload fields of a document to sign. */
export interface DocumentFields {
  moduleId: string;
  /** Default "SHA384". */
  digest?: PcrDigest;
  /** ms since epoch or Date. Default: now. */
  timestamp?: number | Date;
  /** PCR index -> value (bytes or hex). */
  pcrs: Map<number, Uint8Array | string> | Record<number, Uint8Array | string>;
  publicKey?: Uint8Array | null;
  userData?: Uint8Array | null;
  nonce?: Uint8Array | null;
}

export interface SignDocumentOptions {
  privateKey: KeyObject;
  /** DER of the leaf certificate matching `privateKey`. */
  certificate: Uint8Array;
  /** [root, intermediates...], root first. */
  cabundle: Uint8Array[];
  /** Default: from the key's curve (P-384 -> ES384). */
  alg?: CoseAlgorithm;
  /** Wrap in CBOR tag 18. Default false (the NSM's form). */
  tagged?: boolean;
  /** Encode the payload map with indefinite length. Default false. */
  indefiniteLength?: boolean;
}

const CURVES: Record<
  CurveName,
  { node: string; sigOid: string; hash: string; alg: CoseAlgorithm }
> = {
  'P-256': { node: 'prime256v1', sigOid: OID.ecdsaSha256, hash: 'sha256', alg: 'ES256' },
  'P-384': { node: 'secp384r1', sigOid: OID.ecdsaSha384, hash: 'sha384', alg: 'ES384' },
  'P-521': { node: 'secp521r1', sigOid: OID.ecdsaSha512, hash: 'sha512', alg: 'ES512' },
};
const ALG_ID: Record<CoseAlgorithm, number> = { ES256: -7, ES384: -35, ES512: -36 };

function signerError(field: string, message: string, cause?: unknown): AttestationError {
  return new AttestationError('ERR_ATTESTATION_SIGNER', `${field}: ${message}`, { field, cause });
}

function curveOf(key: KeyObject, field: string): CurveName {
  const named = key.asymmetricKeyDetails?.namedCurve;
  for (const [name, c] of Object.entries(CURVES)) {
    if (c.node === named) return name as CurveName;
  }
  throw signerError(
    field,
    `must be an EC key on P-256, P-384 or P-521 (got ${key.asymmetricKeyType} ${named ?? ''})`,
  );
}

function ms(v: Date | number | undefined, fallback: number, field: string): number {
  if (v === undefined) return fallback;
  const n = v instanceof Date ? v.getTime() : v;
  if (typeof n !== 'number' || !Number.isFinite(n))
    throw signerError(field, 'must be a valid Date or ms');
  return n;
}

function encodeName(name: SubjectName): Uint8Array {
  const n = typeof name === 'string' ? { CN: name } : name;
  const rdn = (oid: string, value: Uint8Array) => der(TAG.SET, seq(derOid(oid), value));
  const parts: Uint8Array[] = [];
  if (n.C) parts.push(rdn(OID.country, der(TAG.PRINTABLE_STRING, new TextEncoder().encode(n.C))));
  if (n.O) parts.push(rdn(OID.organization, derUtf8(n.O)));
  if (n.OU) parts.push(rdn(OID.organizationalUnit, derUtf8(n.OU)));
  parts.push(rdn(OID.commonName, derUtf8(n.CN)));
  return seq(...parts);
}

function keyUsageBits(usage: number): Uint8Array {
  let high = 0;
  for (let b = 0; b < 16; b++) if (usage & (1 << b)) high = b;
  const bytes = new Uint8Array((high >> 3) + 1);
  for (let b = 0; b <= high; b++) if (usage & (1 << b)) bytes[b >> 3]! |= 0x80 >> (b & 7);
  return derBitString(bytes, 7 - (high & 7));
}

function extension(oid: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical
    ? seq(derOid(oid), der(TAG.BOOLEAN, Uint8Array.of(0xff)), der(TAG.OCTET_STRING, value))
    : seq(derOid(oid), der(TAG.OCTET_STRING, value));
}

function keyId(spki: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha1').update(spki).digest());
}

/**
 * Issues an X.509 v3 certificate (ECDSA) from `issuer`, or a self-signed root when `issuer` is
 * omitted. For tests and the NSM simulator's development CA.
 */
export function issueCertificate(options: IssueCertificateOptions = {}): IssuedCertificate {
  try {
    return issue(options);
  } catch (err) {
    throw wrapError(err, 'ERR_ATTESTATION_SIGNER', 'issueCertificate failed', 'issueCertificate');
  }
}

function issue(o: IssueCertificateOptions): IssuedCertificate {
  const now = Date.now();
  const keyPair =
    o.keyPair ??
    generateKeyPairSync('ec', { namedCurve: CURVES[o.curve ?? 'P-384']?.node ?? 'invalid' });
  const spki = new Uint8Array(keyPair.publicKey.export({ type: 'spki', format: 'der' }));
  const subjectName = encodeName(
    o.subject ?? (o.ca ? 'enclave-extras test CA' : 'enclave-extras test leaf'),
  );
  let issuerName: Uint8Array = subjectName;
  let issuerSpki: Uint8Array = spki;
  let signingKey = keyPair.privateKey;
  if (o.issuer) {
    let parsed: ReturnType<typeof parseCertificate>;
    try {
      parsed = parseCertificate(o.issuer.certificate);
    } catch (err) {
      throw signerError('issuer.certificate', 'is not a valid DER certificate', err);
    }
    issuerName = parsed.subject;
    issuerSpki = parsed.spki;
    signingKey = o.issuer.privateKey;
  }
  const sig = CURVES[curveOf(signingKey, o.issuer ? 'issuer.privateKey' : 'keyPair.privateKey')];
  const notBefore = ms(o.notBefore, now - (o.ca ? 3_600_000 : 60_000), 'notBefore');
  const notAfter = ms(o.notAfter, now + (o.ca ? 10 * 365 * 86_400_000 : 3 * 3_600_000), 'notAfter');
  if (notAfter < notBefore) throw signerError('notAfter', 'is before notBefore');
  if (o.pathLen !== undefined && (!Number.isInteger(o.pathLen) || o.pathLen < 0 || !o.ca)) {
    throw signerError('pathLen', 'must be an integer >= 0 on a CA certificate');
  }

  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  serial[0]! |= 0x01;
  const basic = o.ca
    ? seq(
        der(TAG.BOOLEAN, Uint8Array.of(0xff)),
        ...(o.pathLen === undefined ? [] : [derSmallUint(o.pathLen)]),
      )
    : seq();
  const usage = o.ca
    ? KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign | KEY_USAGE.digitalSignature
    : KEY_USAGE.digitalSignature;
  const extensions = [
    extension(OID.basicConstraints, true, basic),
    extension(OID.keyUsage, true, keyUsageBits(usage)),
    extension(OID.subjectKeyIdentifier, false, der(TAG.OCTET_STRING, keyId(spki))),
    extension(OID.authorityKeyIdentifier, false, seq(der(0x80, keyId(issuerSpki)))),
  ];
  const algId = seq(derOid(sig.sigOid));
  const tbs = seq(
    der(0xa0, derSmallUint(2)),
    derUint(serial),
    algId,
    issuerName,
    seq(derTime(notBefore), derTime(notAfter)),
    subjectName,
    spki,
    der(0xa3, seq(...extensions)),
  );
  const signature = cryptoSign(sig.hash, tbs, signingKey);
  const certificate = seq(tbs, algId, derBitString(new Uint8Array(signature)));
  return {
    certificate,
    pem: derToPem(certificate),
    privateKey: keyPair.privateKey,
    publicKey: keyPair.publicKey,
  };
}

/**
 * Creates a test PKI shaped like AWS's: a self-signed root, `intermediates` CAs and a leaf.
 * Pass `chain.root.certificate` (or `.pem`) in `roots` to verify documents signed with it.
 */
export function createCertificateChain(
  options: CreateCertificateChainOptions = {},
): CertificateChain {
  try {
    const count = options.intermediates ?? 3;
    if (!Number.isInteger(count) || count < 0 || count > 14) {
      throw signerError('intermediates', 'must be an integer 0..14');
    }
    const name = options.name ?? 'enclave-extras test';
    const curve = options.curve ?? 'P-384';
    const root = issueCertificate({
      ...options.caValidity,
      subject: { CN: `${name} root`, O: 'enclave-extras', C: 'US' },
      ca: true,
      curve,
    });
    const intermediates: IssuedCertificate[] = [];
    let issuer = root;
    for (let i = 0; i < count; i++) {
      issuer = issueCertificate({
        ...options.caValidity,
        issuer,
        subject: { CN: `${name} intermediate ${i + 1}`, O: 'enclave-extras', C: 'US' },
        ca: true,
        pathLen: count - 1 - i,
        curve,
      });
      intermediates.push(issuer);
    }
    const leaf = issueCertificate({
      ...options.leafValidity,
      issuer,
      subject: { CN: `${name} leaf`, O: 'enclave-extras', C: 'US' },
      curve: options.leafCurve ?? 'P-384',
    });
    return {
      root,
      intermediates,
      leaf,
      cabundle: [root.certificate, ...intermediates.map((c) => c.certificate)],
    };
  } catch (err) {
    throw wrapError(
      err,
      'ERR_ATTESTATION_SIGNER',
      'createCertificateChain failed',
      'createCertificateChain',
    );
  }
}

function pcrMap(pcrs: DocumentFields['pcrs']): Map<CborValue, CborValue> {
  const entries = pcrs instanceof Map ? [...pcrs.entries()] : Object.entries(pcrs);
  const out = new Map<CborValue, CborValue>();
  for (const [k, v] of entries) {
    out.set(Number(k), bytesOrHex(v, `pcrs[${String(k)}]`));
  }
  return out;
}

/**
 * Encodes and signs an attestation document (COSE_Sign1, untagged by default) with the leaf key,
 * the same shape the NSM returns. The result always passes `parseDocument`.
 */
export function signDocument(fields: DocumentFields, options: SignDocumentOptions): Uint8Array {
  try {
    const curve = curveOf(options.privateKey, 'privateKey');
    const alg = options.alg ?? CURVES[curve].alg;
    if (CURVES[curve].alg !== alg) {
      throw signerError(
        'alg',
        `${alg} needs a ${Object.entries(CURVES).find(([, c]) => c.alg === alg)?.[0]} key, got ${curve}`,
      );
    }
    const timestamp = ms(fields.timestamp, Date.now(), 'timestamp');
    const payloadMap = options.indefiniteLength
      ? new IndefiniteMap()
      : new Map<CborValue, CborValue>();
    payloadMap.set('module_id', fields.moduleId);
    payloadMap.set('digest', fields.digest ?? 'SHA384');
    payloadMap.set('timestamp', Math.trunc(timestamp));
    payloadMap.set('pcrs', pcrMap(fields.pcrs));
    payloadMap.set('certificate', options.certificate);
    payloadMap.set('cabundle', [...options.cabundle]);
    payloadMap.set('public_key', fields.publicKey ?? null);
    payloadMap.set('user_data', fields.userData ?? null);
    payloadMap.set('nonce', fields.nonce ?? null);
    const payload = encodeCbor(payloadMap);
    const protectedBytes = encodeCbor(new Map([[1, ALG_ID[alg]]]));
    const signature = cryptoSign(CURVES[curve].hash, sigStructure(protectedBytes, payload), {
      key: options.privateKey,
      dsaEncoding: 'ieee-p1363',
    });
    const cose: CborValue = [protectedBytes, new Map(), payload, new Uint8Array(signature)];
    const out = encodeCbor(options.tagged ? new CborTag(18, cose) : cose);
    try {
      parseDocument(out);
    } catch (err) {
      throw signerError(
        'fields',
        `the document would not be valid: ${(err as Error).message}`,
        err,
      );
    }
    return out;
  } catch (err) {
    throw wrapError(err, 'ERR_ATTESTATION_SIGNER', 'signDocument failed', 'signDocument');
  }
}
