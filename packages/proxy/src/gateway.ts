import type net from 'node:net';
import { describeEndpoint, type Endpoint, formatHostPort, toEndpoint } from './endpoint.js';
import { errorCode, errorMessage, ProxyError } from './errors.js';
import { HandshakeReader, prependPending, takePending } from './handshake.js';
import { formatIp, parseIp } from './ip.js';
import type { Logger } from './logger.js';
import type { MetricsRegistry } from './metrics.js';
import { normalizeHost, Policy, type PolicyConfig } from './policy.js';
import { createResolver, type DnsLimits, type Resolver } from './resolver.js';
import { type DialRetries, Route, type RouteLimits, routeLimits, withRetries } from './route.js';
import { dialEndpoint, dialTcp, type ProxySocket, type VsockOptions } from './transport.js';

/*
 * The enclave half accepts three request kinds on one listener, told apart by the first bytes:
 * SOCKS5 (0x05), HTTP CONNECT (`CONNECT host:port HTTP/1.1`) and a plain-HTTP proxy request in
 * absolute form (`GET http://host[:port]/path HTTP/1.1`). All three end up as the same request to
 * the parent below; for the absolute form the enclave half then forwards the request head
 * rewritten to origin form (`GET /path HTTP/1.1`, `Connection: close`) and pipes the rest raw.
 *
 * Gateway wire protocol (one connection per proxied connection, on one vsock port):
 *   enclave -> parent: one JSON line  {"v":1,"host":"kms.eu-west-1.amazonaws.com","port":443}\n
 *   parent -> enclave: one JSON line  {"ok":true,"address":"52.1.2.3:443"}\n
 *                                 or  {"ok":false,"code":"ERR_PROXY_POLICY_DENIED","reason":"..."}\n
 *   then raw bytes both ways (half-close propagated). Lines are at most 2048 bytes.
 */
const MAX_LINE = 2048;

interface GatewayRequest {
  host: string;
  port: number;
}
type GatewayReply = { ok: true; address?: string } | { ok: false; code: string; reason: string };

function protocolError(what: string): ProxyError {
  return new ProxyError('ERR_PROXY_GATEWAY_PROTOCOL', `Egress gateway: ${what}.`);
}

function validHost(host: string): boolean {
  if (host.length === 0 || host.length > 255) return false;
  if (parseIp(host)) return true;
  return /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/.test(host);
}

function parseRequestLine(line: Buffer): GatewayRequest {
  let v: unknown;
  try {
    v = JSON.parse(line.toString('utf8'));
  } catch {
    throw protocolError('the request line is not JSON');
  }
  const r = v as { v?: unknown; host?: unknown; port?: unknown };
  if (r?.v !== 1) throw protocolError(`unsupported request version ${JSON.stringify(r?.v)}`);
  if (typeof r.host !== 'string' || !validHost(r.host))
    throw protocolError(`invalid host ${JSON.stringify(r.host)}`);
  if (typeof r.port !== 'number' || !Number.isInteger(r.port) || r.port < 1 || r.port > 65535) {
    throw protocolError(`invalid port ${JSON.stringify(r.port)}`);
  }
  return { host: r.host, port: r.port };
}

export interface EgressGatewayServerOptions extends RouteLimits {
  name?: string;
  /** Where the parent listens for the enclave, normally `vsock:any:PORT`. */
  listen: Endpoint | string;
  /** Enforced on every request before anything is dialled. */
  policy: Policy | PolicyConfig;
  resolver?: Resolver;
  /** DNS deadline and per-peer lookup cap of the resolver created when no `resolver` is given. */
  dns?: DnsLimits;
  logger?: Logger;
  vsock?: VsockOptions;
  connectTimeoutMs?: number;
  dialRetries?: DialRetries;
  metrics?: MetricsRegistry;
}

/**
 * The parent half of the egress gateway: reads the target named by the enclave, checks it (name and
 * every resolved address) against the policy, dials, answers ok/refused, then forwards raw bytes.
 */
export function createEgressGatewayServer(options: EgressGatewayServerOptions): Route {
  const policy = options.policy instanceof Policy ? options.policy : new Policy(options.policy);
  const timeout = options.connectTimeoutMs ?? 10_000;
  const resolver = options.resolver ?? (options.dns ? createResolver(options.dns) : undefined);
  return new Route({
    name: options.name ?? 'egress',
    listen: options.listen,
    connectTimeoutMs: timeout,
    ...routeLimits(options),
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.vsock ? { vsock: options.vsock } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
    dialer: async (ctx) => {
      const reader = new HandshakeReader(
        ctx.socket,
        'gateway request',
        MAX_LINE,
        timeout,
        ctx.signal,
      );
      let req: GatewayRequest;
      try {
        const line = await reader.until('\n');
        req = parseRequestLine(line.subarray(0, line.length - 1));
      } catch (err) {
        reader.finish();
        reply(ctx.socket, { ok: false, code: errorCode(err), reason: errorMessage(err) });
        throw err;
      }
      reader.finish();
      const target = formatHostPort(normalizeHost(req.host), req.port);
      ctx.setTarget(target);
      try {
        const out = await withRetries(
          () =>
            dialTcp(req.host, req.port, {
              policy,
              signal: ctx.signal,
              timeoutMs: timeout,
              peer: ctx.peerId,
              ...(resolver ? { resolver } : {}),
            }),
          options.dialRetries,
          ctx.signal,
          () => {},
        );
        const address =
          out.remoteAddress !== undefined && out.remotePort !== undefined
            ? formatHostPort(out.remoteAddress, out.remotePort)
            : undefined;
        ctx.socket.write(`${JSON.stringify({ ok: true, ...(address ? { address } : {}) })}\n`);
        return out;
      } catch (err) {
        reply(ctx.socket, { ok: false, code: errorCode(err), reason: errorMessage(err) });
        throw err;
      }
    },
  });
}

function reply(socket: ProxySocket, r: GatewayReply): void {
  if (socket.destroyed || socket.writableEnded) return;
  socket.end(`${JSON.stringify(r)}\n`);
}

export interface EgressGatewayOptions extends RouteLimits {
  name?: string;
  /** The local proxy listener in the enclave, e.g. `tcp:127.0.0.1:3128`. */
  listen: Endpoint | string;
  /** The parent gateway server, normally `vsock:3:PORT`. */
  parent: Endpoint | string;
  logger?: Logger;
  vsock?: VsockOptions;
  connectTimeoutMs?: number;
  /** Retries of the connection to the parent (never of a refusal). */
  dialRetries?: DialRetries;
  metrics?: MetricsRegistry;
}

/** The SOCKS5 reply code for a refusal code from the parent. */
function socksReplyCode(code: string): number {
  switch (code) {
    case 'ERR_PROXY_POLICY_DENIED':
    case 'ERR_PROXY_UNSPECIFIED_ADDRESS':
      return 0x02;
    case 'ENETUNREACH':
      return 0x03;
    case 'EHOSTUNREACH':
    case 'ERR_PROXY_DNS':
    case 'ERR_PROXY_DNS_TIMEOUT':
      return 0x04;
    case 'ECONNREFUSED':
      return 0x05;
    case 'ETIMEDOUT':
    case 'ERR_PROXY_DIAL_TIMEOUT':
      return 0x06;
    default:
      return 0x01;
  }
}

function httpStatus(code: string): [number, string] {
  if (code === 'ERR_PROXY_POLICY_DENIED' || code === 'ERR_PROXY_UNSPECIFIED_ADDRESS') {
    return [403, 'Forbidden'];
  }
  if (code === 'ERR_PROXY_DIAL_TIMEOUT' || code === 'ETIMEDOUT' || code === 'ERR_PROXY_DNS_TIMEOUT')
    return [504, 'Gateway Timeout'];
  if (code === 'ERR_PROXY_DNS_LIMIT') return [503, 'Service Unavailable'];
  return [502, 'Bad Gateway'];
}

const ERROR_HEADER = 'X-Enclave-Extras-Error';

function httpError(
  socket: ProxySocket,
  status: number,
  text: string,
  code: string,
  reason: string,
): void {
  if (socket.destroyed || socket.writableEnded) return;
  const body = `${reason}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\n${ERROR_HEADER}: ${code}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

function socksReply(socket: ProxySocket, rep: number, end: boolean): void {
  if (socket.destroyed || socket.writableEnded) return;
  const b = Buffer.from([0x05, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
  if (end) socket.end(b);
  else socket.write(b);
}

/** Splits `host:port` / `[v6]:port` of an HTTP CONNECT authority. */
function parseAuthority(a: string): GatewayRequest | undefined {
  let host: string;
  let port: string;
  if (a.startsWith('[')) {
    const close = a.indexOf(']');
    if (close < 0 || a[close + 1] !== ':') return undefined;
    host = a.slice(1, close);
    port = a.slice(close + 2);
  } else {
    const c = a.lastIndexOf(':');
    if (c <= 0) return undefined;
    host = a.slice(0, c);
    port = a.slice(c + 1);
  }
  if (!/^\d{1,5}$/.test(port)) return undefined;
  const p = Number(port);
  if (p < 1 || p > 65535 || !validHost(host)) return undefined;
  return { host, port: p };
}

/** The longest proxy handshake the enclave half reads: an HTTP request head or a SOCKS5 request. */
const MAX_HANDSHAKE = 16 * 1024;

/** A proxy request that is malformed or not served; answered with HTTP `status` (default 400). */
function requestError(what: string, status = 400): ProxyError {
  return new ProxyError('ERR_PROXY_GATEWAY_PROTOCOL', `Egress gateway: ${what}.`, {
    details: { status },
  });
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  431: 'Request Header Fields Too Large',
};

/** The HTTP status for a handshake failure: the one the parser chose, 431 for an oversize head, else 400. */
function protocolStatus(err: unknown): number {
  const details = err instanceof ProxyError ? err.details : undefined;
  if (typeof details?.status === 'number') return details.status;
  if (typeof details?.maxBytes === 'number') return 431;
  return 400;
}

/**
 * Splits the authority of an absolute-form `http://` URL: `host`, `host:port`, `[v6]`,
 * `[v6]:port` (an absent or empty port is 80). IPv6 literals must be bracketed; the result is
 * validated by parseAuthority like a CONNECT target.
 */
function parseUrlAuthority(a: string): GatewayRequest | undefined {
  let host: string;
  let port = '';
  if (a.startsWith('[')) {
    const close = a.indexOf(']');
    if (close < 0) return undefined;
    const inner = a.slice(1, close);
    if (!inner.includes(':') || !parseIp(inner)) return undefined;
    const after = a.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) return undefined;
    host = a.slice(0, close + 1);
    port = after.slice(1);
  } else {
    const c = a.indexOf(':');
    host = c < 0 ? a : a.slice(0, c);
    port = c < 0 ? '' : a.slice(c + 1);
  }
  // digits only: also refuses an unbracketed IPv6 literal (`http://::1:80/`)
  if (!/^\d*$/.test(port)) return undefined;
  return parseAuthority(`${host}:${port === '' ? '80' : port}`);
}

/** What the client asked for: a tunnel (SOCKS5, CONNECT) or one forwarded plain-HTTP request. */
type ClientRequest =
  | { kind: 'socks'; req: GatewayRequest }
  | { kind: 'connect'; req: GatewayRequest }
  | { kind: 'forward'; req: GatewayRequest; head: Buffer };

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** True when `s` holds a control character other than HTAB (CR, LF, NUL ... split or smuggle lines). */
function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}

/** Never forwarded: proxy hop-by-hop fields (and Connection / Host, which are rewritten). */
const DROPPED = new Set(['connection', 'proxy-connection', 'proxy-authorization', 'keep-alive']);
/** Never dropped even when named in Connection: the body framing the raw pipe relies on, and Host. */
const PROTECTED = new Set(['content-length', 'transfer-encoding', 'host']);

/**
 * The enclave half of the egress gateway: one local listener that speaks SOCKS5 (no auth, CONNECT,
 * IPv4/IPv6/domain), HTTP CONNECT, and plain-HTTP proxy requests in absolute form
 * (`GET http://host[:port]/path HTTP/1.1`, any method but CONNECT, `http://` only), so
 * `HTTPS_PROXY`, `HTTP_PROXY` and `ALL_PROXY=socks5h://` can all point at it. Each connection is
 * carried to the parent gateway server over `parent` with the target it named; the parent decides.
 * A refusal becomes HTTP 403 (502/504 for dial failures) or SOCKS reply 0x02 (0x04/0x05/0x06 ...),
 * with the parent's reason; a malformed or unsupported request gets HTTP 400 (431 for a request
 * head over 16 KiB) and nothing is dialled.
 *
 * A plain-HTTP request is forwarded with its head rewritten to origin form, the proxy hop-by-hop
 * headers (`Proxy-Connection`, `Proxy-Authorization`, `Keep-Alive`, anything named in
 * `Connection`) removed, `Host` set to the URL's authority and `Connection: close` added; then the
 * body and the response flow raw, unbuffered, like a tunnel. One client connection therefore
 * carries one request's origin connection: keep-alive to the gateway lasts one request. A client
 * that pipelines a further request on the same connection reaches only the origin already allowed
 * for the first one (never another host), whatever that request names.
 */
export function createEgressGateway(options: EgressGatewayOptions): Route {
  const parent = toEndpoint(options.parent);
  const timeout = options.connectTimeoutMs ?? 10_000;
  return new Route({
    name: options.name ?? 'egress',
    listen: options.listen,
    connectTimeoutMs: timeout,
    ...routeLimits(options),
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.vsock ? { vsock: options.vsock } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
    dialer: async (ctx) => {
      const client = ctx.socket;
      const reader = new HandshakeReader(
        client,
        'proxy handshake',
        MAX_HANDSHAKE,
        timeout,
        ctx.signal,
      );
      let request: ClientRequest;
      try {
        const first = (await reader.need(1))[0];
        if (first === 0x05) {
          request = { kind: 'socks', req: await readSocks5(reader, client) };
        } else if (first === 0x04) {
          throw protocolError('SOCKS4 is not supported, use SOCKS5');
        } else {
          request = await readHttpRequest(reader);
        }
      } catch (err) {
        reader.finish();
        if (!client.writableEnded && errorCode(err) === 'ERR_PROXY_GATEWAY_PROTOCOL') {
          const status = protocolStatus(err);
          const text = STATUS_TEXT[status] ?? 'Bad Request';
          httpError(client, status, text, 'ERR_PROXY_GATEWAY_PROTOCOL', errorMessage(err));
        }
        throw err;
      }
      reader.finish();
      const { kind, req } = request;
      const target = formatHostPort(req.host, req.port);
      ctx.setTarget(target);
      let upstream: ProxySocket;
      try {
        upstream = await openTunnel(parent, req, {
          signal: ctx.signal,
          timeoutMs: timeout,
          ...(options.vsock ? { vsock: options.vsock } : {}),
          ...(options.dialRetries ? { dialRetries: options.dialRetries } : {}),
        });
      } catch (err) {
        const code = errorCode(err);
        const reason =
          err instanceof ProxyError && err.details?.by === 'parent'
            ? String(err.details.reason)
            : `cannot reach the egress gateway at ${describeEndpoint(parent)}: ${errorMessage(err)}`;
        if (kind === 'socks') socksReply(client, socksReplyCode(code), true);
        else {
          const [status, text] = httpStatus(code);
          httpError(client, status, text, code, reason);
        }
        throw err;
      }
      if (request.kind === 'socks') socksReply(client, 0x00, false);
      else if (request.kind === 'connect') {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      } else {
        // The rewritten head goes in front of the body bytes read with it (pending on the client
        // socket, also after an EOF that came with the head): the pipe writes (and counts) both
        // before it reads anything more.
        prependPending(client, request.head);
      }
      return upstream;
    },
  });
}

export interface ParentTunnelOptions {
  signal?: AbortSignal;
  /** Connect and answer deadline. Default 10 000 ms. */
  timeoutMs?: number;
  vsock?: VsockOptions;
  /** Retries of the connection to the parent (never of a refusal). */
  dialRetries?: DialRetries;
}

/**
 * Opens one tunnel through the parent gateway server (`createEgressGatewayServer`) to host:port:
 * sends the request line, waits for the answer, and returns the socket with raw bytes to follow.
 * A refusal rejects with the parent's code (`ERR_PROXY_POLICY_DENIED` ...) and
 * `details: { by: 'parent', reason }`; the socket is destroyed on any failure.
 */
export async function openParentTunnel(
  parent: Endpoint | string,
  target: { host: string; port: number },
  options: ParentTunnelOptions = {},
): Promise<ProxySocket> {
  const upstream = await openTunnel(parent, target, options);
  // bytes the target sent right after the reply were read with it: a caller reads the socket as a
  // stream, so they go back into it (before any EOF, which a stream cannot take bytes after)
  const rest = takePending(upstream);
  if (rest && rest.length > 0) {
    if (upstream.readableEnded) {
      upstream.destroy();
      throw protocolError(`the parent ${describeEndpoint(toEndpoint(parent))} closed the tunnel`);
    }
    upstream.unshift(rest);
  }
  return upstream;
}

/** openParentTunnel for the route's own pipe: bytes read after the reply stay pending (takePending). */
async function openTunnel(
  parent: Endpoint | string,
  target: { host: string; port: number },
  options: ParentTunnelOptions = {},
): Promise<ProxySocket> {
  const ep = toEndpoint(parent);
  const timeout = options.timeoutMs ?? 10_000;
  const signal = options.signal ?? new AbortController().signal;
  const where = formatHostPort(target.host, target.port);
  let upstream: ProxySocket | undefined;
  try {
    upstream = await withRetries(
      () =>
        dialEndpoint(ep, {
          timeoutMs: timeout,
          ...(options.signal ? { signal: options.signal } : {}),
          ...(options.vsock ? { vsock: options.vsock } : {}),
        }),
      options.dialRetries,
      signal,
      () => {},
    );
    upstream.write(`${JSON.stringify({ v: 1, host: target.host, port: target.port })}\n`);
    const r = new HandshakeReader(upstream, 'gateway reply', MAX_LINE, timeout, signal);
    let line: Buffer;
    try {
      line = await r.until('\n');
    } finally {
      r.finish();
    }
    let answer: GatewayReply;
    try {
      answer = JSON.parse(line.toString('utf8')) as GatewayReply;
    } catch {
      throw protocolError(`the parent ${describeEndpoint(ep)} answered something that is not JSON`);
    }
    if (!answer.ok) {
      throw new ProxyError(
        typeof answer.code === 'string' ? answer.code : 'ERR_PROXY_DIAL_FAILED',
        `The parent gateway refused ${where}: ${String(answer.reason)}`,
        { address: where, details: { reason: answer.reason, by: 'parent' } },
      );
    }
    return upstream;
  } catch (err) {
    upstream?.destroy();
    throw err;
  }
}

/** Where a transparently redirected connection was going: `host` may be a name the app resolved. */
export interface TransparentTarget {
  host: string;
  port: number;
}

export interface TransparentGatewayOptions extends RouteLimits {
  name?: string;
  /** The local listener the redirect rules send to, e.g. `tcp:127.0.0.1:15001`. */
  listen: Endpoint | string;
  /** The parent gateway server, normally `vsock:3:PORT` (the same one the proxy gateway uses). */
  parent: Endpoint | string;
  /**
   * The destination the accepted connection was meant for. In the enclave runtime this reads
   * SO_ORIGINAL_DST from the socket (and maps the address back to the name the app resolved).
   * Throwing closes the connection with a reset.
   */
  target: (socket: ProxySocket) => TransparentTarget | Promise<TransparentTarget>;
  logger?: Logger;
  vsock?: VsockOptions;
  connectTimeoutMs?: number;
  dialRetries?: DialRetries;
  metrics?: MetricsRegistry;
}

/**
 * The enclave half of transparent egress: a listener for connections redirected to it (iptables
 * REDIRECT), each forwarded through the parent gateway server to its original destination, so the
 * parent's policy decides exactly as for the proxy gateway. The client speaks its own protocol
 * from the first byte (no handshake); a refusal or an unreachable parent resets the connection.
 */
export function createTransparentGateway(options: TransparentGatewayOptions): Route {
  const parent = toEndpoint(options.parent);
  const timeout = options.connectTimeoutMs ?? 10_000;
  return new Route({
    name: options.name ?? 'transparent',
    listen: options.listen,
    connectTimeoutMs: timeout,
    ...routeLimits(options),
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.vsock ? { vsock: options.vsock } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
    dialer: async (ctx) => {
      try {
        const target = await options.target(ctx.socket);
        ctx.setTarget(formatHostPort(target.host, target.port));
        return await openTunnel(parent, target, {
          signal: ctx.signal,
          timeoutMs: timeout,
          ...(options.vsock ? { vsock: options.vsock } : {}),
          ...(options.dialRetries ? { dialRetries: options.dialRetries } : {}),
        });
      } catch (err) {
        // The app saw its connect() succeed: a reset is the closest thing to "refused".
        const s = ctx.socket as Partial<net.Socket>;
        if (typeof s.resetAndDestroy === 'function' && !ctx.socket.destroyed) s.resetAndDestroy();
        throw err;
      }
    },
  });
}

async function readSocks5(reader: HandshakeReader, client: ProxySocket): Promise<GatewayRequest> {
  const hello = await reader.need(2);
  const n = hello[1] ?? 0;
  const methods = (await reader.need(2 + n)).subarray(2, 2 + n);
  reader.take(2 + n);
  if (!methods.includes(0x00)) {
    client.end(Buffer.from([0x05, 0xff]));
    throw protocolError('the SOCKS5 client offers no "no authentication" method');
  }
  client.write(Buffer.from([0x05, 0x00]));
  const head = await reader.need(4);
  const cmd = head[1];
  const atyp = head[3];
  if (head[0] !== 0x05) throw protocolError('bad SOCKS5 request version');
  let host: string;
  let len: number;
  if (atyp === 0x01) {
    const b = await reader.need(4 + 4 + 2);
    host = `${b[4]}.${b[5]}.${b[6]}.${b[7]}`;
    len = 10;
  } else if (atyp === 0x04) {
    const b = await reader.need(4 + 16 + 2);
    host = formatIp({ family: 6, bytes: Uint8Array.from(b.subarray(4, 20)) });
    const ip = parseIp(host);
    if (ip) host = formatIp(ip);
    len = 22;
  } else if (atyp === 0x03) {
    const l = (await reader.need(5))[4] ?? 0;
    const b = await reader.need(5 + l + 2);
    host = b.subarray(5, 5 + l).toString('latin1');
    len = 5 + l + 2;
  } else {
    socksReply(client, 0x08, true);
    throw protocolError(`SOCKS5 address type ${atyp} is not supported`);
  }
  const b = reader.take(len);
  const port = b.readUInt16BE(len - 2);
  if (cmd !== 0x01) {
    socksReply(client, 0x07, true);
    throw protocolError(`SOCKS5 command ${cmd} is not supported (only CONNECT)`);
  }
  if (!validHost(host) || port === 0) {
    socksReply(client, 0x01, true);
    throw protocolError(`SOCKS5 target ${JSON.stringify(host)}:${port} is invalid`);
  }
  return { host, port };
}

/**
 * Reads an HTTP request head (at most MAX_HANDSHAKE bytes): `CONNECT host:port` becomes a tunnel;
 * any other method with an absolute-form `http://` target becomes one forwarded request whose head
 * is rewritten to origin form. Everything else is refused with a status that names the problem.
 */
async function readHttpRequest(reader: HandshakeReader): Promise<ClientRequest> {
  const raw = await reader.until('\r\n\r\n');
  if (raw.length > MAX_HANDSHAKE) {
    throw requestError(`the request head is longer than ${MAX_HANDSHAKE} bytes`, 431);
  }
  const lines = raw.toString('latin1').slice(0, -4).split('\r\n');
  const requestLine = lines[0] ?? '';
  const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP\/1\.[01])$/.exec(requestLine);
  if (!m)
    throw protocolError(`malformed HTTP request line ${JSON.stringify(requestLine.slice(0, 100))}`);
  const method = m[1] ?? '';
  const target = m[2] ?? '';
  const version = m[3] ?? '';
  if (method === 'CONNECT') {
    const req = parseAuthority(target);
    if (!req) throw protocolError(`CONNECT target ${JSON.stringify(target)} is not host:port`);
    return { kind: 'connect', req };
  }
  const { req, authority, path } = parseAbsoluteForm(method, target);
  return { kind: 'forward', req, head: rewriteHead(method, path, version, authority, lines) };
}

/** `http://host[:port][/path][?query]` -> the target to dial, the authority and the origin-form path. */
function parseAbsoluteForm(
  method: string,
  target: string,
): { req: GatewayRequest; authority: string; path: string } {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(target);
  if (!scheme) {
    if (target.startsWith('/') || target === '*') {
      throw requestError(
        `${method} ${JSON.stringify(target.slice(0, 100))} is not a proxy request: send the absolute URL ` +
          `(${method} http://host/path) or use CONNECT / SOCKS5`,
      );
    }
    throw requestError(
      `the request target ${JSON.stringify(target.slice(0, 100))} is not an absolute http:// URL`,
    );
  }
  const name = (scheme[1] ?? '').toLowerCase();
  if (name !== 'http') {
    throw requestError(
      `the scheme ${name}:// is not forwarded, only http:// is; ` +
        (name === 'https'
          ? 'for https:// URLs the client must use CONNECT (HTTPS_PROXY=http://gateway)'
          : 'use SOCKS5 for other protocols'),
    );
  }
  if (hasControl(target)) throw requestError('the request target holds a control character');
  const rest = target.slice(scheme[0].length);
  const end = rest.search(/[/?#]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  let path = end < 0 ? '' : rest.slice(end);
  const fragment = path.indexOf('#');
  if (fragment >= 0) path = path.slice(0, fragment);
  // never echo the credentials into the answer or the log
  if (authority.includes('@')) throw requestError('the URL carries userinfo (user@host), refused');
  if (authority === '')
    throw requestError(`the URL ${JSON.stringify(target.slice(0, 100))} has no host`);
  const req = parseUrlAuthority(authority);
  if (!req) {
    throw requestError(
      `the URL authority ${JSON.stringify(authority.slice(0, 300))} is not host[:port] ` +
        '(a valid name or IP, IPv6 in brackets, port 1-65535)',
    );
  }
  if (path === '') path = method === 'OPTIONS' ? '*' : '/';
  else if (path.startsWith('?')) path = `/${path}`;
  return { req, authority, path };
}

/**
 * The head sent to the origin: origin-form request line with the client's HTTP version, `Host`
 * set to the URL's authority (RFC 9112 3.2.2: a proxy ignores the client's Host for absolute form),
 * every other header kept byte for byte except the proxy hop-by-hop ones and those named in
 * `Connection`, and `Connection: close` so this connection carries exactly one origin connection.
 */
function rewriteHead(
  method: string,
  path: string,
  version: string,
  authority: string,
  lines: string[],
): Buffer {
  const fields: Array<{ name: string; line: string }> = [];
  const named = new Set<string>();
  let hosts = 0;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!TOKEN.test(name)) {
      throw requestError(`malformed header line ${JSON.stringify(line.slice(0, 100))}`);
    }
    const value = line.slice(colon + 1);
    if (hasControl(value)) {
      throw requestError(`the header ${name} holds a control character`);
    }
    const lower = name.toLowerCase();
    if (lower === 'host') hosts++;
    if (lower === 'connection') {
      for (const option of value.split(',')) named.add(option.trim().toLowerCase());
    }
    fields.push({ name: lower, line });
  }
  if (hosts > 1) throw requestError('the request has more than one Host header');
  const out = [`${method} ${path} ${version}`, `Host: ${authority}`];
  for (const f of fields) {
    if (f.name === 'host' || DROPPED.has(f.name)) continue;
    if (named.has(f.name) && !PROTECTED.has(f.name)) continue;
    out.push(f.line);
  }
  out.push('Connection: close', '', '');
  return Buffer.from(out.join('\r\n'), 'latin1');
}

/** Where to dial through a proxy/gateway. */
export interface DialTarget {
  host: string;
  port: number;
  signal?: AbortSignal;
}
/** The dial seam shared by the packages: returns a connected socket to `host:port`. */
export type Dialer = (target: DialTarget) => Promise<net.Socket>;

export interface HttpConnectDialerOptions {
  /** Connect + CONNECT-answer timeout. Default 10 000 ms. */
  timeoutMs?: number;
}

/**
 * A Dialer that tunnels through an HTTP CONNECT proxy such as the enclave's egress gateway
 * (`http://127.0.0.1:3128`). A 403 becomes ProxyError ERR_PROXY_POLICY_DENIED with the
 * gateway's reason; other refusals keep the code the gateway reported.
 */
export function httpConnectDialer(
  proxyUrl: string | URL,
  options: HttpConnectDialerOptions = {},
): Dialer {
  let url: URL;
  try {
    url = new URL(String(proxyUrl));
  } catch (err) {
    throw new ProxyError(
      'ERR_PROXY_BAD_OPTION',
      `Proxy URL ${JSON.stringify(String(proxyUrl))} is not a URL.`,
      { cause: err },
    );
  }
  if (url.protocol !== 'http:') {
    throw new ProxyError(
      'ERR_PROXY_BAD_OPTION',
      `Proxy URL ${url.href} must use http:// (the CONNECT request is plain text).`,
    );
  }
  const proxyHost = url.hostname.replace(/^\[|\]$/g, '');
  const proxyPort = url.port === '' ? 80 : Number(url.port);
  const timeoutMs = options.timeoutMs ?? 10_000;
  return async (target) => {
    const socket = await dialTcp(proxyHost, proxyPort, {
      timeoutMs,
      ...(target.signal ? { signal: target.signal } : {}),
    });
    const authority = formatHostPort(target.host, target.port);
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    const reader = new HandshakeReader(
      socket,
      'CONNECT response',
      16 * 1024,
      timeoutMs,
      target.signal,
    );
    try {
      const head = (await reader.until('\r\n\r\n')).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      if (!m)
        throw protocolError(`the proxy ${url.host} answered ${JSON.stringify(head.slice(0, 60))}`);
      const status = Number(m[1]);
      if (status === 200) {
        reader.finish();
        return socket;
      }
      const code = /\r\nX-Enclave-Extras-Error: *([A-Za-z0-9_]+)/i.exec(head)?.[1];
      const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? '0');
      let reason = `HTTP ${status}`;
      if (len > 0 && len <= 8192) {
        try {
          reason = (await reader.need(len)).subarray(0, len).toString('utf8').trim();
        } catch {
          // keep the status line as the reason
        }
      }
      throw new ProxyError(
        code ?? (status === 403 ? 'ERR_PROXY_POLICY_DENIED' : 'ERR_PROXY_DIAL_FAILED'),
        `The proxy ${url.host} refused CONNECT ${authority} (HTTP ${status}): ${reason}`,
        { address: authority, details: { status, reason } },
      );
    } catch (err) {
      reader.finish();
      socket.destroy();
      throw err;
    }
  };
}
