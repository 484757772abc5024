// The small part of the DNS wire format (RFC 1035) the enclave DNS stub and the parent DNS service
// need: one question in, A/AAAA answers out. Names are read with compression pointers (bounded),
// answers point back at the question (0xC00C).
import { formatIp, parseIp } from './ip.js';

export const DNS_TYPE_A = 1;
export const DNS_TYPE_AAAA = 28;
export const DNS_CLASS_IN = 1;

/** Response codes used here. */
export const DnsRcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;
export type DnsRcodeValue = (typeof DnsRcode)[keyof typeof DnsRcode];

export interface DnsQuestion {
  id: number;
  /** Lower case, without the trailing dot. */
  name: string;
  type: number;
  qclass: number;
  /** Recursion desired (copied to the answer). */
  rd: boolean;
  /** The question section as sent (copied to the answer). */
  questionBytes: Buffer;
  /** The header's opcode (only 0, QUERY, is answered). */
  opcode: number;
}

export interface DnsRecord {
  address: string;
  family: 4 | 6;
}

export interface DnsAnswer {
  rcode: number;
  /** For NOERROR: the A or AAAA records matching the question's type. */
  records: DnsRecord[];
  ttlSeconds: number;
}

/** Reads a possibly compressed name at `offset`; returns it and the offset after it in place. */
function readName(msg: Buffer, offset: number): { name: string; end: number } | undefined {
  const labels: string[] = [];
  let i = offset;
  let end = -1;
  for (let jumps = 0; jumps < 32; ) {
    if (i >= msg.length) return undefined;
    const len = msg[i] as number;
    if (len === 0) {
      if (end < 0) end = i + 1;
      const name = labels.join('.');
      return name.length > 253 ? undefined : { name, end };
    }
    if ((len & 0xc0) === 0xc0) {
      if (i + 1 >= msg.length) return undefined;
      if (end < 0) end = i + 2;
      i = ((len & 0x3f) << 8) | (msg[i + 1] as number);
      jumps++;
      continue;
    }
    if ((len & 0xc0) !== 0 || i + 1 + len > msg.length) return undefined;
    labels.push(msg.subarray(i + 1, i + 1 + len).toString('latin1'));
    i += 1 + len;
  }
  return undefined;
}

/** Parses a query with exactly one question; undefined when it is not one (answer FORMERR or drop). */
export function parseDnsQuery(msg: Buffer): DnsQuestion | undefined {
  if (msg.length < 12) return undefined;
  const flags = msg.readUInt16BE(2);
  if (flags & 0x8000) return undefined; // a response, not a query
  if (msg.readUInt16BE(4) !== 1) return undefined;
  const n = readName(msg, 12);
  if (!n || n.end + 4 > msg.length) return undefined;
  return {
    id: msg.readUInt16BE(0),
    name: n.name.toLowerCase().replace(/\.$/, ''),
    type: msg.readUInt16BE(n.end),
    qclass: msg.readUInt16BE(n.end + 2),
    rd: (flags & 0x0100) !== 0,
    opcode: (flags >> 11) & 0x0f,
    questionBytes: Buffer.from(msg.subarray(12, n.end + 4)),
  };
}

/** The id of a message that may not parse (to answer FORMERR), or undefined. */
export function dnsMessageId(msg: Buffer): number | undefined {
  return msg.length >= 2 ? msg.readUInt16BE(0) : undefined;
}

function addressBytes(r: DnsRecord): Buffer | undefined {
  const ip = parseIp(r.address);
  if (!ip || ip.family !== r.family) return undefined;
  return Buffer.from(r.family === 4 ? ip.bytes.subarray(12) : ip.bytes);
}

/** Builds the answer to `q`: header (QR, RD copied, RA), the question, and A/AAAA records. */
export function buildDnsResponse(q: DnsQuestion, answer: DnsAnswer): Buffer {
  const wanted = answer.rcode === DnsRcode.NOERROR ? answer.records : [];
  const rrs: Buffer[] = [];
  const ttl = Math.max(0, Math.min(0x7fffffff, Math.floor(answer.ttlSeconds)));
  for (const r of wanted) {
    const type = r.family === 4 ? DNS_TYPE_A : DNS_TYPE_AAAA;
    if (type !== q.type) continue;
    const data = addressBytes(r);
    if (!data) continue;
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(type, 2);
    rr.writeUInt16BE(DNS_CLASS_IN, 4);
    rr.writeUInt32BE(ttl, 6);
    rr.writeUInt16BE(data.length, 10);
    rrs.push(rr, data);
  }
  const head = Buffer.alloc(12);
  head.writeUInt16BE(q.id, 0);
  head.writeUInt16BE(0x8000 | (q.rd ? 0x0100 : 0) | 0x0080 | (answer.rcode & 0x0f), 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(rrs.length / 2, 6);
  return Buffer.concat([head, q.questionBytes, ...rrs]);
}

/** A bare error answer (FORMERR for a message without a usable question). */
export function buildDnsError(id: number, rcode: number): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x8000 | 0x0080 | (rcode & 0x0f), 2);
  return head;
}

/** Reads the answer section of a response (A/AAAA only) with the smallest TTL; for caches. */
export function parseDnsResponse(
  msg: Buffer,
): { id: number; rcode: number; records: DnsRecord[]; minTtl?: number } | undefined {
  if (msg.length < 12) return undefined;
  const flags = msg.readUInt16BE(2);
  if (!(flags & 0x8000)) return undefined;
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  let off = 12;
  for (let i = 0; i < qd; i++) {
    const n = readName(msg, off);
    if (!n) return undefined;
    off = n.end + 4;
  }
  const records: DnsRecord[] = [];
  let minTtl: number | undefined;
  for (let i = 0; i < an; i++) {
    const n = readName(msg, off);
    if (!n || n.end + 10 > msg.length) return undefined;
    const type = msg.readUInt16BE(n.end);
    const ttl = msg.readUInt32BE(n.end + 4);
    const len = msg.readUInt16BE(n.end + 8);
    const data = msg.subarray(n.end + 10, n.end + 10 + len);
    if (data.length !== len) return undefined;
    minTtl = minTtl === undefined ? ttl : Math.min(minTtl, ttl);
    if (type === DNS_TYPE_A && len === 4) {
      records.push({ family: 4, address: [...data].join('.') });
    } else if (type === DNS_TYPE_AAAA && len === 16) {
      records.push({ family: 6, address: formatIp({ family: 6, bytes: Uint8Array.from(data) }) });
    }
    off = n.end + 10 + len;
  }
  return {
    id: msg.readUInt16BE(0),
    rcode: flags & 0x0f,
    records,
    ...(minTtl === undefined ? {} : { minTtl }),
  };
}
