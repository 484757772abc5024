import { AttestationError } from './errors.js';

const HEX_RE = /^(?:[0-9a-fA-F]{2})+$/;
const B64_RE = /^[A-Za-z0-9+/_-]*={0,2}$/;

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Strict hex (even length, no prefix) to bytes. Throws ERR_ATTESTATION_BAD_INPUT naming `field`. */
export function fromHex(hex: string, field: string): Uint8Array {
  const s = hex.startsWith('0x') || hex.startsWith('0X') ? hex.slice(2) : hex;
  if (s.length > 0 && !HEX_RE.test(s)) {
    throw new AttestationError(
      'ERR_ATTESTATION_BAD_INPUT',
      `${field} is not a hex string of whole bytes; pass hex like "a1b2..." or a Uint8Array`,
      { field },
    );
  }
  return new Uint8Array(Buffer.from(s, 'hex'));
}

/**
 * Decodes a document given as text: hex (optionally 0x-prefixed) or base64 / base64url
 * (whitespace ignored, padding optional). Throws ERR_ATTESTATION_BAD_INPUT otherwise.
 */
export function decodeDocumentInput(text: string): Uint8Array {
  if (typeof text !== 'string') {
    throw new AttestationError(
      'ERR_ATTESTATION_BAD_INPUT',
      'document must be a string (hex or base64) for decodeDocumentInput',
      { field: 'document' },
    );
  }
  const s = text.replace(/\s+/g, '');
  if (s.length === 0) {
    throw new AttestationError('ERR_ATTESTATION_BAD_INPUT', 'document string is empty', {
      field: 'document',
    });
  }
  const noPrefix = /^0x/i.test(s) ? s.slice(2) : s;
  if (HEX_RE.test(noPrefix)) return fromHex(noPrefix, 'document');
  const unpadded = s.replace(/=+$/, '');
  if (B64_RE.test(s) && unpadded.length > 1 && unpadded.length % 4 !== 1) {
    return new Uint8Array(Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64'));
  }
  throw new AttestationError(
    'ERR_ATTESTATION_BAD_INPUT',
    'document string is neither hex nor base64; pass the NSM bytes, their hex or their base64',
    { field: 'document' },
  );
}

/** Bytes from a Uint8Array/Buffer/ArrayBuffer or a hex/base64 string. */
export function documentBytes(input: unknown): Uint8Array {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (typeof input === 'string') return decodeDocumentInput(input);
  throw new AttestationError(
    'ERR_ATTESTATION_BAD_INPUT',
    `document must be a Uint8Array, ArrayBuffer or hex/base64 string, got ${input === null ? 'null' : typeof input}`,
    { field: 'document' },
  );
}

/** Bytes from a Uint8Array or a hex string (policy values). */
export function bytesOrHex(value: unknown, field: string): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return fromHex(value, field);
  throw new AttestationError(
    'ERR_ATTESTATION_BAD_INPUT',
    `${field} must be a Uint8Array or a hex string`,
    { field },
  );
}

/** Converts a PEM block (first one with `label`, default CERTIFICATE) to DER bytes. */
export function pemToDer(pem: string, label = 'CERTIFICATE'): Uint8Array {
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`);
  const m = typeof pem === 'string' ? re.exec(pem) : null;
  if (!m) {
    throw new AttestationError(
      'ERR_ATTESTATION_BAD_INPUT',
      `no "-----BEGIN ${label}-----" block found in the PEM text`,
      { field: 'pem' },
    );
  }
  return new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
}

/** Wraps DER bytes as PEM (64-column base64). */
export function derToPem(der: Uint8Array, label = 'CERTIFICATE'): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
