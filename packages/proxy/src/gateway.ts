import type net from 'node:net';
import { describeEndpoint, type Endpoint, formatHostPort, toEndpoint } from './endpoint.js';
import { errorCode, errorMessage, ProxyError } from './errors.js';
import { HandshakeReader } from './handshake.js';
import { formatIp, parseIp } from './ip.js';
import type { Logger } from './logger.js';
import type { MetricsRegistry } from './metrics.js';
import { normalizeHost, Policy, type PolicyConfig } from './policy.js';
import type { Resolver } from './resolver.js';
import { type DialRetries, Route, withRetries } from './route.js';
import { dialEndpoint, dialTcp, type ProxySocket, type VsockOptions } from './transport.js';

/*
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

export interface EgressGatewayServerOptions {
  name?: string;
  /** Where the parent listens for the enclave, normally `vsock:any:PORT`. */
  listen: Endpoint | string;
  /** Enforced on every request before anything is dialled. */
  policy: Policy | PolicyConfig;
  resolver?: Resolver;
  logger?: Logger;
  vsock?: VsockOptions;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
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
  return new Route({
    name: options.name ?? 'egress',
    listen: options.listen,
    connectTimeoutMs: timeout,
    ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {}),
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
              ...(options.resolver ? { resolver: options.resolver } : {}),
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

export interface EgressGatewayOptions {
  name?: string;
  /** The local proxy listener in the enclave, e.g. `tcp:127.0.0.1:3128`. */
  listen: Endpoint | string;
  /** The parent gateway server, normally `vsock:3:PORT`. */
  parent: Endpoint | string;
  logger?: Logger;
  vsock?: VsockOptions;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
  /** Retries of the connection to the parent (never of a refusal). */
  dialRetries?: DialRetries;
  metrics?: MetricsRegistry;
}

/** The SOCKS5 reply code for a refusal code from the parent. */
function socksReplyCode(code: string): number {
  switch (code) {
    case 'ERR_PROXY_POLICY_DENIED':
      return 0x02;
    case 'ENETUNREACH':
      return 0x03;
    case 'EHOSTUNREACH':
    case 'ERR_PROXY_DNS':
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
  if (code === 'ERR_PROXY_POLICY_DENIED') return [403, 'Forbidden'];
  if (code === 'ERR_PROXY_DIAL_TIMEOUT' || code === 'ETIMEDOUT') return [504, 'Gateway Timeout'];
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

/**
 * The enclave half of the egress gateway: one local listener that speaks HTTP CONNECT and SOCKS5
 * (no auth, CONNECT, IPv4/IPv6/domain), carrying each connection to the parent gateway server
 * over `parent`. The parent decides; a refusal becomes HTTP 403 (502/504 for dial failures) or
 * SOCKS reply 0x02 (0x04/0x05/0x06 ...), with the parent's reason.
 */
export function createEgressGateway(options: EgressGatewayOptions): Route {
  const parent = toEndpoint(options.parent);
  const timeout = options.connectTimeoutMs ?? 10_000;
  return new Route({
    name: options.name ?? 'egress',
    listen: options.listen,
    connectTimeoutMs: timeout,
    ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.vsock ? { vsock: options.vsock } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
    dialer: async (ctx) => {
      const client = ctx.socket;
      const reader = new HandshakeReader(client, 'proxy handshake', 16 * 1024, timeout, ctx.signal);
      let req: GatewayRequest;
      let kind: 'socks' | 'http';
      try {
        const first = (await reader.need(1))[0];
        if (first === 0x05) {
          kind = 'socks';
          req = await readSocks5(reader, client);
        } else if (first === 0x04) {
          throw protocolError('SOCKS4 is not supported, use SOCKS5');
        } else {
          kind = 'http';
          req = await readHttpConnect(reader, client);
        }
      } catch (err) {
        reader.finish();
        if (!client.writableEnded && errorCode(err) === 'ERR_PROXY_GATEWAY_PROTOCOL') {
          httpError(client, 400, 'Bad Request', 'ERR_PROXY_GATEWAY_PROTOCOL', errorMessage(err));
        }
        throw err;
      }
      reader.finish();
      const target = formatHostPort(req.host, req.port);
      ctx.setTarget(target);
      let upstream: ProxySocket | undefined;
      try {
        upstream = await withRetries(
          () =>
            dialEndpoint(parent, {
              signal: ctx.signal,
              timeoutMs: timeout,
              ...(options.vsock ? { vsock: options.vsock } : {}),
            }),
          options.dialRetries,
          ctx.signal,
          () => {},
        );
        upstream.write(`${JSON.stringify({ v: 1, host: req.host, port: req.port })}\n`);
        const r = new HandshakeReader(upstream, 'gateway reply', MAX_LINE, timeout, ctx.signal);
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
          throw protocolError(
            `the parent ${describeEndpoint(parent)} answered something that is not JSON`,
          );
        }
        if (!answer.ok) {
          throw new ProxyError(
            typeof answer.code === 'string' ? answer.code : 'ERR_PROXY_DIAL_FAILED',
            `The parent gateway refused ${target}: ${String(answer.reason)}`,
            { address: target, details: { reason: answer.reason, by: 'parent' } },
          );
        }
      } catch (err) {
        upstream?.destroy();
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
      if (kind === 'socks') socksReply(client, 0x00, false);
      else client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      return upstream;
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

async function readHttpConnect(
  reader: HandshakeReader,
  client: ProxySocket,
): Promise<GatewayRequest> {
  const head = (await reader.until('\r\n\r\n')).toString('latin1');
  const requestLine = head.slice(0, head.indexOf('\r\n'));
  const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(requestLine);
  if (!m)
    throw protocolError(`malformed HTTP request line ${JSON.stringify(requestLine.slice(0, 100))}`);
  if (m[1] !== 'CONNECT') {
    const reason = `only CONNECT is supported (got ${m[1]}); use an https:// URL or SOCKS5`;
    httpError(client, 405, 'Method Not Allowed', 'ERR_PROXY_GATEWAY_PROTOCOL', reason);
    throw protocolError(reason);
  }
  const req = parseAuthority(m[2] ?? '');
  if (!req) throw protocolError(`CONNECT target ${JSON.stringify(m[2])} is not host:port`);
  return req;
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
