import { ProxyError } from './errors.js';
import {
  type CanonicalAddress,
  type Cidr,
  canonicalAddress,
  cidrContains,
  formatIp,
  parseCidr,
  parseIp,
  parseNumericHost,
} from './ip.js';

/** Ports of a rule: any port, or a list of inclusive ranges. */
export type PortSet = 'any' | ReadonlyArray<readonly [number, number]>;

/** One rule in object form. `address` may be a host name, `*.` wildcard, IP or CIDR (AWS allowlist style). */
export interface PolicyRuleObject {
  address?: string;
  host?: string;
  cidr?: string;
  /** A port, a list, a range string `"1000-2000"`, `"443,8443"`, or `"*"`. Absent = any port. */
  port?: number | string | ReadonlyArray<number | string>;
  ports?: number | string | ReadonlyArray<number | string>;
}
/** A rule in string form: `kms.us-east-1.amazonaws.com:443`, `*.example.com:443,8443`, `10.0.0.0/8`, `[fd00::/8]:1-1024`, `*:443`. */
export type PolicyRule = string | PolicyRuleObject;

export interface PolicyConfig {
  allow?: ReadonlyArray<PolicyRule>;
  deny?: ReadonlyArray<PolicyRule>;
}

/**
 * Why a connection is refused: `ERR_PROXY_POLICY_DENIED` (a deny rule, or no allow rule), or
 * `ERR_PROXY_UNSPECIFIED_ADDRESS` (0.0.0.0/8 or `::`, in any spelling: never dialled, whatever the rules).
 */
export type PolicyRefusalCode = 'ERR_PROXY_POLICY_DENIED' | 'ERR_PROXY_UNSPECIFIED_ADDRESS';

/**
 * `reason` is safe to send back to the client: for a name it never holds an address the name
 * resolved to (that would carry DNS answers into a confined enclave); `address` and `rule` say
 * which resolved address and rule refused it, for the parent's log.
 */
export type PolicyDecision =
  | { allowed: true; rule: string }
  | {
      allowed: false;
      code: PolicyRefusalCode;
      reason: string;
      rule?: string;
      /** The resolved address that was refused (set only when a name was asked for). */
      address?: string;
    };

export interface PolicyOptions {
  /**
   * Let IP/CIDR allow rules also allow a NAME whose every address they contain. Then any name asked
   * for on their ports is resolved, so use it only where the operator, not the client, picks the
   * name: it is AWS vsock-proxy's allowlist semantics (`fromAwsAllowlist` sets it). Default false:
   * a name is resolved only when a name rule (the name, a matching `*.suffix`, or `*`) allows it.
   */
  addressRulesAllowNames?: boolean;
}

const DENIED = 'ERR_PROXY_POLICY_DENIED' as const;

interface CompiledRule {
  text: string;
  ports: PortSet;
  host?: { name: string; wildcard: boolean; any: boolean };
  cidr?: Cidr;
}

function badRule(rule: unknown, why: string): ProxyError {
  return new ProxyError(
    'ERR_PROXY_BAD_POLICY',
    `Policy rule ${JSON.stringify(rule)} is invalid: ${why}. Write HOST[:PORTS] (HOST = name, *.suffix, IP or CIDR; PORTS = 443 | 443,8443 | 1000-2000 | *).`,
    { details: { rule } },
  );
}

/** Lower case, no trailing dot, no brackets: the one form names are compared in. */
export function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.') && h.length > 1) h = h.slice(0, -1);
  return h;
}

function parsePorts(
  rule: unknown,
  spec: number | string | ReadonlyArray<number | string> | undefined,
): PortSet {
  if (spec === undefined) return 'any';
  const items = Array.isArray(spec) ? spec : typeof spec === 'string' ? spec.split(',') : [spec];
  const out: Array<readonly [number, number]> = [];
  for (const raw of items as ReadonlyArray<number | string>) {
    const item = typeof raw === 'number' ? String(raw) : raw.trim();
    if (item === '*' || item === 'any') return 'any';
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(item);
    if (!m) throw badRule(rule, `port "${item}" is not a number, range or *`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo < 1 || hi > 65535 || lo > hi) throw badRule(rule, `port "${item}" is outside 1-65535`);
    out.push([lo, hi]);
  }
  if (out.length === 0) throw badRule(rule, 'the port list is empty');
  return out;
}

function compileHost(rule: unknown, text: string): Pick<CompiledRule, 'host' | 'cidr'> {
  const t = normalizeHost(text);
  if (t === '') throw badRule(rule, 'the host is empty');
  if (t === '*') return { host: { name: '*', wildcard: false, any: true } };
  const addressPart = t.includes('/') ? t.slice(0, t.indexOf('/')) : t;
  const strict = parseIp(addressPart);
  const numeric = parseNumericHost(addressPart);
  if (
    !addressPart.includes(':') &&
    numeric &&
    (!strict || formatIp(strict) !== formatIp(numeric))
  ) {
    // `127.1`, `10`, `0x7f000001`, `010.0.0.1`: the system resolver reads these as numbers
    // (inet_aton), so as a name they would never match; with leading zeros they are ambiguous.
    throw badRule(
      rule,
      `"${text}" is a shorthand or leading-zero IPv4 form (the system reads it as ${formatIp(numeric)}); write the dotted quad without leading zeros`,
    );
  }
  if (t.includes('/') || strict) {
    const cidr = parseCidr(t);
    if (!cidr) throw badRule(rule, `"${text}" is not a valid IP address or CIDR`);
    return { cidr };
  }
  const wildcard = t.startsWith('*.');
  const name = wildcard ? t.slice(2) : t;
  if (!/^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$/.test(name) || name.includes('..')) {
    throw badRule(rule, `"${text}" is not a host name`);
  }
  return { host: { name, wildcard, any: false } };
}

function compileRule(rule: PolicyRule): CompiledRule {
  if (typeof rule === 'string') {
    const s = rule.trim();
    let hostText: string;
    let portText: string | undefined;
    if (s.startsWith('[')) {
      const close = s.indexOf(']');
      if (close < 0) throw badRule(rule, 'the "[" is not closed');
      hostText = s.slice(1, close);
      const after = s.slice(close + 1);
      if (after !== '' && !after.startsWith(':'))
        throw badRule(rule, 'expected ":PORTS" after "]"');
      portText = after === '' ? undefined : after.slice(1);
    } else if ((s.match(/:/g) ?? []).length > 1) {
      hostText = s; // bare IPv6 address or CIDR, any port
    } else {
      const c = s.lastIndexOf(':');
      hostText = c < 0 ? s : s.slice(0, c);
      portText = c < 0 ? undefined : s.slice(c + 1);
    }
    return { text: s, ports: parsePorts(rule, portText), ...compileHost(rule, hostText) };
  }
  if (!rule || typeof rule !== 'object')
    throw badRule(rule, 'expected a string or {address, port}');
  const hostText = rule.address ?? rule.host ?? rule.cidr;
  if (typeof hostText !== 'string') throw badRule(rule, 'one of address, host or cidr is required');
  const portSpec = rule.ports ?? rule.port;
  const ports = parsePorts(rule, portSpec);
  const text =
    portSpec === undefined
      ? hostText
      : `${hostText}:${Array.isArray(portSpec) ? portSpec.join(',') : String(portSpec)}`;
  return { text, ports, ...compileHost(rule, hostText) };
}

function portMatches(ports: PortSet, port: number): boolean {
  if (ports === 'any') return true;
  return ports.some(([lo, hi]) => port >= lo && port <= hi);
}

function hostMatches(rule: CompiledRule, name: string): boolean {
  const h = rule.host;
  if (!h) return false;
  if (h.any) return true;
  if (h.wildcard) return name.endsWith(`.${h.name}`);
  return name === h.name;
}

/** The address as the client asked for it; never used for an address a name resolved to. */
function describeLiteral(dest: CanonicalAddress): string {
  return dest.nat64 !== undefined ? `${dest.text} (NAT64 of ${formatIp(dest.ip)})` : dest.text;
}

/**
 * The refusal of an unspecified address (0.0.0.0/8 or `::`, also embedded), whatever any policy
 * says: Linux turns a connect() to it into one to this host's own loopback. Undefined otherwise.
 */
export function unspecifiedRefusal(
  name: string | undefined,
  dest: CanonicalAddress,
): PolicyDecision | undefined {
  if (!dest.unspecified) return undefined;
  const why = 'which Linux connects to this host itself; it is never dialled';
  return name === undefined
    ? {
        allowed: false,
        code: 'ERR_PROXY_UNSPECIFIED_ADDRESS',
        reason: `${describeLiteral(dest)} is an unspecified address (0.0.0.0/8 or ::), ${why}`,
      }
    : {
        allowed: false,
        code: 'ERR_PROXY_UNSPECIFIED_ADDRESS',
        reason: `${name} resolves to an unspecified address (0.0.0.0/8 or ::), ${why}`,
        address: dest.text,
      };
}

/**
 * An outbound allow/deny policy. Deny rules win. Names are compared lower case without the
 * trailing dot; addresses are compared in binary (IPv4-mapped IPv6 equals IPv4). A connection is
 * allowed only when EVERY address it would dial is allowed (by its name or its address) and none
 * is denied.
 */
export class Policy {
  readonly allowRules: ReadonlyArray<CompiledRule>;
  readonly denyRules: ReadonlyArray<CompiledRule>;

  readonly addressRulesAllowNames: boolean;

  constructor(config: PolicyConfig, options: PolicyOptions = {}) {
    this.allowRules = (config.allow ?? []).map(compileRule);
    this.denyRules = (config.deny ?? []).map(compileRule);
    this.addressRulesAllowNames = options.addressRulesAllowNames ?? false;
  }

  /** Reads AWS vsock-proxy's allowlist document (`allowlist: [{address, port}]`). */
  static fromAwsAllowlist(doc: { allowlist?: ReadonlyArray<PolicyRuleObject> | null }): Policy {
    // like AWS's: an entry's IP also allows the (operator-given) name that resolves to it
    return new Policy({ allow: doc.allowlist ?? [] }, { addressRulesAllowNames: true });
  }

  /** A policy allowing everything except `deny` (for trusted routes). */
  static allowAll(deny: ReadonlyArray<PolicyRule> = []): Policy {
    return new Policy({ allow: ['*'], deny });
  }

  /**
   * The check before DNS: a name already denied by a host rule, or a name no rule could allow
   * (no matching host rule and no address rule for that port), is refused without resolving it.
   */
  precheck(host: string, port: number): PolicyDecision | undefined {
    const name = normalizeHost(host);
    const ip = parseNumericHost(name);
    if (ip) return this.checkAddress(undefined, formatIp(ip), port);
    for (const r of this.denyRules) {
      // a name denied by a name rule (or by a deny `*`) is refused before any DNS
      if (r.host && hostMatches(r, name) && portMatches(r.ports, port)) {
        return {
          allowed: false,
          code: DENIED,
          reason: `host ${name} port ${port} matches deny rule "${r.text}"`,
          rule: r.text,
        };
      }
    }
    // Only a rule that could allow this NAME lets it reach the resolver: IP/CIDR rules for the port
    // would otherwise turn every name the client sends into a query (a channel out of the enclave).
    const couldAllow = this.allowRules.some(
      (r) =>
        portMatches(r.ports, port) &&
        (hostMatches(r, name) || (this.addressRulesAllowNames && r.cidr !== undefined)),
    );
    if (!couldAllow) {
      const addressOnly = this.allowRules.some((r) => r.cidr && portMatches(r.ports, port));
      return {
        allowed: false,
        code: DENIED,
        reason:
          `no allow rule matches ${name} port ${port}` +
          (addressOnly ? ' (IP and CIDR rules allow addresses asked for as IPs, not names)' : ''),
      };
    }
    return undefined;
  }

  /**
   * The check a DNS query for `host` gets (no port is known yet): refused when a deny name rule
   * covering every port matches it, or when no allow rule, on any port, could allow the name
   * (IP/CIDR rules allow names only with addressRulesAllowNames). Such a name is answered REFUSED
   * without reaching a resolver; undefined means the name may be resolved.
   */
  precheckName(host: string): PolicyDecision | undefined {
    const name = normalizeHost(host);
    if (name.length === 0 || parseNumericHost(name)) {
      return { allowed: false, code: DENIED, reason: `"${host}" is not a host name` };
    }
    for (const r of this.denyRules) {
      if (r.host && r.ports === 'any' && hostMatches(r, name)) {
        return {
          allowed: false,
          code: DENIED,
          reason: `host ${name} matches deny rule "${r.text}"`,
          rule: r.text,
        };
      }
    }
    const couldAllow = this.allowRules.some(
      (r) => hostMatches(r, name) || (this.addressRulesAllowNames && r.cidr !== undefined),
    );
    if (!couldAllow) {
      return {
        allowed: false,
        code: DENIED,
        reason: `no allow rule could allow ${name} on any port`,
      };
    }
    return undefined;
  }

  /**
   * Checks one address that would be dialled for `host` (undefined when an IP literal was asked).
   * The address is canonicalised first (canonicalAddress): an IPv4-mapped, IPv4-compatible or
   * NAT64 spelling is decided as the IPv4 address it embeds (a NAT64 address is also matched as
   * itself), and an unspecified address (0.0.0.0/8, `::`) is refused whatever the rules say.
   */
  checkAddress(host: string | undefined, address: string, port: number): PolicyDecision {
    const name = host === undefined ? undefined : normalizeHost(host);
    const dest = canonicalAddress(address);
    if (!dest) return { allowed: false, code: DENIED, reason: `"${address}" is not an IP address` };
    return this.checkCanonical(name, dest, port);
  }

  private checkCanonical(
    name: string | undefined,
    dest: CanonicalAddress,
    port: number,
  ): PolicyDecision {
    const unspecified = unspecifiedRefusal(name, dest);
    if (unspecified) return unspecified;
    const inCidr = (c: Cidr) =>
      cidrContains(c, dest.ip) || (dest.nat64 !== undefined && cidrContains(c, dest.nat64));
    // for a name, the reason says which rule matched the NAME, never which address it resolved to
    const asked = name === undefined ? describeLiteral(dest) : name;
    const resolved = name === undefined ? {} : { address: dest.text };
    for (const r of this.denyRules) {
      if (!portMatches(r.ports, port)) continue;
      if ((name !== undefined && hostMatches(r, name)) || r.host?.any) {
        return {
          allowed: false,
          code: DENIED,
          reason: `${asked} port ${port} matches deny rule "${r.text}"`,
          rule: r.text,
          ...resolved,
        };
      }
      if (r.cidr && inCidr(r.cidr)) {
        return {
          allowed: false,
          code: DENIED,
          reason:
            name === undefined
              ? `${asked} port ${port} matches deny rule "${r.text}"`
              : `${name} port ${port} resolves to an address a deny rule covers`,
          rule: r.text,
          ...resolved,
        };
      }
    }
    const cidrAllows = name === undefined || this.addressRulesAllowNames;
    for (const r of this.allowRules) {
      if (!portMatches(r.ports, port)) continue;
      if (
        (cidrAllows && r.cidr && inCidr(r.cidr)) ||
        r.host?.any ||
        (name !== undefined && hostMatches(r, name))
      ) {
        return { allowed: true, rule: r.text };
      }
    }
    return {
      allowed: false,
      code: DENIED,
      reason:
        name === undefined
          ? `no allow rule matches ${asked} port ${port}`
          : `${name} port ${port} resolves to an address no allow rule covers`,
      ...resolved,
    };
  }

  /** Checks a connection to `host:port` that resolved to `addresses`: every one must pass. */
  check(host: string, port: number, addresses: ReadonlyArray<string>): PolicyDecision {
    const pre = this.precheck(host, port);
    if (pre && !pre.allowed) return pre;
    const name = parseNumericHost(normalizeHost(host)) ? undefined : host;
    if (addresses.length === 0)
      return { allowed: false, code: DENIED, reason: `${host} resolved to no address` };
    let last: PolicyDecision = { allowed: false, code: DENIED, reason: 'no address' };
    for (const a of addresses) {
      last = this.checkAddress(name, a, port);
      if (!last.allowed) return last;
    }
    return last;
  }
}
