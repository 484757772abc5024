/**
 * Minimal DER (X.690) reader and writer: enough to read X.509 v3 certificates (validity, names,
 * basicConstraints, keyUsage) and to write the TBSCertificate of the test/simulator CA.
 * Internal: not exported from the package.
 */

export class DerError extends Error {}

export interface Tlv {
  /** Full identifier octet (class | constructed | number); only low-tag-number form is accepted. */
  tag: number;
  /** Offset of the first identifier byte. */
  start: number;
  /** Offset of the first content byte. */
  contentStart: number;
  /** Offset just after the content. */
  end: number;
}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Reads one TLV at `pos` that must end at or before `limit`. DER rules: definite, minimal length. */
export function readTlv(buf: Uint8Array, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw new DerError(`truncated element at offset ${pos}`);
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`high tag number form at offset ${pos}`);
  let len = buf[pos + 1]!;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new DerError(`indefinite length at offset ${pos}`);
    if (n > 3) throw new DerError(`length of ${n} bytes at offset ${pos}`);
    if (p + n > limit) throw new DerError(`truncated length at offset ${pos}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    if (len < 0x80 || buf[p] === 0) throw new DerError(`non-minimal length at offset ${pos}`);
    p += n;
  }
  if (p + len > limit) throw new DerError(`element at offset ${pos} runs past its container`);
  return { tag, start: pos, contentStart: p, end: p + len };
}

/** Reads the children of a constructed element. */
export function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  if ((parent.tag & 0x20) === 0)
    throw new DerError(`element at ${parent.start} is not constructed`);
  const out: Tlv[] = [];
  let p = parent.contentStart;
  while (p < parent.end) {
    const t = readTlv(buf, p, parent.end);
    out.push(t);
    p = t.end;
  }
  return out;
}

export function expectTag(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (!t) throw new DerError(`${what} is missing`);
  if (t.tag !== tag) {
    throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${t.tag.toString(16)}`);
  }
  return t;
}

export function content(buf: Uint8Array, t: Tlv): Uint8Array {
  return buf.subarray(t.contentStart, t.end);
}

export function whole(buf: Uint8Array, t: Tlv): Uint8Array {
  return buf.subarray(t.start, t.end);
}

export function decodeOid(bytes: Uint8Array): string {
  if (bytes.length === 0) throw new DerError('empty OID');
  const parts: number[] = [];
  let v = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (v === 0 && b === 0x80) throw new DerError('non-minimal OID arc');
    v = v * 128 + (b & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 128) throw new DerError('OID arc too large');
    if ((b & 0x80) === 0) {
      parts.push(v);
      v = 0;
    } else if (i === bytes.length - 1) throw new DerError('truncated OID');
  }
  const first = parts[0]!;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...parts.slice(1)].join('.');
}

function digits(s: string, from: number, n: number): number {
  const part = s.slice(from, from + n);
  if (!/^[0-9]+$/.test(part) || part.length !== n) throw new DerError(`bad time "${s}"`);
  return Number(part);
}

/** Parses UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) to ms since epoch. */
export function decodeTime(buf: Uint8Array, t: Tlv): number {
  const s = String.fromCharCode(...content(buf, t));
  let year: number;
  let rest: number;
  if (t.tag === TAG.UTC_TIME) {
    if (s.length !== 13 || !s.endsWith('Z')) throw new DerError(`bad UTCTime "${s}"`);
    const yy = digits(s, 0, 2);
    year = yy < 50 ? 2000 + yy : 1900 + yy;
    rest = 2;
  } else if (t.tag === TAG.GENERALIZED_TIME) {
    if (s.length !== 15 || !s.endsWith('Z')) throw new DerError(`bad GeneralizedTime "${s}"`);
    year = digits(s, 0, 4);
    rest = 4;
  } else throw new DerError(`expected a time, got tag 0x${t.tag.toString(16)}`);
  const month = digits(s, rest, 2);
  const day = digits(s, rest + 2, 2);
  const hour = digits(s, rest + 4, 2);
  const min = digits(s, rest + 6, 2);
  const sec = digits(s, rest + 8, 2);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 59) {
    throw new DerError(`bad time "${s}"`);
  }
  const ms = Date.UTC(year, month - 1, day, hour, min, sec);
  if (new Date(ms).getUTCDate() !== day) throw new DerError(`bad time "${s}"`);
  return ms;
}

/** Small non-negative INTEGER (pathLen and the like). */
export function decodeSmallUint(buf: Uint8Array, t: Tlv): number {
  const c = content(buf, t);
  if (c.length === 0 || c.length > 4 || c[0]! & 0x80) throw new DerError('bad small INTEGER');
  if (c.length > 1 && c[0] === 0 && (c[1]! & 0x80) === 0) throw new DerError('non-minimal INTEGER');
  let v = 0;
  for (const b of c) v = v * 256 + b;
  return v;
}

// ---------------------------------------------------------------- writer

function lengthBytes(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

export function der(tag: number, ...parts: Uint8Array[]): Uint8Array {
  const len = parts.reduce((a, p) => a + p.length, 0);
  const head = [tag, ...lengthBytes(len)];
  const out = new Uint8Array(head.length + len);
  out.set(head, 0);
  let o = head.length;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export const seq = (...parts: Uint8Array[]): Uint8Array => der(TAG.SEQUENCE, ...parts);

export function derOid(oid: string): Uint8Array {
  const arcs = oid.split('.').map(Number);
  const body: number[] = [];
  const push = (v: number) => {
    const tmp = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128))
      tmp.unshift((x & 0x7f) | 0x80);
    body.push(...tmp);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  return der(TAG.OID, Uint8Array.from(body));
}

/** INTEGER from unsigned big-endian bytes (adds the leading zero, strips redundant ones). */
export function derUint(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const b = bytes.subarray(i);
  return b[0]! & 0x80 ? der(TAG.INTEGER, Uint8Array.of(0), b) : der(TAG.INTEGER, b);
}

export function derSmallUint(n: number): Uint8Array {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return derUint(Uint8Array.from(bytes.length ? bytes : [0]));
}

export function derTime(ms: number): Uint8Array {
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const body = `${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  const y = d.getUTCFullYear();
  if (y >= 1950 && y < 2050) {
    return der(TAG.UTC_TIME, new TextEncoder().encode(`${p(y % 100)}${body}`));
  }
  return der(TAG.GENERALIZED_TIME, new TextEncoder().encode(`${p(y, 4)}${body}`));
}

export function derUtf8(s: string): Uint8Array {
  return der(TAG.UTF8_STRING, new TextEncoder().encode(s));
}

export function derBitString(bytes: Uint8Array, unusedBits = 0): Uint8Array {
  return der(TAG.BIT_STRING, Uint8Array.of(unusedBits), bytes);
}
