import { isIP } from 'node:net';

/**
 * IP address helpers. Every address is normalised to 16 bytes (IPv4 as ::ffff:a.b.c.d), so an
 * IPv4-mapped IPv6 literal and the plain IPv4 form compare equal.
 */

export interface ParsedIp {
  /** 4 for IPv4 and IPv4-mapped IPv6, else 6. */
  family: 4 | 6;
  bytes: Uint8Array; // 16 bytes
}

function parseV4(s: string): number[] | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

function parseV6(input: string): number[] | undefined {
  let s = input;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.', lastColon)) {
    const v4 = parseV4(s.slice(lastColon + 1));
    if (!v4) return undefined;
    tail = v4;
    s = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const toGroups = (h: string): number[] | undefined => {
    if (h === '') return [];
    const gs = h.split(':');
    const out: number[] = [];
    for (const g of gs) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const head = toGroups(halves[0] ?? '');
  const rest = halves.length === 2 ? toGroups(halves[1] ?? '') : [];
  if (!head || !rest) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const fill = 8 - head.length - rest.length;
    if (fill < 1) return undefined;
    groups = [...head, ...new Array<number>(fill).fill(0), ...rest];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  const bytes: number[] = [];
  for (const g of groups) bytes.push(g >> 8, g & 0xff);
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

/** Parses an IPv4 or IPv6 literal (brackets allowed). Returns undefined when it is not one. */
export function parseIp(input: string): ParsedIp | undefined {
  let s = input.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const v4 = parseV4(s);
  if (v4) {
    const bytes = new Uint8Array(16);
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    bytes.set(v4, 12);
    return { family: 4, bytes };
  }
  if (!s.includes(':')) return undefined;
  const v6 = parseV6(s);
  if (!v6) return undefined;
  const bytes = Uint8Array.from(v6);
  const mapped =
    bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return { family: mapped ? 4 : 6, bytes };
}

/**
 * inet_aton(3) as glibc's getaddrinfo applies it to a host before any DNS: 1 to 4 parts split by
 * `.`, each decimal, octal (leading `0`) or hex (`0x`), the last part filling the remaining bytes
 * (`127.1`, `0x7f000001`, `2130706433`, `0`, `0.0`, `00000000` ...). Nothing else: a trailing dot,
 * an empty part, a sign, space or an out-of-range part makes it a name (as glibc does).
 */
function parseInetAton(s: string): number[] | undefined {
  if (s.length === 0 || s.length > 255 || !/^[0-9][0-9a-fA-FxX.]*$/.test(s)) return undefined;
  const parts = s.split('.');
  if (parts.length > 4) return undefined;
  const values: bigint[] = [];
  for (const p of parts) {
    let v: bigint;
    if (/^0[xX][0-9a-fA-F]+$/.test(p)) v = BigInt(`0x${p.slice(2)}`);
    else if (/^0[0-7]*$/.test(p)) v = p.length === 1 ? 0n : BigInt(`0o${p.slice(1)}`);
    else if (/^[1-9][0-9]*$/.test(p)) v = BigInt(p);
    else return undefined;
    if (v > 0xffffffffn) return undefined;
    values.push(v);
  }
  const last = values.pop() as bigint;
  if (values.some((v) => v > 0xffn)) return undefined;
  const lastBytes = 4 - values.length;
  if (last >= 1n << BigInt(8 * lastBytes)) return undefined;
  const out = values.map(Number);
  for (let i = lastBytes - 1; i >= 0; i--) out.push(Number((last >> BigInt(8 * i)) & 0xffn));
  return out;
}

/**
 * Parses a requested host the way the system resolver would take it as a number, before any DNS:
 * every form parseIp accepts plus the inet_aton shorthands (`0`, `0x0`, `127.1`, `2130706433`,
 * `0177.0.0.1` ...). Use it to classify what a client asked for; policy rules use the strict parseIp.
 */
export function parseNumericHost(input: string): ParsedIp | undefined {
  const s = input.trim();
  // IPv6 (brackets allowed) as parseIp reads it; IPv4 as inet_aton does (`010.0.0.1` is 8.0.0.1)
  if (s.includes(':') || s.startsWith('[')) return parseIp(s);
  const v4 = parseInetAton(s);
  if (!v4) return undefined;
  const bytes = new Uint8Array(16);
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  bytes.set(v4, 12);
  return { family: 4, bytes };
}

/**
 * An address in the one form the policy decides on and the dialler connects to. IPv4-mapped
 * (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated by RFC 4291, all but `::` and
 * `::1`) and NAT64 (`64:ff9b::/96`, RFC 6052) spellings are mapped to the IPv4 address they embed.
 */
export interface CanonicalAddress {
  /** The address the policy decides on (the embedded IPv4 for the spellings above). */
  ip: ParsedIp;
  /** The exact text handed to connect(): dotted quad or compressed IPv6, never a name. */
  text: string;
  family: 4 | 6;
  /** For a NAT64 address: the IPv6 address dialled (text), whose embedded IPv4 is `ip`. */
  nat64?: ParsedIp;
  /**
   * 0.0.0.0/8 or `::` (also when embedded): Linux turns a connect() to it into one to this host's
   * own loopback, so it is never dialled.
   */
  unspecified: boolean;
}

function v4Of(bytes: Uint8Array): ParsedIp {
  const b = new Uint8Array(16);
  b[10] = 0xff;
  b[11] = 0xff;
  b.set(bytes.subarray(12, 16), 12);
  return { family: 4, bytes: b };
}

/** Canonicalises an address (any spelling parseNumericHost accepts); undefined when it is not one. */
export function canonicalAddress(input: string | ParsedIp): CanonicalAddress | undefined {
  const parsed = typeof input === 'string' ? parseNumericHost(input) : input;
  if (!parsed) return undefined;
  const b = parsed.bytes;
  const zeros = (from: number, to: number) => b.subarray(from, to).every((x) => x === 0);
  const v4 = (ip: ParsedIp, nat64?: ParsedIp): CanonicalAddress => ({
    ip,
    text: nat64 ? formatIp(nat64) : formatIp(ip),
    family: nat64 ? 6 : 4,
    ...(nat64 ? { nat64 } : {}),
    unspecified: ip.bytes[12] === 0,
  });
  if (parsed.family === 4) return v4(v4Of(b));
  if (zeros(0, 12) && !(zeros(12, 15) && (b[15] ?? 0) <= 1)) return v4(v4Of(b)); // ::a.b.c.d
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) {
    return v4(v4Of(b), { family: 6, bytes: b.slice() }); // 64:ff9b::a.b.c.d
  }
  return { ip: parsed, text: formatIp(parsed), family: 6, unspecified: zeros(0, 16) };
}

/** True for a literal IPv4/IPv6 address (what skips DNS). */
export function isIpLiteral(s: string): boolean {
  return parseIp(s) !== undefined || isIP(s) !== 0;
}

/** Canonical text form: dotted quad for IPv4 (and mapped IPv6), RFC 5952-ish compressed IPv6. */
export function formatIp(ip: ParsedIp): string {
  const b = ip.bytes;
  if (ip.family === 4) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] ?? 0) << 8) | (b[i + 1] ?? 0));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export interface Cidr {
  family: 4 | 6;
  bytes: Uint8Array; // 16 bytes, host bits zeroed
  /** Prefix length over the 128-bit form (IPv4 /n is stored as /(96+n)). */
  prefix: number;
  text: string;
}

/** Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128). */
export function parseCidr(input: string): Cidr | undefined {
  const slash = input.indexOf('/');
  const addr = slash >= 0 ? input.slice(0, slash) : input;
  const ip = parseIp(addr);
  if (!ip) return undefined;
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = input.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return undefined;
    prefix = Number(p);
    // An IPv4-mapped IPv6 CIDR (::ffff:10.0.0.0/104) is given over 128 bits.
    if (ip.family === 4 && addr.includes(':')) {
      if (prefix < 96 || prefix > 128) return undefined;
      prefix -= 96;
    }
    if (prefix > max) return undefined;
  }
  const full = ip.family === 4 ? prefix + 96 : prefix;
  const bytes = ip.bytes.slice();
  for (let bit = full; bit < 128; bit++) {
    const i = bit >> 3;
    bytes[i] = (bytes[i] ?? 0) & ~(0x80 >> (bit & 7));
  }
  return {
    family: ip.family,
    bytes,
    prefix: full,
    text: `${formatIp({ family: ip.family, bytes })}/${prefix}`,
  };
}

export function cidrContains(cidr: Cidr, ip: ParsedIp): boolean {
  for (let bit = 0; bit < cidr.prefix; bit += 8) {
    const i = bit >> 3;
    const remaining = cidr.prefix - bit;
    const mask = remaining >= 8 ? 0xff : (0xff << (8 - remaining)) & 0xff;
    if (((ip.bytes[i] ?? 0) & mask) !== (cidr.bytes[i] ?? 0)) return false;
  }
  return true;
}
