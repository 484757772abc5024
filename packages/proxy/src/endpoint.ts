import { ProxyError } from './errors.js';
import { formatIp, parseIp } from './ip.js';
import { strictPort } from './port.js';

export interface TcpEndpoint {
  kind: 'tcp';
  /** Host name or IP literal (IPv6 without brackets). */
  host: string;
  port: number;
}
export interface VsockEndpoint {
  kind: 'vsock';
  /** Context ID; 0xFFFFFFFF (`any`) when listening on every CID. */
  cid: number;
  port: number;
}
export interface UnixEndpoint {
  kind: 'unix';
  path: string;
}
export type Endpoint = TcpEndpoint | VsockEndpoint | UnixEndpoint;

export const VMADDR_CID_ANY = 0xffffffff;
const CID_NAMES: Record<string, number> = { any: VMADDR_CID_ANY, local: 1, host: 2, parent: 3 };

function bad(input: string, why: string): ProxyError {
  return new ProxyError(
    'ERR_PROXY_BAD_ENDPOINT',
    `Endpoint "${input}" is invalid: ${why}. Use tcp:HOST:PORT (IPv6 as tcp:[::1]:443), vsock:CID:PORT or unix:/path.`,
    { address: input },
  );
}

function parsePort(input: string, s: string, max: number, what: string): number {
  if (!/^\d+$/.test(s)) throw bad(input, `${what} "${s}" is not a decimal number`);
  const n = strictPort(s, max);
  if (n === undefined) throw bad(input, `${what} ${s} is out of range 0-${max}`);
  return n;
}

/**
 * Parses `tcp:host:port`, `tcp:[v6]:port`, `vsock:cid:port` (cid may be any|local|host|parent)
 * and `unix:/path`. Throws ProxyError ERR_PROXY_BAD_ENDPOINT naming the input.
 */
export function parseEndpoint(input: string): Endpoint {
  if (typeof input !== 'string') throw bad(String(input), 'not a string');
  const s = input.trim();
  const colon = s.indexOf(':');
  if (colon < 0) throw bad(input, 'the scheme (tcp:, vsock: or unix:) is missing');
  const scheme = s.slice(0, colon).toLowerCase();
  const rest = s.slice(colon + 1);
  if (scheme === 'unix') {
    if (rest.length === 0) throw bad(input, 'the socket path is empty');
    if (rest.includes('\0')) throw bad(input, 'the socket path contains a NUL byte');
    return { kind: 'unix', path: rest };
  }
  if (scheme === 'tcp') {
    let host: string;
    let portText: string;
    if (rest.startsWith('[')) {
      const close = rest.indexOf(']');
      if (close < 0) throw bad(input, 'the "[" of the IPv6 address is not closed');
      host = rest.slice(1, close);
      if (rest[close + 1] !== ':') throw bad(input, 'a ":PORT" must follow "]"');
      portText = rest.slice(close + 2);
      if (!host.includes(':') || !parseIp(host))
        throw bad(input, `"${host}" is not an IPv6 address`);
    } else {
      const last = rest.lastIndexOf(':');
      if (last < 0) throw bad(input, 'the ":PORT" is missing');
      host = rest.slice(0, last);
      portText = rest.slice(last + 1);
      if (host.includes(':')) throw bad(input, 'an IPv6 address must be written in brackets');
    }
    if (host.length === 0) throw bad(input, 'the host is empty');
    if (
      host !== '*' &&
      !parseIp(host) &&
      !/^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/.test(host)
    ) {
      throw bad(input, `"${host}" is neither an IP address nor a host name`);
    }
    return {
      kind: 'tcp',
      host: host === '*' ? '0.0.0.0' : host,
      port: parsePort(input, portText, 65535, 'port'),
    };
  }
  if (scheme === 'vsock') {
    const parts = rest.split(':');
    if (parts.length !== 2) throw bad(input, 'expected vsock:CID:PORT');
    const [cidText = '', portText = ''] = parts;
    const named = CID_NAMES[cidText.toLowerCase()];
    const cid = named ?? parsePort(input, cidText, 0xffffffff, 'CID');
    return { kind: 'vsock', cid, port: parsePort(input, portText, 0xffffffff, 'port') };
  }
  throw bad(input, `unknown scheme "${scheme}"`);
}

/** Accepts an Endpoint or its string form. */
export function toEndpoint(e: Endpoint | string): Endpoint {
  return typeof e === 'string' ? parseEndpoint(e) : e;
}

/** The parseable string form: `tcp:127.0.0.1:443`, `tcp:[::1]:443`, `vsock:16:5000`, `unix:/p`. */
export function formatEndpoint(e: Endpoint): string {
  if (e.kind === 'unix') return `unix:${e.path}`;
  if (e.kind === 'vsock') return `vsock:${e.cid === VMADDR_CID_ANY ? 'any' : e.cid}:${e.port}`;
  return `tcp:${formatHostPort(e.host, e.port)}`;
}

/** `host:port` with IPv6 in brackets. */
export function formatHostPort(host: string, port: number): string {
  const ip = parseIp(host);
  if (ip && host.includes(':')) return `[${ip.family === 6 ? formatIp(ip) : host}]:${port}`;
  return `${host}:${port}`;
}

/** The display form used in logs and errors: `127.0.0.1:443`, `[::1]:443`, `vm(16):5000`, `unix:/path`. */
export function describeEndpoint(e: Endpoint): string {
  if (e.kind === 'unix') return `unix:${e.path}`;
  if (e.kind === 'vsock') return `vm(${e.cid === VMADDR_CID_ANY ? 'any' : e.cid}):${e.port}`;
  return formatHostPort(e.host, e.port);
}
