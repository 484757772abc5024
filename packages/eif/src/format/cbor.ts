// The small, strict CBOR subset the EIF signature section uses (serde_cbor's output for
// Vec<PcrSignature>, PcrInfo and COSE_Sign1): unsigned/negative integers, byte and text strings,
// arrays, maps, tag 18, definite lengths only. Maps keep their encoded order.

export type CborValue =
  | number
  | Uint8Array
  | string
  | boolean
  | null
  | CborValue[]
  | CborMap
  | CborTagged;

/** A CBOR map as ordered [key, value] pairs (serde_cbor writes struct fields in order). */
export class CborMap {
  constructor(readonly entries: [CborValue, CborValue][]) {}
  get(key: CborValue): CborValue | undefined {
    for (const [k, v] of this.entries) if (k === key) return v;
    return undefined;
  }
}

export class CborTagged {
  constructor(
    readonly tag: number,
    readonly value: CborValue,
  ) {}
}

export class CborError extends Error {}

function head(major: number, n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new CborError(`cannot encode length ${n}`);
  const m = major << 5;
  if (n < 24) return Buffer.from([m | n]);
  if (n < 0x100) return Buffer.from([m | 24, n]);
  if (n < 0x10000) {
    const b = Buffer.alloc(3);
    b[0] = m | 25;
    b.writeUInt16BE(n, 1);
    return b;
  }
  if (n < 0x100000000) {
    const b = Buffer.alloc(5);
    b[0] = m | 26;
    b.writeUInt32BE(n, 1);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = m | 27;
  b.writeBigUInt64BE(BigInt(n), 1);
  return b;
}

function enc(v: CborValue, out: Buffer[]): void {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new CborError(`only integers are supported, got ${v}`);
    out.push(v >= 0 ? head(0, v) : head(1, -1 - v));
  } else if (v instanceof Uint8Array) {
    out.push(head(2, v.length), Buffer.from(v));
  } else if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    out.push(head(3, b.length), b);
  } else if (Array.isArray(v)) {
    out.push(head(4, v.length));
    for (const x of v) enc(x, out);
  } else if (v instanceof CborMap) {
    out.push(head(5, v.entries.length));
    for (const [k, x] of v.entries) {
      enc(k, out);
      enc(x, out);
    }
  } else if (v instanceof CborTagged) {
    out.push(head(6, v.tag));
    enc(v.value, out);
  } else if (v === false) out.push(Buffer.from([0xf4]));
  else if (v === true) out.push(Buffer.from([0xf5]));
  else if (v === null) out.push(Buffer.from([0xf6]));
  else throw new CborError('unsupported value');
}

export function encodeCbor(v: CborValue): Buffer {
  const out: Buffer[] = [];
  enc(v, out);
  return Buffer.concat(out);
}

const MAX_DEPTH = 16;

/** Decodes exactly one item spanning all of `bytes`; throws {@link CborError} otherwise. */
export function decodeCbor(bytes: Uint8Array): CborValue {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const need = (n: number): void => {
    if (pos + n > buf.length) throw new CborError(`truncated at byte ${pos}`);
  };
  const arg = (info: number): number => {
    if (info < 24) return info;
    if (info === 24) {
      need(1);
      return buf[pos++]!;
    }
    if (info === 25) {
      need(2);
      const v = buf.readUInt16BE(pos);
      pos += 2;
      return v;
    }
    if (info === 26) {
      need(4);
      const v = buf.readUInt32BE(pos);
      pos += 4;
      return v;
    }
    if (info === 27) {
      need(8);
      const v = buf.readBigUInt64BE(pos);
      pos += 8;
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CborError(`integer too large at ${pos}`);
      return Number(v);
    }
    throw new CborError(`indefinite or reserved length (info ${info}) at byte ${pos - 1}`);
  };
  const item = (depth: number): CborValue => {
    if (depth > MAX_DEPTH) throw new CborError('nesting too deep');
    need(1);
    const ib = buf[pos++]!;
    const major = ib >> 5;
    const info = ib & 0x1f;
    switch (major) {
      case 0:
        return arg(info);
      case 1:
        return -1 - arg(info);
      case 2: {
        const n = arg(info);
        need(n);
        const v = new Uint8Array(buf.subarray(pos, pos + n));
        pos += n;
        return v;
      }
      case 3: {
        const n = arg(info);
        need(n);
        const s = buf.subarray(pos, pos + n);
        pos += n;
        try {
          return new TextDecoder('utf-8', { fatal: true }).decode(s);
        } catch (err) {
          throw new CborError(`invalid UTF-8 text at byte ${pos - n}: ${(err as Error).message}`);
        }
      }
      case 4: {
        const n = arg(info);
        if (n > buf.length - pos) throw new CborError(`array length ${n} exceeds the input`);
        const a: CborValue[] = [];
        for (let i = 0; i < n; i++) a.push(item(depth + 1));
        return a;
      }
      case 5: {
        const n = arg(info);
        if (n * 2 > buf.length - pos) throw new CborError(`map length ${n} exceeds the input`);
        const entries: [CborValue, CborValue][] = [];
        for (let i = 0; i < n; i++) {
          const k = item(depth + 1);
          if (typeof k !== 'number' && typeof k !== 'string')
            throw new CborError('map keys must be integers or text');
          if (entries.some(([e]) => e === k)) throw new CborError(`duplicate map key ${String(k)}`);
          entries.push([k, item(depth + 1)]);
        }
        return new CborMap(entries);
      }
      case 6: {
        const tag = arg(info);
        return new CborTagged(tag, item(depth + 1));
      }
      default: {
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        throw new CborError(`unsupported simple/float value 0x${ib.toString(16)} at ${pos - 1}`);
      }
    }
  };
  const v = item(0);
  if (pos !== buf.length) throw new CborError(`${buf.length - pos} trailing bytes after the item`);
  return v;
}

/** serde_cbor's encoding of a Vec<u8> without serde_bytes: an array of small integers. */
export function byteArray(bytes: Uint8Array): CborValue[] {
  return Array.from(bytes);
}

/** The inverse of {@link byteArray}; undefined when `v` is not an array of 0..255 integers. */
export function fromByteArray(v: CborValue | undefined): Buffer | undefined {
  if (!Array.isArray(v)) return undefined;
  const out = Buffer.alloc(v.length);
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 255) return undefined;
    out[i] = x;
  }
  return out;
}
