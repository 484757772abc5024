import { existsSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { VsockTransport } from '@enclave-extras/vsock';
import { describeEndpoint, type Endpoint, formatHostPort, VMADDR_CID_ANY } from './endpoint.js';
import { errorCode, errorMessage, ProxyError, socketError } from './errors.js';
import { type CanonicalAddress, canonicalAddress, formatIp, parseNumericHost } from './ip.js';
import { normalizeHost, type Policy, unspecifiedRefusal } from './policy.js';
import { createResolver, type Resolver } from './resolver.js';

/** A connected byte stream: a net.Socket, a VsockSocket, or anything Duplex with destroy(). */
export type ProxySocket = Duplex & { remoteAddress?: string; remotePort?: number };

/** The subset of @enclave-extras/vsock the proxy uses; injectable (tests, other vsock stacks). */
export interface VsockApi {
  connect(options: {
    cid: number;
    port: number;
    connectTimeout?: number;
    signal?: AbortSignal;
    allowHalfOpen?: boolean;
    transport?: VsockTransport;
  }): net.Socket;
  createServer(
    options: { allowHalfOpen?: boolean; pauseOnConnect?: boolean; transport?: VsockTransport },
    listener: (socket: net.Socket) => void,
  ): VsockServerLike;
}
export interface VsockServerLike {
  listen(options: { port: number; cid?: number; backlog?: number }, callback?: () => void): unknown;
  close(callback?: (err?: Error) => void): unknown;
  address(): { cid: number; port: number } | null;
  on(event: 'error', listener: (err: Error) => void): unknown;
  once(event: string, listener: (...args: never[]) => void): unknown;
  removeListener(event: string, listener: (...args: never[]) => void): unknown;
}

/**
 * How vsock endpoints are reached: a `transport` of @enclave-extras/vsock (kernel, or the
 * Unix-socket emulation from createEmulatedTransport({ dir })) and/or a replacement API.
 * Default: @enclave-extras/vsock's defaultTransport() (kernel, or ENCLAVE_EXTRAS_VSOCK_DIR).
 */
export interface VsockOptions {
  transport?: VsockTransport;
  api?: VsockApi;
}

let vsockModule: Promise<VsockApi> | undefined;
async function loadVsock(opts: VsockOptions | undefined): Promise<VsockApi> {
  if (opts?.api) return opts.api;
  vsockModule ??= import('@enclave-extras/vsock').then((m: unknown) => {
    const api = m as Partial<VsockApi>;
    if (typeof api.connect !== 'function' || typeof api.createServer !== 'function') {
      throw new ProxyError(
        'ERR_PROXY_VSOCK_UNAVAILABLE',
        '@enclave-extras/vsock does not export connect/createServer; install a matching version.',
      );
    }
    return api as unknown as VsockApi;
  });
  return vsockModule;
}

export interface Listener {
  /** The endpoint actually bound (port 0 replaced by the real port). */
  endpoint: Endpoint;
  close(): Promise<void>;
}

export interface ListenOptions {
  vsock?: VsockOptions;
  backlog?: number;
}

/** What to do about a failed listen, by endpoint kind and error code. */
export function listenRemedy(ep: Endpoint, code: string): string {
  switch (code) {
    case 'EADDRINUSE':
      return 'Pick a free address or stop the other listener.';
    case 'EACCES':
    case 'EPERM':
      return ep.kind === 'unix'
        ? 'Check that the directory of the socket path exists and that this user may create files in it.'
        : 'Ports below 1024 need root or CAP_NET_BIND_SERVICE: pick a higher port or grant it.';
    case 'EADDRNOTAVAIL':
      return ep.kind === 'vsock'
        ? 'That CID is not local: listen on vsock:any:PORT.'
        : 'That address is not assigned to this machine: listen on one of its addresses or 0.0.0.0.';
  }
  if (
    ep.kind === 'vsock' &&
    ['ENODEV', 'EAFNOSUPPORT', 'ENOENT', 'ESOCKTNOSUPPORT'].includes(code)
  ) {
    return 'This machine has no vsock: run inside an enclave or a VM with virtio-vsock (on a parent instance, the Nitro Enclaves allocator loads vhost_vsock), or use the emulation: --vsock-dir DIR (ENCLAVE_EXTRAS_VSOCK_DIR).';
  }
  if (ep.kind === 'unix' && code === 'ENOENT') {
    return 'Check that the directory of the socket path exists and that this user may create files in it.';
  }
  return 'Check the address.';
}

function waitListening(
  server: net.Server | VsockServerLike,
  start: (cb: () => void) => void,
  ep: Endpoint,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      reject(
        new ProxyError(
          errorCode(err) === 'ERR_UNKNOWN' ? 'ERR_PROXY_LISTEN_FAILED' : errorCode(err),
          `Listening on ${describeEndpoint(ep)} failed: ${err.message}. ${listenRemedy(ep, errorCode(err))}`,
          { cause: err, syscall: 'listen', address: describeEndpoint(ep) },
        ),
      );
    };
    server.once('error', onError as (...args: unknown[]) => void);
    try {
      start(() => {
        server.removeListener('error', onError);
        resolve();
      });
    } catch (err) {
      onError(err instanceof Error ? err : new Error(String(err)));
    }
  });
}

async function unlinkStaleUnixSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const alive = await new Promise<boolean>((resolve) => {
    const s = net.connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (!alive) {
    try {
      unlinkSync(path);
    } catch {
      // raced with someone else: listen() reports the real problem
    }
  }
}

/** Starts a listener on `ep`; accepted sockets are paused (half-open allowed) and handed to `onConnection`. */
export async function listenEndpoint(
  ep: Endpoint,
  onConnection: (socket: ProxySocket) => void,
  options: ListenOptions = {},
): Promise<Listener> {
  if (ep.kind === 'vsock') {
    const api = await loadVsock(options.vsock);
    const server = api.createServer(
      {
        allowHalfOpen: true,
        pauseOnConnect: true,
        ...(options.vsock?.transport !== undefined ? { transport: options.vsock.transport } : {}),
      },
      (s) => onConnection(s),
    );
    await waitListening(
      server,
      (cb) =>
        server.listen(
          {
            port: ep.port,
            ...(ep.cid === VMADDR_CID_ANY ? {} : { cid: ep.cid }),
            ...(options.backlog ? { backlog: options.backlog } : {}),
          },
          cb,
        ),
      ep,
    );
    const addr = server.address();
    const bound: Endpoint = { kind: 'vsock', cid: ep.cid, port: addr?.port ?? ep.port };
    server.on('error', () => {});
    return {
      endpoint: bound,
      close: () => closeServer(server),
    };
  }
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) =>
    onConnection(s),
  );
  if (ep.kind === 'unix') {
    await unlinkStaleUnixSocket(ep.path);
    await waitListening(
      server,
      (cb) => server.listen({ path: ep.path, backlog: options.backlog ?? 511 }, cb),
      ep,
    );
  } else {
    await waitListening(
      server,
      (cb) => server.listen({ host: ep.host, port: ep.port, backlog: options.backlog ?? 511 }, cb),
      ep,
    );
  }
  const addr = server.address();
  const bound: Endpoint =
    ep.kind === 'tcp' && addr && typeof addr === 'object'
      ? { kind: 'tcp', host: ep.host, port: addr.port }
      : ep;
  server.on('error', () => {});
  return {
    endpoint: bound,
    close: () => closeServer(server),
  };
}

/**
 * Stops accepting. The listening socket is closed at once; server.close()'s callback would also
 * wait for every accepted connection, which is the route's business (drain), so do not wait for it.
 */
function closeServer(server: net.Server | VsockServerLike): Promise<void> {
  return new Promise((resolve) => {
    try {
      server.close(() => {});
    } catch {
      // already closed
    }
    setImmediate(resolve);
  });
}

export interface DialOptions {
  signal?: AbortSignal;
  /** Per-attempt connect timeout in ms (0 = none). */
  timeoutMs?: number;
  vsock?: VsockOptions;
  /** Checked against the name and every resolved address before any connect (TCP only). */
  policy?: Policy;
  resolver?: Resolver;
  /** Who the dial is for (`vm(16)`, `10.0.0.5`): the key of the resolver's per-peer lookup cap. */
  peer?: string;
}

function abortError(signal: AbortSignal, address: string): ProxyError {
  return new ProxyError('ERR_PROXY_ABORTED', `Dialling ${address} was aborted.`, {
    cause: signal.reason,
    address,
  });
}

/** Waits for `socket` to connect, with timeout and abort; destroys it on failure. */
export function awaitConnect(
  socket: net.Socket,
  address: string,
  timeoutMs: number | undefined,
  signal: AbortSignal | undefined,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const cleanup = () => {
      if (timer) clearTimeout(timer);
      socket.removeListener('connect', onConnect);
      socket.removeListener('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: Error) => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err: Error) => fail(socketError(err, address, 'Connecting to'));
    const onAbort = () => fail(abortError(signal as AbortSignal, address));
    if (signal?.aborted) return onAbort();
    socket.once('connect', onConnect);
    socket.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (timeoutMs && timeoutMs > 0) {
      timer = setTimeout(
        () =>
          fail(
            new ProxyError(
              'ERR_PROXY_DIAL_TIMEOUT',
              `Connecting to ${address} timed out after ${timeoutMs} ms; check that it listens or raise connectTimeoutMs.`,
              { address, syscall: 'connect' },
            ),
          ),
        timeoutMs,
      );
    }
  });
}

let defaultResolver: Resolver | undefined;
function sharedResolver(): Resolver {
  defaultResolver ??= createResolver();
  return defaultResolver;
}

/** The policy's refusal; the message (what a gateway sends the client) never holds a resolved address. */
function refusal(
  decision: { code: string; reason: string; rule?: string; address?: string },
  shown: string,
) {
  return new ProxyError(
    decision.code,
    `Connection to ${shown} refused by policy: ${decision.reason}.`,
    {
      address: shown,
      details: {
        reason: decision.reason,
        ...(decision.rule ? { rule: decision.rule } : {}),
        // for the parent's log only
        ...(decision.address ? { resolved: decision.address } : {}),
      },
    },
  );
}

/**
 * A connect failure for a requested NAME, worded without the address it resolved to (that one
 * goes to `details.dialled`, for the parent's log): a gateway sends this message to the enclave.
 */
function nameDialError(err: unknown, shown: string, dialled: string): unknown {
  if (!(err instanceof ProxyError) || err.code === 'ERR_PROXY_ABORTED') return err;
  const timeout = err.code === 'ERR_PROXY_DIAL_TIMEOUT'; // its message names `shown` already
  return new ProxyError(
    err.code,
    timeout ? err.message : `Connecting to ${shown} failed: ${err.code}.`,
    {
      cause: err.cause ?? err,
      address: shown,
      ...(err.syscall ? { syscall: err.syscall } : {}),
      details: { dialled },
    },
  );
}

/**
 * Dials a TCP `host:port`: checks the policy on the name, resolves (IP literals, including the
 * inet_aton forms getaddrinfo reads as numbers, skip DNS), canonicalises every address
 * (canonicalAddress) and checks exactly that form against the policy, then connects to that same
 * canonical text, trying the addresses in order. An unspecified address (0.0.0.0/8, `::`, also
 * embedded in a mapped/compatible/NAT64 spelling) is never dialled, with or without a policy.
 */
export async function dialTcp(
  host: string,
  port: number,
  options: DialOptions = {},
): Promise<net.Socket> {
  const name = normalizeHost(host);
  const literal = parseNumericHost(name);
  const shown = formatHostPort(name, port);
  if (options.policy) {
    const pre = options.policy.precheck(name, port);
    if (pre && !pre.allowed) throw refusal(pre, shown);
  }
  const resolver = options.resolver ?? sharedResolver();
  // a numeric host goes to the resolver in canonical form, so it never becomes a DNS query
  const query = literal ? formatIp(literal) : name;
  const addresses = await resolver.resolve(query, options.peer ? { peer: options.peer } : {});
  if (options.signal?.aborted) throw abortError(options.signal, shown);
  // The one canonicalisation: what the policy and the unspecified check see is what is dialled.
  const targets: CanonicalAddress[] = [];
  for (const a of addresses) {
    const dest = canonicalAddress(a.address);
    if (!dest) {
      throw new ProxyError(
        'ERR_PROXY_DNS',
        `Resolving ${name} returned something that is not an IP address.`,
        { address: shown, syscall: 'getaddrinfo', details: { resolved: a.address } },
      );
    }
    const asked = literal ? undefined : name;
    const decision = options.policy
      ? options.policy.checkAddress(asked, dest.text, port)
      : unspecifiedRefusal(asked, dest);
    if (decision && !decision.allowed) throw refusal(decision, shown);
    targets.push(dest);
  }
  if (targets.length === 0) {
    throw new ProxyError('ERR_PROXY_DNS', `Resolving ${name} returned no address.`, {
      address: shown,
      syscall: 'getaddrinfo',
    });
  }
  let lastError: unknown;
  for (const dest of targets) {
    const addr = formatHostPort(dest.text, port);
    try {
      // an IP literal: net.connect does no lookup of its own, so this text is what connect() gets
      const socket = net.connect({
        host: dest.text,
        family: dest.family,
        port,
        allowHalfOpen: true,
        noDelay: true,
      });
      // a name's errors are labelled with the name, not the address it resolved to
      return await awaitConnect(socket, literal ? addr : shown, options.timeoutMs, options.signal);
    } catch (err) {
      if (options.signal?.aborted) throw err;
      lastError = literal ? err : nameDialError(err, shown, addr);
    }
  }
  if (targets.length > 1) {
    const e =
      lastError instanceof ProxyError ? lastError : socketError(lastError, shown, 'Connecting to');
    throw new ProxyError(
      e.code,
      `Connecting to ${shown} failed on every address it resolves to; last: ${errorMessage(lastError)}`,
      {
        cause: lastError,
        address: shown,
        ...(e.syscall ? { syscall: e.syscall } : {}),
        details: { dialled: targets.map((t) => t.text) },
      },
    );
  }
  throw lastError;
}

/**
 * For a fixed TCP target that is an IP literal, dialled without a policy through the default
 * resolver: what dialTcp would do for it (canonical address, no DNS, Nagle off), decided once, so
 * a route pays only the connect per connection. Undefined when the target needs dialTcp (a name,
 * or an unspecified address, which dialTcp refuses with its error).
 */
export function literalTcpDialer(
  host: string,
  port: number,
): ((options: DialOptions) => Promise<net.Socket>) | undefined {
  const literal = parseNumericHost(normalizeHost(host));
  const dest = literal ? canonicalAddress(literal) : undefined;
  if (!dest || dest.unspecified) return undefined;
  const addr = formatHostPort(dest.text, port);
  const { text, family } = dest;
  return (options) =>
    awaitConnect(
      net.connect({ host: text, family, port, allowHalfOpen: true, noDelay: true }),
      addr,
      options.timeoutMs,
      options.signal,
    );
}

/** Dials any endpoint once (no retries). */
export async function dialEndpoint(ep: Endpoint, options: DialOptions = {}): Promise<ProxySocket> {
  if (ep.kind === 'tcp') return dialTcp(ep.host, ep.port, options);
  const shown = describeEndpoint(ep);
  if (ep.kind === 'unix') {
    return awaitConnect(
      net.connect({ path: ep.path, allowHalfOpen: true }),
      shown,
      options.timeoutMs,
      options.signal,
    );
  }
  const api = await loadVsock(options.vsock);
  let created: net.Socket;
  try {
    created = api.connect({
      cid: ep.cid,
      port: ep.port,
      allowHalfOpen: true,
      ...(options.timeoutMs ? { connectTimeout: options.timeoutMs } : {}),
      ...(options.vsock?.transport !== undefined ? { transport: options.vsock.transport } : {}),
    });
  } catch (err) {
    throw socketError(err, shown, 'Connecting to');
  }
  if (!created.connecting && !created.destroyed && created.readyState === 'open') return created;
  // the vsock kernel timeout covers the connect; ours is a second guard (+ abort)
  return awaitConnect(
    created,
    shown,
    options.timeoutMs ? options.timeoutMs + 1000 : undefined,
    options.signal,
  );
}
