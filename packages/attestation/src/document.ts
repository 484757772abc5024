import { CborTag, type CborValue, decodeCbor, decodeCborViews, describe } from './cbor.js';
import { documentBytes } from './encoding.js';
import { AttestationError, wrapError } from './errors.js';

export type CoseAlgorithm = 'ES256' | 'ES384' | 'ES512';
export type PcrDigest = 'SHA256' | 'SHA384' | 'SHA512';

/** A parsed (not yet verified) Nitro attestation document. */
export interface AttestationDocument {
  /** Signature algorithm from the protected header. */
  alg: CoseAlgorithm;
  /** Whether the COSE_Sign1 carried CBOR tag 18. */
  tagged: boolean;
  moduleId: string;
  digest: PcrDigest;
  /** Milliseconds since the Unix epoch, as signed by the NSM. */
  timestamp: number;
  /** `timestamp` as a Date. */
  date: Date;
  /** PCR index -> value (32, 48 or 64 bytes). */
  pcrs: Map<number, Uint8Array>;
  /** DER of the leaf certificate that signed the document. */
  certificate: Uint8Array;
  /** DER certificates, root first (cabundle[0] is the root). */
  cabundle: Uint8Array[];
  publicKey: Uint8Array | null;
  userData: Uint8Array | null;
  nonce: Uint8Array | null;
  /** The raw COSE parts (the protected header bytes, payload bytes and raw r||s signature). */
  raw: { protected: Uint8Array; payload: Uint8Array; signature: Uint8Array };
}

/** Largest payload accepted (the NSM's response buffer is 12 KiB; 16 KiB leaves room). */
export const MAX_PAYLOAD_BYTES = 16 * 1024;
/** Largest whole document accepted before parsing. */
export const MAX_DOCUMENT_BYTES = 32 * 1024;
/** Largest certificate / cabundle entry and public_key / user_data / nonce. */
export const MAX_FIELD_BYTES = 1024;

const ALG_BY_ID = new Map<number, CoseAlgorithm>([
  [-7, 'ES256'],
  [-35, 'ES384'],
  [-36, 'ES512'],
]);
const PCR_SIZES = new Set([32, 48, 64]);

function structure(field: string, message: string): AttestationError {
  return new AttestationError('ERR_ATTESTATION_BAD_STRUCTURE', `${field}: ${message}`, { field });
}

function size(field: string, message: string): AttestationError {
  return new AttestationError('ERR_ATTESTATION_FIELD_SIZE', `${field}: ${message}`, { field });
}

function bstr(v: CborValue, field: string): Uint8Array {
  if (!(v instanceof Uint8Array))
    throw structure(field, `expected a byte string, got ${describe(v)}`);
  return v;
}

function boundedBstr(v: CborValue, field: string, min: number, max: number): Uint8Array {
  const b = bstr(v, field);
  if (b.length < min || b.length > max) {
    throw size(field, `length ${b.length} is outside ${min}..${max} bytes`);
  }
  return b;
}

function optionalBstr(v: CborValue, field: string): Uint8Array | null {
  if (v === undefined || v === null) return null;
  return boundedBstr(v, field, 0, MAX_FIELD_BYTES);
}

function algFromProtected(bytes: Uint8Array): CoseAlgorithm {
  if (bytes.length === 0) {
    throw structure('protected', 'empty protected header; the alg (1) header is required');
  }
  const hdr = decodeCbor(bytes, 'protected');
  if (!(hdr instanceof Map)) throw structure('protected', `expected a map, got ${describe(hdr)}`);
  if (hdr.has(2)) {
    throw new AttestationError(
      'ERR_ATTESTATION_UNSUPPORTED_ALG',
      'protected: critical headers (label 2) are not supported',
      { field: 'protected.crit' },
    );
  }
  const id = hdr.get(1);
  if (id === undefined) throw structure('protected.alg', 'the alg (1) header is missing');
  const alg = typeof id === 'number' ? ALG_BY_ID.get(id) : undefined;
  if (!alg) {
    throw new AttestationError(
      'ERR_ATTESTATION_UNSUPPORTED_ALG',
      `protected.alg: algorithm ${typeof id === 'number' || typeof id === 'string' ? id : describe(id)} is not supported (ES256 -7, ES384 -35, ES512 -36)`,
      { field: 'protected.alg' },
    );
  }
  return alg;
}

/**
 * Parses a Nitro attestation document (COSE_Sign1, tagged 18 or untagged) and checks its
 * structure. Does NOT verify signatures or the certificate chain: use `verifyDocument` for that.
 * Accepts bytes, or a hex/base64 string.
 */
export function parseDocument(input: Uint8Array | ArrayBuffer | string): AttestationDocument {
  try {
    return parse(input);
  } catch (err) {
    throw wrapError(
      err,
      'ERR_ATTESTATION_INTERNAL',
      'document: unexpected failure while parsing (please report it)',
      'document',
    );
  }
}

/**
 * A document from QEMU's emulated NSM (the `nitro-enclave` machine's virtio-nsm): COSE alg -1,
 * 64 zero bytes as signature, certificate and cabundle. Nothing in it is authenticated.
 */
export type UnsignedQemuDocument = Omit<AttestationDocument, 'alg'> & { alg: 'unsigned-qemu' };

/**
 * INSECURE, for local development only: parses a document from QEMU's emulated NSM, which is not
 * signed (protected header exactly `{1: -1}`, signature 64 zero bytes) and so proves nothing
 * about where it came from. Its payload gets the same structural checks as {@link parseDocument};
 * a document in any other shape is refused. `parseDocument` / `verifyDocument` never accept one.
 */
export function parseUnsignedQemuDocument(
  input: Uint8Array | ArrayBuffer | string,
): UnsignedQemuDocument {
  try {
    return parse(input, true) as unknown as UnsignedQemuDocument;
  } catch (err) {
    throw wrapError(
      err,
      'ERR_ATTESTATION_INTERNAL',
      'document: unexpected failure while parsing (please report it)',
      'document',
    );
  }
}

function unsignedQemuHeader(protectedBytes: Uint8Array, signature: Uint8Array): void {
  const hdr = decodeCbor(protectedBytes, 'protected');
  if (!(hdr instanceof Map) || hdr.size !== 1 || hdr.get(1) !== -1) {
    throw new AttestationError(
      'ERR_ATTESTATION_UNSUPPORTED_ALG',
      'protected: not an unsigned QEMU document (its protected header is exactly {1: -1})',
      { field: 'protected.alg' },
    );
  }
  if (signature.length !== 64 || signature.some((b) => b !== 0)) {
    throw structure('signature', 'not an unsigned QEMU document (its signature is 64 zero bytes)');
  }
}

function parse(
  input: Uint8Array | ArrayBuffer | string,
  unsignedQemu = false,
): AttestationDocument {
  const bytes = documentBytes(input);
  if (bytes.length > MAX_DOCUMENT_BYTES) {
    throw size('document', `${bytes.length} bytes exceeds the ${MAX_DOCUMENT_BYTES}-byte limit`);
  }
  // One private copy of the input (a string input was decoded into a fresh array already): every
  // byte string of the document is a view into it, so nothing aliases the caller's memory and
  // parsing does not allocate each certificate, PCR and field separately.
  const own = typeof input === 'string' ? bytes : bytes.slice();
  let top = decodeCborViews(own, 'document');
  let tagged = false;
  if (top instanceof CborTag) {
    if (top.tag !== 18) throw structure('document', `CBOR tag ${top.tag} (only 18, COSE_Sign1)`);
    top = top.value;
    tagged = true;
  }
  if (!Array.isArray(top) || top.length !== 4) {
    throw structure(
      'document',
      `COSE_Sign1 must be a 4-element array, got ${Array.isArray(top) ? `${top.length} elements` : describe(top)}`,
    );
  }
  const protectedBytes = bstr(top[0], 'protected');
  // The unprotected header is not signed and never read; null is tolerated (some emulators write it).
  if (!(top[1] instanceof Map) && top[1] !== null) {
    throw structure('unprotected', `expected a map, got ${describe(top[1])}`);
  }
  const payload = bstr(top[2], 'payload');
  const signature = bstr(top[3], 'signature');
  let alg: CoseAlgorithm;
  if (unsignedQemu) {
    unsignedQemuHeader(protectedBytes, signature);
    alg = 'unsigned-qemu' as CoseAlgorithm;
  } else {
    alg = algFromProtected(protectedBytes);
  }
  if (payload.length > MAX_PAYLOAD_BYTES) {
    throw size('payload', `${payload.length} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte limit`);
  }

  const p = decodeCborViews(payload, 'payload');
  if (!(p instanceof Map)) throw structure('payload', `expected a map, got ${describe(p)}`);
  const get = (k: string): CborValue => p.get(k);

  const moduleId = get('module_id');
  if (typeof moduleId !== 'string') {
    throw structure('payload.module_id', `expected a text string, got ${describe(moduleId)}`);
  }
  if (moduleId.length === 0 || moduleId.length > MAX_FIELD_BYTES) {
    throw size('payload.module_id', `length ${moduleId.length} is outside 1..${MAX_FIELD_BYTES}`);
  }
  const digest = get('digest');
  if (digest !== 'SHA256' && digest !== 'SHA384' && digest !== 'SHA512') {
    throw structure(
      'payload.digest',
      `expected "SHA384" (or "SHA256"/"SHA512"), got ${typeof digest === 'string' ? JSON.stringify(digest.slice(0, 16)) : describe(digest)}`,
    );
  }
  const timestamp = get('timestamp');
  if (typeof timestamp !== 'number' || !Number.isInteger(timestamp) || timestamp <= 0) {
    throw structure(
      'payload.timestamp',
      `expected a positive integer of ms since epoch, got ${typeof timestamp === 'number' ? timestamp : describe(timestamp)}`,
    );
  }
  if (timestamp > 8.64e15) throw size('payload.timestamp', `${timestamp} is beyond any valid date`);

  const pcrsV = get('pcrs');
  if (!(pcrsV instanceof Map))
    throw structure('payload.pcrs', `expected a map, got ${describe(pcrsV)}`);
  if (pcrsV.size < 1 || pcrsV.size > 32) {
    throw structure('payload.pcrs', `${pcrsV.size} entries, expected 1..32`);
  }
  const pcrs = new Map<number, Uint8Array>();
  for (const [k, v] of pcrsV) {
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 0 || k > 31) {
      throw structure('payload.pcrs', `PCR index ${String(k)} is not an integer 0..31`);
    }
    const value = bstr(v, `payload.pcrs[${k}]`);
    if (!PCR_SIZES.has(value.length)) {
      throw size(`payload.pcrs[${k}]`, `${value.length} bytes, expected 32, 48 or 64`);
    }
    pcrs.set(k, value);
  }
  const certificate = boundedBstr(get('certificate'), 'payload.certificate', 1, MAX_FIELD_BYTES);
  // null (seen in self-signed emulator documents) is read as an empty bundle: such a document
  // parses but can never chain to a trusted root (ERR_ATTESTATION_UNTRUSTED_ROOT when verified).
  const cabundleRaw = get('cabundle');
  const cabundleV = cabundleRaw === null ? [] : cabundleRaw;
  if (!Array.isArray(cabundleV)) {
    throw structure('payload.cabundle', `expected an array, got ${describe(cabundleV)}`);
  }
  if (cabundleV.length > 16)
    throw size('payload.cabundle', `${cabundleV.length} entries, at most 16`);
  const cabundle = cabundleV.map((c, i) =>
    boundedBstr(c, `payload.cabundle[${i}]`, 1, MAX_FIELD_BYTES),
  );

  return {
    alg,
    tagged,
    moduleId,
    digest,
    timestamp,
    date: new Date(timestamp),
    pcrs,
    certificate,
    cabundle,
    publicKey: optionalBstr(get('public_key'), 'payload.public_key'),
    userData: optionalBstr(get('user_data'), 'payload.user_data'),
    nonce: optionalBstr(get('nonce'), 'payload.nonce'),
    raw: { protected: protectedBytes, payload, signature },
  };
}
