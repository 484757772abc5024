// Minimal BER reader (definite and indefinite lengths) and writer for the CMS structures
// this package handles. Internal: errors are KmsError ERR_KMS_CMS_MALFORMED / _TRUNCATED.
import { KmsError } from './errors.js';

export const CLASS_UNIVERSAL = 0;
export const CLASS_CONTEXT = 2;

export interface BerNode {
  /** 0 universal, 1 application, 2 context-specific, 3 private */
  cls: number;
  constructed: boolean;
  tag: number;
  /** offset of the first content byte */
  start: number;
  /** offset just past the content (before the end-of-contents octets when indefinite) */
  end: number;
  indefinite: boolean;
  children: BerNode[];
  /** the whole input (content = bytes.subarray(start, end)) */
  bytes: Uint8Array;
}

const MAX_DEPTH = 32;

function truncated(what: string, at: number): KmsError {
  return new KmsError(
    'ERR_KMS_CMS_TRUNCATED',
    `CMS input ends inside ${what} at byte ${at}: pass the complete CiphertextForRecipient bytes (base64-decoded).`,
  );
}

export function malformed(message: string): KmsError {
  return new KmsError(
    'ERR_KMS_CMS_MALFORMED',
    `${message}; expected CMS EnvelopedData as AWS KMS returns in CiphertextForRecipient.`,
  );
}

/** Parses one BER element starting at `offset`; returns it and the offset after it. */
function parseAt(
  bytes: Uint8Array,
  offset: number,
  limit: number,
  depth: number,
): [BerNode, number] {
  if (depth > MAX_DEPTH) throw malformed(`BER nesting deeper than ${MAX_DEPTH} at byte ${offset}`);
  let p = offset;
  if (p >= limit) throw truncated('a tag', p);
  const first = bytes[p++] as number;
  const cls = first >> 6;
  const constructed = (first & 0x20) !== 0;
  let tag = first & 0x1f;
  if (tag === 0x1f) {
    tag = 0;
    for (let i = 0; ; i++) {
      if (p >= limit) throw truncated('a long tag', p);
      if (i >= 4) throw malformed(`tag number too large at byte ${offset}`);
      const b = bytes[p++] as number;
      tag = tag * 128 + (b & 0x7f);
      if ((b & 0x80) === 0) break;
    }
  }
  if (p >= limit) throw truncated('a length', p);
  const lb = bytes[p++] as number;
  const node: BerNode = {
    cls,
    constructed,
    tag,
    start: 0,
    end: 0,
    indefinite: false,
    children: [],
    bytes,
  };
  if (lb === 0x80) {
    if (!constructed) throw malformed(`primitive element with indefinite length at byte ${offset}`);
    node.indefinite = true;
    node.start = p;
    for (;;) {
      if (p + 2 > limit)
        throw truncated('an indefinite-length element (no end-of-contents)', limit);
      if (bytes[p] === 0 && bytes[p + 1] === 0) {
        node.end = p;
        return [node, p + 2];
      }
      const [child, next] = parseAt(bytes, p, limit, depth + 1);
      node.children.push(child);
      p = next;
    }
  }
  let len: number;
  if (lb < 0x80) {
    len = lb;
  } else {
    const n = lb & 0x7f;
    if (n > 4) throw malformed(`length of ${n} bytes at byte ${offset} is not supported`);
    if (p + n > limit) throw truncated('a long length', p);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (bytes[p++] as number);
  }
  if (p + len > limit) throw truncated(`an element declaring ${len} bytes`, limit);
  node.start = p;
  node.end = p + len;
  if (constructed) {
    let c = p;
    while (c < node.end) {
      const [child, next] = parseAt(bytes, c, node.end, depth + 1);
      if (child.cls === 0 && child.tag === 0 && !child.constructed && child.end === child.start) {
        throw malformed(`end-of-contents inside a definite-length element at byte ${c}`);
      }
      node.children.push(child);
      c = next;
    }
  }
  return [node, node.end];
}

/** Parses a whole buffer holding exactly one BER element (trailing zero bytes tolerated). */
export function parseBer(bytes: Uint8Array): BerNode {
  if (bytes.length === 0) throw truncated('an empty buffer', 0);
  const [node, next] = parseAt(bytes, 0, bytes.length, 0);
  for (let i = next; i < bytes.length; i++) {
    if (bytes[i] !== 0)
      throw malformed(`${bytes.length - next} trailing bytes after the outer element`);
  }
  return node;
}

export function content(node: BerNode): Uint8Array {
  return node.bytes.subarray(node.start, node.end);
}

export function isUniversal(node: BerNode | undefined, tag: number): node is BerNode {
  return node !== undefined && node.cls === CLASS_UNIVERSAL && node.tag === tag;
}

export function isContext(node: BerNode | undefined, tag: number): node is BerNode {
  return node !== undefined && node.cls === CLASS_CONTEXT && node.tag === tag;
}

/** Octets of an OCTET STRING (primitive, or BER constructed of nested OCTET STRING segments). */
export function octets(node: BerNode, what: string, depth = 0): Buffer {
  if (!node.constructed) return Buffer.from(content(node));
  if (depth > 8) throw malformed(`${what}: constructed OCTET STRING nested too deeply`);
  const parts: Buffer[] = [];
  for (const child of node.children) {
    if (!isUniversal(child, 4)) {
      throw malformed(`${what}: a constructed OCTET STRING segment is not an OCTET STRING`);
    }
    parts.push(octets(child, what, depth + 1));
  }
  return Buffer.concat(parts);
}

export function oidToString(node: BerNode, what: string): string {
  if (!isUniversal(node, 6) || node.constructed)
    throw malformed(`${what} is not an OBJECT IDENTIFIER`);
  const b = content(node);
  if (b.length === 0 || b.length > 64)
    throw malformed(`${what}: OBJECT IDENTIFIER of ${b.length} bytes`);
  const arcs: number[] = [];
  let v = 0;
  for (let i = 0; i < b.length; i++) {
    const byte = b[i] as number;
    v = v * 128 + (byte & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 256)
      throw malformed(`${what}: OBJECT IDENTIFIER arc too large`);
    if ((byte & 0x80) === 0) {
      if (arcs.length === 0) {
        const a = v < 80 ? Math.floor(v / 40) : 2;
        arcs.push(a, v - a * 40);
      } else arcs.push(v);
      v = 0;
    } else if (i === b.length - 1) {
      throw malformed(`${what}: OBJECT IDENTIFIER ends inside an arc`);
    }
  }
  return arcs.join('.');
}

export function smallInteger(node: BerNode, what: string): number {
  if (!isUniversal(node, 2) || node.constructed) throw malformed(`${what} is not an INTEGER`);
  const b = content(node);
  if (b.length === 0 || b.length > 4) throw malformed(`${what}: INTEGER of ${b.length} bytes`);
  let v = 0;
  for (const x of b) v = v * 256 + x;
  if ((b[0] as number) & 0x80) v -= 2 ** (8 * b.length);
  return v;
}

// ---- writer -------------------------------------------------------------------------------

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const out: number[] = [];
  let v = n;
  while (v > 0) {
    out.unshift(v & 0xff);
    v = Math.floor(v / 256);
  }
  return Buffer.from([0x80 | out.length, ...out]);
}

/** Definite-length element with a one-byte identifier. */
export function tlv(identifier: number, ...body: Uint8Array[]): Buffer {
  const b = Buffer.concat(body);
  return Buffer.concat([Buffer.from([identifier]), lengthBytes(b.length), b]);
}

/** Indefinite-length constructed element (identifier must have the constructed bit). */
export function indefinite(identifier: number, ...body: Uint8Array[]): Buffer {
  return Buffer.concat([Buffer.from([identifier, 0x80]), ...body, Buffer.from([0, 0])]);
}

export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const out: number[] = [];
  const push = (v: number): void => {
    const tmp = [v & 0x7f];
    let x = Math.floor(v / 128);
    while (x > 0) {
      tmp.unshift((x & 0x7f) | 0x80);
      x = Math.floor(x / 128);
    }
    out.push(...tmp);
  };
  push((arcs[0] as number) * 40 + (arcs[1] as number));
  for (const a of arcs.slice(2)) push(a);
  return tlv(0x06, Buffer.from(out));
}
