import { verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { DerError } from './der.js';
import { type AttestationDocument, type CoseAlgorithm, parseDocument } from './document.js';
import { bytesEqual, bytesOrHex, pemToDer, toHex } from './encoding.js';
import { AttestationError, wrapError } from './errors.js';
import { AWS_NITRO_ROOT_DER } from './root.js';
import {
  KEY_USAGE,
  type ParsedCertificate,
  parseCertificate,
  publicKeyOf,
  sha256Hex,
  verifyCertificateSignature,
} from './x509.js';

/** A trusted root: PEM text or DER bytes. */
export type RootCertificate = string | Uint8Array;

/** Expected values checked after the signature and chain are verified. */
export interface AttestationPolicy {
  /** Expected PCR values (any subset), index -> hex string or bytes. */
  pcrs?: Record<number, string | Uint8Array> | Map<number, string | Uint8Array>;
  /** Accept debug-mode enclaves (PCR0, PCR1 and PCR2 all zero). Default false. */
  allowDebug?: boolean;
  /** Reject documents whose timestamp is older than this many ms before `now`. */
  maxAgeMs?: number;
  /** Tolerated clock skew for timestamps in the future when `maxAgeMs` is set. Default 60 000. */
  clockSkewMs?: number;
  /** The clock for `maxAgeMs` and for `at: 'now'`. Default: the system clock. */
  now?: Date | number;
  /** Expected nonce / user_data / public_key (hex or bytes); the document must carry equal bytes. */
  nonce?: string | Uint8Array;
  userData?: string | Uint8Array;
  publicKey?: string | Uint8Array;
}

export interface VerifyOptions {
  /**
   * Time at which every certificate must be valid: `'now'` (default; `policy.now` if given, else
   * the system clock), `'document'` (the document's own timestamp) or an explicit Date / ms.
   */
  at?: 'now' | 'document' | Date | number;
  policy?: AttestationPolicy;
}

export interface VerifierOptions {
  /**
   * Trusted roots. Default: only the embedded AWS Nitro Enclaves root. When given, ONLY these are
   * trusted (add `AWS_NITRO_ROOT_PEM` yourself to keep AWS too).
   */
  roots?: RootCertificate[];
  /** How many verified CA certificates to keep (LRU by DER SHA-256). Default 256; 0 disables. */
  cacheSize?: number;
}

/** A document whose signature, chain and policy were verified. */
export interface VerifiedAttestationDocument extends AttestationDocument {
  /** The time the certificate validity was checked at. */
  verifiedAt: Date;
  /** SHA-256 (hex) of the trusted root the chain ended in. */
  rootSha256: string;
  /** PCR0, PCR1 and PCR2 are all zero (debug-mode enclave); only possible with `allowDebug`. */
  debug: boolean;
}

export interface VerifierStats {
  cacheSize: number;
  cacheHits: number;
  cacheMisses: number;
}

interface CaEntry {
  cert: ParsedCertificate;
  key: KeyObject;
  /** SHA-256 of the issuer certificate this one's signature was verified with. */
  verifiedBy?: string;
}

/**
 * A leaf certificate as parsed, with its key: what reading the DER yields, nothing about trust.
 * Reused only for byte-identical leaf DER; the leaf's signature, validity, key usage and the
 * COSE signature are still checked on every verification.
 */
interface LeafEntry {
  cert: ParsedCertificate;
  key: KeyObject;
  /** `key.asymmetricKeyType` and its named curve, read once (each read is a native call). */
  keyType: string | undefined;
  curve: string | undefined;
}

const CURVE_OF_ALG: Record<CoseAlgorithm, { curve: string; hash: string; size: number }> = {
  ES256: { curve: 'prime256v1', hash: 'sha256', size: 32 },
  ES384: { curve: 'secp384r1', hash: 'sha384', size: 48 },
  ES512: { curve: 'secp521r1', hash: 'sha512', size: 66 },
};

function chainError(field: string, message: string, cause?: unknown): AttestationError {
  return new AttestationError('ERR_ATTESTATION_CHAIN_INVALID', `${field}: ${message}`, {
    field,
    cause,
  });
}

function parseCert(der: Uint8Array, field: string): ParsedCertificate {
  try {
    return parseCertificate(der);
  } catch (err) {
    const why = err instanceof DerError ? err.message : 'unreadable';
    throw chainError(field, `not a valid X.509 v3 DER certificate (${why})`, err);
  }
}

function keyOf(cert: ParsedCertificate, field: string): KeyObject {
  try {
    return publicKeyOf(cert);
  } catch (err) {
    throw chainError(field, 'the certificate public key cannot be read', err);
  }
}

function toMs(v: Date | number, field: string): number {
  const ms = v instanceof Date ? v.getTime() : v;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) {
    throw new AttestationError('ERR_ATTESTATION_BAD_INPUT', `${field} must be a valid Date or ms`, {
      field,
    });
  }
  return ms;
}

/**
 * Verifies Nitro attestation documents against pinned roots, caching verified CA certificates so
 * a stream of documents from one host costs about two ECDSA verifications each.
 */
export class AttestationVerifier {
  readonly #roots = new Map<string, CaEntry>();
  readonly #cache = new Map<string, CaEntry>();
  /** Parsed leaf certificates by DER SHA-256 (parse memo, never a verification result). */
  readonly #leaves = new Map<string, LeafEntry>();
  readonly #cacheSize: number;
  #hits = 0;
  #misses = 0;

  constructor(options: VerifierOptions = {}) {
    const roots = options.roots ?? [AWS_NITRO_ROOT_DER];
    if (!Array.isArray(roots) || roots.length === 0) {
      throw new AttestationError(
        'ERR_ATTESTATION_BAD_INPUT',
        'roots must be a non-empty array of PEM strings or DER bytes',
        { field: 'roots' },
      );
    }
    roots.forEach((r, i) => {
      const field = `roots[${i}]`;
      let der: Uint8Array;
      if (typeof r === 'string') der = pemToDer(r);
      else if (r instanceof Uint8Array) der = r;
      else {
        throw new AttestationError('ERR_ATTESTATION_BAD_INPUT', `${field} must be PEM or DER`, {
          field,
        });
      }
      let cert: ParsedCertificate;
      try {
        cert = parseCertificate(der);
      } catch (err) {
        throw wrapError(
          err,
          'ERR_ATTESTATION_BAD_INPUT',
          `${field} is not a valid certificate`,
          field,
        );
      }
      this.#roots.set(cert.sha256, { cert, key: keyOf(cert, field) });
    });
    const size = options.cacheSize ?? 256;
    if (!Number.isInteger(size) || size < 0) {
      throw new AttestationError('ERR_ATTESTATION_BAD_INPUT', 'cacheSize must be an integer >= 0', {
        field: 'cacheSize',
      });
    }
    this.#cacheSize = size;
  }

  /** SHA-256 fingerprints (hex) of the trusted roots. */
  get rootFingerprints(): string[] {
    return [...this.#roots.keys()];
  }

  get stats(): VerifierStats {
    return { cacheSize: this.#cache.size, cacheHits: this.#hits, cacheMisses: this.#misses };
  }

  clearCache(): void {
    this.#cache.clear();
    this.#leaves.clear();
  }

  /** Parses and fully verifies a document. Throws AttestationError with a stable code. */
  verify(
    input: Uint8Array | ArrayBuffer | string,
    options: VerifyOptions = {},
  ): VerifiedAttestationDocument {
    try {
      return this.#verify(input, options);
    } catch (err) {
      throw wrapError(
        err,
        'ERR_ATTESTATION_INTERNAL',
        'document: unexpected failure while verifying (please report it)',
      );
    }
  }

  #verify(
    input: Uint8Array | ArrayBuffer | string,
    options: VerifyOptions,
  ): VerifiedAttestationDocument {
    if (options === null || typeof options !== 'object') {
      throw new AttestationError('ERR_ATTESTATION_BAD_INPUT', 'options must be an object', {
        field: 'options',
      });
    }
    const policy = options.policy ?? {};
    if (policy === null || typeof policy !== 'object') {
      throw new AttestationError('ERR_ATTESTATION_BAD_INPUT', 'policy must be an object', {
        field: 'policy',
      });
    }
    const doc = parseDocument(input);
    const now = policy.now === undefined ? Date.now() : toMs(policy.now, 'policy.now');
    const at = options.at ?? 'now';
    const atMs = at === 'now' ? now : at === 'document' ? doc.timestamp : toMs(at, 'at');

    const { rootSha256, leaf } = this.#verifyChain(doc, atMs);
    this.#verifySignature(doc, leaf);
    const debug = checkPolicy(doc, policy, now);
    return { ...doc, verifiedAt: new Date(atMs), rootSha256, debug };
  }

  #cached(hash: string): CaEntry | undefined {
    const e = this.#cache.get(hash);
    if (e) {
      this.#cache.delete(hash);
      this.#cache.set(hash, e);
    }
    return e;
  }

  #remember(entry: CaEntry): void {
    if (this.#cacheSize === 0) return;
    this.#cache.delete(entry.cert.sha256);
    this.#cache.set(entry.cert.sha256, entry);
    while (this.#cache.size > this.#cacheSize) {
      const oldest = this.#cache.keys().next().value as string;
      this.#cache.delete(oldest);
    }
  }

  /**
   * The parsed leaf and its key, from the memo when these exact DER bytes were parsed before.
   * Only parsing is skipped: the caller checks the signature, validity and usage every time.
   */
  #leaf(der: Uint8Array): LeafEntry {
    const hash = sha256Hex(der);
    const memo = this.#leaves.get(hash);
    if (memo && bytesEqual(memo.cert.der, der)) {
      this.#leaves.delete(hash);
      this.#leaves.set(hash, memo);
      return memo;
    }
    // Parse a private copy so the memo does not keep the caller's whole document buffer alive.
    const cert = parseCert(this.#cacheSize === 0 ? der : der.slice(), 'payload.certificate');
    const key = keyOf(cert, 'payload.certificate');
    const entry: LeafEntry = {
      cert,
      key,
      keyType: key.asymmetricKeyType,
      curve: key.asymmetricKeyDetails?.namedCurve,
    };
    if (this.#cacheSize > 0) {
      this.#leaves.set(hash, entry);
      while (this.#leaves.size > this.#cacheSize) {
        this.#leaves.delete(this.#leaves.keys().next().value as string);
      }
    }
    return entry;
  }

  /** Walks root -> leaf. Returns the root fingerprint and the verified leaf. */
  #verifyChain(doc: AttestationDocument, atMs: number): { rootSha256: string; leaf: LeafEntry } {
    if (doc.cabundle.length === 0) {
      throw new AttestationError(
        'ERR_ATTESTATION_UNTRUSTED_ROOT',
        'payload.cabundle: empty, so the certificate cannot chain to a trusted root',
        { field: 'payload.cabundle' },
      );
    }
    const rootDer = doc.cabundle[0]!;
    const rootHash = sha256Hex(rootDer);
    const root = this.#roots.get(rootHash);
    if (!root) {
      let subject = 'unparseable certificate';
      try {
        subject = `"${parseCertificate(rootDer).subjectText}"`;
      } catch {
        // keep the generic description
      }
      throw new AttestationError(
        'ERR_ATTESTATION_UNTRUSTED_ROOT',
        `payload.cabundle[0]: root ${subject} (SHA-256 ${rootHash}) is not a trusted root; pass its certificate in \`roots\` if you trust it`,
        { field: 'payload.cabundle[0]' },
      );
    }
    // chain[0] = leaf, chain[k] = cabundle[n - k], chain[n] = root
    const n = doc.cabundle.length;
    let issuer: CaEntry = root;
    checkCa(root.cert, 'payload.cabundle[0]', n - 1);
    checkValidity(root.cert, 'payload.cabundle[0]', atMs);
    for (let k = n - 1; k >= 1; k--) {
      const field = `payload.cabundle[${n - k}]`;
      const der = doc.cabundle[n - k]!;
      const hash = sha256Hex(der);
      let entry = this.#cached(hash);
      if (entry && entry.verifiedBy === issuer.cert.sha256) {
        this.#hits++;
      } else {
        this.#misses++;
        // a private copy: the cache must not keep the whole document (der is a view into it)
        const cert = entry?.cert ?? parseCert(this.#cacheSize === 0 ? der : der.slice(), field);
        entry = { cert, key: entry?.key ?? keyOf(cert, field) };
        checkIssuedBy(cert, issuer, field);
        entry.verifiedBy = issuer.cert.sha256;
        this.#remember(entry);
      }
      checkCa(entry.cert, field, k - 1);
      checkValidity(entry.cert, field, atMs);
      issuer = entry;
    }
    const leafEntry = this.#leaf(doc.certificate);
    const leaf = leafEntry.cert;
    checkIssuedBy(leaf, issuer, 'payload.certificate');
    if (leaf.unknownCritical.length > 0) {
      throw chainError(
        'payload.certificate',
        `unsupported critical extension(s) ${leaf.unknownCritical.join(', ')}`,
      );
    }
    if (leaf.keyUsage === undefined || (leaf.keyUsage & KEY_USAGE.digitalSignature) === 0) {
      throw chainError('payload.certificate', 'leaf keyUsage must include digitalSignature');
    }
    checkValidity(leaf, 'payload.certificate', atMs);
    return { rootSha256: rootHash, leaf: leafEntry };
  }

  #verifySignature(doc: AttestationDocument, leaf: LeafEntry): void {
    const want = CURVE_OF_ALG[doc.alg];
    const { key, keyType, curve } = leaf;
    if (keyType !== 'ec' || curve !== want.curve) {
      throw new AttestationError(
        'ERR_ATTESTATION_BAD_SIGNATURE',
        `payload.certificate: leaf key is ${keyType ?? '?'} ${curve ?? ''} but protected.alg is ${doc.alg} (needs ${want.curve})`,
        { field: 'signature' },
      );
    }
    if (doc.raw.signature.length !== want.size * 2) {
      throw new AttestationError(
        'ERR_ATTESTATION_BAD_SIGNATURE',
        `signature: ${doc.raw.signature.length} bytes, ${doc.alg} needs ${want.size * 2} (raw r||s)`,
        { field: 'signature' },
      );
    }
    const toBeSigned = sigStructure(doc.raw.protected, doc.raw.payload);
    let ok: boolean;
    try {
      ok = cryptoVerify(
        want.hash,
        toBeSigned,
        { key, dsaEncoding: 'ieee-p1363' },
        doc.raw.signature,
      );
    } catch (err) {
      throw wrapError(
        err,
        'ERR_ATTESTATION_BAD_SIGNATURE',
        'signature: verification failed',
        'signature',
      );
    }
    if (!ok) {
      throw new AttestationError(
        'ERR_ATTESTATION_BAD_SIGNATURE',
        `signature: the ${doc.alg} signature does not match the payload and the leaf certificate key; the document was altered or signed by another key`,
        { field: 'signature' },
      );
    }
  }
}

/** CBOR head of a byte string of `n` bytes (major type 2), written at `o`; returns the new offset. */
function bstrHead(out: Uint8Array, o: number, n: number): number {
  if (n < 24) {
    out[o] = 0x40 | n;
    return o + 1;
  }
  if (n < 0x100) {
    out[o] = 0x58;
    out[o + 1] = n;
    return o + 2;
  }
  if (n < 0x10000) {
    out[o] = 0x59;
    out[o + 1] = n >> 8;
    out[o + 2] = n & 0xff;
    return o + 3;
  }
  out[o] = 0x5a;
  out[o + 1] = n >>> 24;
  out[o + 2] = (n >> 16) & 0xff;
  out[o + 3] = (n >> 8) & 0xff;
  out[o + 4] = n & 0xff;
  return o + 5;
}

// array(4), text(10) "Signature1"
const SIG1_PREFIX = Uint8Array.of(0x84, 0x6a, ...[...'Signature1'].map((c) => c.charCodeAt(0)));

/**
 * The COSE Sig_structure for COSE_Sign1 with empty external AAD:
 * `["Signature1", protected, h'', payload]` in CBOR, written in one allocation (the same bytes as
 * `encodeCbor` gives; a test holds them equal).
 */
export function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(
    SIG1_PREFIX.length + 5 + protectedBytes.length + 1 + 5 + payload.length,
  );
  out.set(SIG1_PREFIX, 0);
  let o = bstrHead(out, SIG1_PREFIX.length, protectedBytes.length);
  out.set(protectedBytes, o);
  o += protectedBytes.length;
  out[o++] = 0x40; // external_aad: empty byte string
  o = bstrHead(out, o, payload.length);
  out.set(payload, o);
  o += payload.length;
  return out.subarray(0, o);
}

function checkIssuedBy(cert: ParsedCertificate, issuer: CaEntry, field: string): void {
  if (!bytesEqual(cert.issuer, issuer.cert.subject)) {
    throw chainError(
      field,
      `issuer name does not match the subject "${issuer.cert.subjectText}" of the next certificate up the chain (cabundle must be ordered root first)`,
    );
  }
  let ok = false;
  let cause: unknown;
  try {
    ok = verifyCertificateSignature(cert, issuer.key);
  } catch (err) {
    cause = err;
  }
  if (!ok) {
    throw chainError(
      field,
      `certificate signature does not verify with the key of "${issuer.cert.subjectText}"`,
      cause,
    );
  }
}

function checkCa(cert: ParsedCertificate, field: string, casBelow: number): void {
  if (!cert.basicConstraints?.ca) {
    throw chainError(field, 'a CA certificate must have basicConstraints cA=true');
  }
  if (cert.keyUsage === undefined || (cert.keyUsage & KEY_USAGE.keyCertSign) === 0) {
    throw chainError(field, 'a CA certificate must have keyUsage keyCertSign');
  }
  const pathLen = cert.basicConstraints.pathLen;
  if (pathLen !== undefined && casBelow > pathLen) {
    throw chainError(
      field,
      `pathLenConstraint ${pathLen} allows fewer than the ${casBelow} CA(s) below it`,
    );
  }
  if (cert.unknownCritical.length > 0) {
    throw chainError(field, `unsupported critical extension(s) ${cert.unknownCritical.join(', ')}`);
  }
}

function checkValidity(cert: ParsedCertificate, field: string, atMs: number): void {
  if (atMs >= cert.notBefore && atMs <= cert.notAfter) return;
  const at = new Date(atMs).toISOString();
  if (atMs < cert.notBefore) {
    throw new AttestationError(
      'ERR_ATTESTATION_CERT_NOT_YET_VALID',
      `${field}: "${cert.subjectText}" is not valid before ${new Date(cert.notBefore).toISOString()} (checked at ${at}); check the clock or use at: 'document'`,
      { field },
    );
  }
  if (atMs > cert.notAfter) {
    throw new AttestationError(
      'ERR_ATTESTATION_CERT_EXPIRED',
      `${field}: "${cert.subjectText}" expired at ${new Date(cert.notAfter).toISOString()} (checked at ${at}); request a fresh document or use at: 'document' for archived ones`,
      { field },
    );
  }
}

function isZero(b: Uint8Array | undefined): boolean {
  return b?.every((x) => x === 0) === true;
}

/** Applies the policy; returns whether the document is from a debug-mode enclave. */
function checkPolicy(doc: AttestationDocument, policy: AttestationPolicy, now: number): boolean {
  const debug = isZero(doc.pcrs.get(0)) && isZero(doc.pcrs.get(1)) && isZero(doc.pcrs.get(2));
  if (policy.pcrs !== undefined) {
    const entries =
      policy.pcrs instanceof Map ? [...policy.pcrs.entries()] : Object.entries(policy.pcrs);
    for (const [k, v] of entries) {
      const index = Number(k);
      const field = `policy.pcrs[${String(k)}]`;
      if (!Number.isInteger(index) || index < 0 || index > 31) {
        throw new AttestationError('ERR_ATTESTATION_BAD_INPUT', `${field}: index must be 0..31`, {
          field,
        });
      }
      const want = bytesOrHex(v, field);
      const got = doc.pcrs.get(index);
      if (!got || !bytesEqual(got, want)) {
        throw new AttestationError(
          'ERR_ATTESTATION_PCR_MISMATCH',
          `payload.pcrs[${index}]: ${got ? toHex(got) : 'absent'} does not equal the expected ${toHex(want)}`,
          { field: `payload.pcrs[${index}]` },
        );
      }
    }
  }
  if (debug && policy.allowDebug !== true) {
    throw new AttestationError(
      'ERR_ATTESTATION_DEBUG_ENCLAVE',
      'payload.pcrs: PCR0, PCR1 and PCR2 are all zero (a debug-mode enclave); set policy.allowDebug to accept it',
      { field: 'payload.pcrs' },
    );
  }
  if (policy.maxAgeMs !== undefined) {
    if (typeof policy.maxAgeMs !== 'number' || !(policy.maxAgeMs >= 0)) {
      throw new AttestationError('ERR_ATTESTATION_BAD_INPUT', 'policy.maxAgeMs must be >= 0', {
        field: 'policy.maxAgeMs',
      });
    }
    const skew = policy.clockSkewMs ?? 60_000;
    const age = now - doc.timestamp;
    if (age > policy.maxAgeMs || age < -skew) {
      throw new AttestationError(
        'ERR_ATTESTATION_STALE',
        `payload.timestamp: ${doc.date.toISOString()} is ${age >= 0 ? `${age} ms old, more than maxAgeMs ${policy.maxAgeMs}` : `${-age} ms in the future`}; request a fresh document`,
        { field: 'payload.timestamp' },
      );
    }
  }
  const fields = [
    ['nonce', 'nonce', doc.nonce, 'ERR_ATTESTATION_NONCE_MISMATCH'],
    ['userData', 'user_data', doc.userData, 'ERR_ATTESTATION_USER_DATA_MISMATCH'],
    ['publicKey', 'public_key', doc.publicKey, 'ERR_ATTESTATION_PUBLIC_KEY_MISMATCH'],
  ] as const;
  for (const [opt, name, got, code] of fields) {
    const expected = policy[opt];
    if (expected === undefined) continue;
    const want = bytesOrHex(expected, `policy.${opt}`);
    if (!got || !bytesEqual(got, want)) {
      throw new AttestationError(
        code,
        `payload.${name}: ${got ? `${got.length} bytes that differ from` : 'absent, expected'} the expected ${want.length} bytes`,
        { field: `payload.${name}` },
      );
    }
  }
  return debug;
}

let defaultVerifier: AttestationVerifier | undefined;

/**
 * Verifies a document: structure, the chain to the trusted roots (default: the AWS Nitro root)
 * with every certificate valid at `at`, the COSE signature, then the policy.
 * Without `roots`, uses a shared verifier (with its cache) for the AWS root.
 */
export function verifyDocument(
  input: Uint8Array | ArrayBuffer | string,
  options: VerifyOptions & { roots?: RootCertificate[] } = {},
): VerifiedAttestationDocument {
  if (options !== null && typeof options === 'object' && options.roots !== undefined) {
    return new AttestationVerifier({ roots: options.roots, cacheSize: 0 }).verify(input, options);
  }
  defaultVerifier ??= new AttestationVerifier();
  return defaultVerifier.verify(input, options);
}
