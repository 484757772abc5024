import { AttestationError } from './errors.js';

/**
 * A small strict CBOR (RFC 8949) decoder/encoder for attestation documents.
 *
 * Written here instead of using a general-purpose library because the verifier parses hostile
 * input: no global extension registry, no tag handlers, no records, bounded depth and lengths
 * checked against the remaining bytes before anything is allocated.
 */

export class CborTag {
  constructor(
    readonly tag: number,
    readonly value: CborValue,
  ) {}
}

/** Marks a Map to be encoded with an indefinite length (tests of real-world shapes). */
export class IndefiniteMap extends Map<CborValue, CborValue> {}

export type CborValue =
  | number
  | bigint
  | string
  | Uint8Array
  | boolean
  | null
  | undefined
  | CborValue[]
  | Map<CborValue, CborValue>
  | CborTag;

const MAX_DEPTH = 16;
const textDecoder = new TextDecoder('utf-8', { fatal: true });
const textEncoder = new TextEncoder();

function malformed(message: string, field: string, cause?: unknown): AttestationError {
  return new AttestationError(
    'ERR_ATTESTATION_MALFORMED_CBOR',
    `${field}: ${message}; pass the exact bytes the NSM returned`,
    { field, cause },
  );
}

class Reader {
  pos = 0;
  constructor(
    readonly buf: Uint8Array,
    readonly field: string,
    /** Byte strings are copies (true) or views into `buf` (false). */
    readonly copy = true,
  ) {}

  byte(): number {
    if (this.pos >= this.buf.length) throw malformed('unexpected end of data', this.field);
    return this.buf[this.pos++]!;
  }

  bytes(n: number): Uint8Array {
    if (n > this.buf.length - this.pos) throw malformed('unexpected end of data', this.field);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Reads the argument of an initial byte. Returns -1 for indefinite length (ai = 31). */
  argument(ai: number, allowIndefinite: boolean): number | bigint {
    if (ai < 24) return ai;
    if (ai === 24) return this.byte();
    if (ai === 25) return (this.byte() << 8) | this.byte();
    if (ai === 26) {
      const b = this.bytes(4);
      return ((b[0]! << 24) >>> 0) + ((b[1]! << 16) | (b[2]! << 8) | b[3]!);
    }
    if (ai === 27) {
      const b = this.bytes(8);
      let v = 0n;
      for (const x of b) v = (v << 8n) | BigInt(x);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    if (ai === 31 && allowIndefinite) return -1;
    throw malformed(`reserved additional information ${ai}`, this.field);
  }

  /** A length (count of bytes/items) that must fit into the remaining data. */
  length(ai: number, unit: number): number {
    const n = this.argument(ai, true);
    if (n === -1) return -1;
    if (typeof n === 'bigint' || n > (this.buf.length - this.pos) / unit) {
      throw malformed(
        `declared length ${n} exceeds the ${this.buf.length} bytes given`,
        this.field,
      );
    }
    return n as number;
  }
}

function decodeItem(r: Reader, depth: number): CborValue {
  if (depth > MAX_DEPTH) throw malformed(`nesting deeper than ${MAX_DEPTH}`, r.field);
  const ib = r.byte();
  const major = ib >> 5;
  const ai = ib & 0x1f;
  switch (major) {
    case 0: {
      if (ai === 31) throw malformed('indefinite length on an integer', r.field);
      return r.argument(ai, false);
    }
    case 1: {
      if (ai === 31) throw malformed('indefinite length on an integer', r.field);
      const n = r.argument(ai, false);
      if (typeof n === 'bigint') return -1n - n;
      return n >= Number.MAX_SAFE_INTEGER ? -1n - BigInt(n) : -1 - n;
    }
    case 2:
    case 3: {
      const n = r.length(ai, 1);
      let data: Uint8Array;
      if (n >= 0) {
        // text is decoded straight from the input; only byte strings are copied (unless views)
        data = major === 2 && r.copy ? r.bytes(n).slice() : r.bytes(n);
      } else {
        const chunks: Uint8Array[] = [];
        let total = 0;
        for (;;) {
          const cb = r.byte();
          if (cb === 0xff) break;
          if (cb >> 5 !== major || (cb & 0x1f) === 31) {
            throw malformed('indefinite string chunk of the wrong type', r.field);
          }
          const chunk = r.bytes(r.length(cb & 0x1f, 1));
          chunks.push(chunk);
          total += chunk.length;
        }
        data = new Uint8Array(total);
        let o = 0;
        for (const c of chunks) {
          data.set(c, o);
          o += c.length;
        }
      }
      if (major === 2) return data;
      try {
        return textDecoder.decode(data);
      } catch (err) {
        throw malformed('text string is not valid UTF-8', r.field, err);
      }
    }
    case 4: {
      const n = r.length(ai, 1);
      const out: CborValue[] = [];
      if (n >= 0) {
        for (let i = 0; i < n; i++) out.push(decodeItem(r, depth + 1));
      } else {
        while (peekBreak(r) === false) out.push(decodeItem(r, depth + 1));
      }
      return out;
    }
    case 5: {
      const n = r.length(ai, 2);
      const out = new Map<CborValue, CborValue>();
      const put = () => {
        const key = decodeItem(r, depth + 1);
        if (typeof key !== 'string' && typeof key !== 'number' && typeof key !== 'bigint') {
          throw new AttestationError(
            'ERR_ATTESTATION_BAD_STRUCTURE',
            `${r.field}: map key of type ${describe(key)} is not allowed (only integers and text)`,
            { field: r.field },
          );
        }
        if (out.has(key)) throw malformed(`duplicate map key ${String(key)}`, r.field);
        out.set(key, decodeItem(r, depth + 1));
      };
      if (n >= 0) {
        for (let i = 0; i < n; i++) put();
      } else {
        while (peekBreak(r) === false) put();
      }
      return out;
    }
    case 6: {
      const tag = r.argument(ai, false);
      return new CborTag(Number(tag), decodeItem(r, depth + 1));
    }
    default: {
      if (ai === 20) return false;
      if (ai === 21) return true;
      if (ai === 22) return null;
      if (ai === 23) return undefined;
      if (ai === 25) return halfToNumber((r.byte() << 8) | r.byte());
      if (ai === 26) return new DataView(r.bytes(4).slice().buffer).getFloat32(0);
      if (ai === 27) return new DataView(r.bytes(8).slice().buffer).getFloat64(0);
      if (ai === 31) throw malformed('unexpected break code', r.field);
      throw malformed(`unsupported simple value ${ai}`, r.field);
    }
  }
}

function peekBreak(r: Reader): boolean {
  if (r.pos >= r.buf.length) throw malformed('unterminated indefinite-length item', r.field);
  if (r.buf[r.pos] === 0xff) {
    r.pos++;
    return true;
  }
  return false;
}

function halfToNumber(h: number): number {
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * 2 ** -14 * (mant / 1024);
  if (exp === 31) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + mant / 1024);
}

/** Decodes exactly one CBOR item covering all of `bytes`. Byte strings are returned as copies. */
export function decodeCbor(bytes: Uint8Array, field: string): CborValue {
  return decode(new Reader(bytes, field));
}

/**
 * Like {@link decodeCbor}, but byte strings are views into `bytes` (no allocation each): only
 * for bytes the caller owns and never changes. Internal.
 */
export function decodeCborViews(bytes: Uint8Array, field: string): CborValue {
  return decode(new Reader(bytes, field, false));
}

function decode(r: Reader): CborValue {
  const { buf: bytes, field } = r;
  if (bytes.length === 0) throw malformed('empty input', field);
  const v = decodeItem(r, 0);
  if (r.pos !== bytes.length) {
    throw malformed(`${bytes.length - r.pos} trailing bytes after the CBOR item`, field);
  }
  return v;
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return 'byte string';
  if (Array.isArray(v)) return 'array';
  if (v instanceof Map) return 'map';
  if (v instanceof CborTag) return `tag ${v.tag}`;
  if (typeof v === 'number' && !Number.isInteger(v)) return 'float';
  if (typeof v === 'number' || typeof v === 'bigint') return 'integer';
  if (typeof v === 'string') return 'text string';
  return typeof v;
}

// ---------------------------------------------------------------- encoder

class Writer {
  chunks: Uint8Array[] = [];
  size = 0;
  push(b: Uint8Array): void {
    this.chunks.push(b);
    this.size += b.length;
  }
  head(major: number, n: number | bigint): void {
    const m = major << 5;
    const v = BigInt(n);
    if (v < 24n) this.push(Uint8Array.of(m | Number(v)));
    else if (v < 0x100n) this.push(Uint8Array.of(m | 24, Number(v)));
    else if (v < 0x10000n) this.push(Uint8Array.of(m | 25, Number(v >> 8n), Number(v & 0xffn)));
    else if (v < 0x100000000n) {
      const b = new Uint8Array(5);
      b[0] = m | 26;
      new DataView(b.buffer).setUint32(1, Number(v));
      this.push(b);
    } else {
      const b = new Uint8Array(9);
      b[0] = m | 27;
      new DataView(b.buffer).setBigUint64(1, v);
      this.push(b);
    }
  }
  result(): Uint8Array {
    const out = new Uint8Array(this.size);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/** UTF-8 bytes; short ASCII (map keys, NSM variant names) without TextEncoder's call cost. */
function utf8(v: string): Uint8Array {
  if (v.length > 64) return textEncoder.encode(v);
  const b = new Uint8Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c > 0x7f) return textEncoder.encode(v);
    b[i] = c;
  }
  return b;
}

function encodeItem(w: Writer, v: CborValue): void {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw unencodable(`number ${v} (only safe integers)`);
    if (v >= 0) w.head(0, v);
    else w.head(1, -1 - v);
  } else if (typeof v === 'bigint') {
    if (v >= 0n) w.head(0, v);
    else w.head(1, -1n - v);
  } else if (typeof v === 'string') {
    const b = utf8(v);
    w.head(3, b.length);
    w.push(b);
  } else if (v instanceof Uint8Array) {
    w.head(2, v.length);
    w.push(v);
  } else if (v === false) w.push(Uint8Array.of(0xf4));
  else if (v === true) w.push(Uint8Array.of(0xf5));
  else if (v === null) w.push(Uint8Array.of(0xf6));
  else if (v === undefined) w.push(Uint8Array.of(0xf7));
  else if (Array.isArray(v)) {
    w.head(4, v.length);
    for (const x of v) encodeItem(w, x);
  } else if (v instanceof IndefiniteMap) {
    w.push(Uint8Array.of(0xbf));
    for (const [k, x] of v) {
      encodeItem(w, k);
      encodeItem(w, x);
    }
    w.push(Uint8Array.of(0xff));
  } else if (v instanceof Map) {
    w.head(5, v.size);
    for (const [k, x] of v) {
      encodeItem(w, k);
      encodeItem(w, x);
    }
  } else if (v instanceof CborTag) {
    w.head(6, v.tag);
    encodeItem(w, v.value);
  } else {
    throw unencodable(describe(v));
  }
}

function unencodable(what: string): AttestationError {
  return new AttestationError(
    'ERR_ATTESTATION_BAD_INPUT',
    `encodeCbor: cannot encode ${what}; pass integers, bigints, strings, Uint8Arrays, booleans, null, undefined, arrays, Maps or CborTags`,
    { field: 'value' },
  );
}

/** Encodes a value as CBOR (definite lengths unless an IndefiniteMap is used). */
export function encodeCbor(v: CborValue): Uint8Array {
  const w = new Writer();
  encodeItem(w, v);
  return w.result();
}
