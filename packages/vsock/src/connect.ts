import { createRequire } from 'node:module';
import type tls from 'node:tls';
import { formatVsockAddress, parseVsockAddress, validateU32 } from './address.js';
import { abortError, invalidArgType, outOfRange } from './errors.js';
import { defaultTransport } from './select.js';
import type { VsockSocket } from './socket.js';
import { asImpl, type VsockTransport } from './transport.js';

/** Options of {@link connect}. */
export interface VsockConnectOptions {
  /** CID of the peer (u32), e.g. CID_PARENT (3) from an enclave or the enclave CID from the parent. */
  cid: number;
  /** Port of the peer (u32). */
  port: number;
  /** Idle timeout in ms, as net.Socket#setTimeout: emits 'timeout', does not close. */
  timeout?: number;
  /**
   * Connect timeout in ms: the connect fails with ETIMEDOUT after it (kernel:
   * SO_VM_SOCKETS_CONNECT_TIMEOUT; the kernel default is 2 s).
   */
  connectTimeout?: number;
  /** Destroys the socket with an ABORT_ERR error when aborted. */
  signal?: AbortSignal;
  /** Keep the writable side open after the peer ends. Default false. */
  allowHalfOpen?: boolean;
  /** Transport; default {@link defaultTransport}(). */
  transport?: VsockTransport;
}

function validateMs(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isFinite(value) || value < 0 || value > 2 ** 31 - 1) {
    throw outOfRange(name, 'a number of milliseconds >= 0 and < 2^31', value);
  }
  return value;
}

/**
 * Opens a vsock stream: `connect({ cid, port }, onConnect?)` or `connect('vsock://16:5000')`.
 * Returns a {@link VsockSocket} at once; 'connect' follows, or 'error' with a VsockError
 * (ECONNREFUSED, ETIMEDOUT, EAFNOSUPPORT, ...). Bad arguments throw synchronously.
 */
export function connect(
  options: VsockConnectOptions | string,
  onConnect?: () => void,
): VsockSocket {
  const opts: VsockConnectOptions =
    typeof options === 'string' ? parseVsockAddress(options) : options;
  if (typeof opts !== 'object' || opts === null) {
    throw invalidArgType('options', 'an object { cid, port } or a "cid:port" string', options);
  }
  const cid = validateU32(opts.cid, 'options.cid');
  const port = validateU32(opts.port, 'options.port');
  const timeout = validateMs(opts.timeout, 'options.timeout');
  const connectTimeout = validateMs(opts.connectTimeout, 'options.connectTimeout');
  if (onConnect !== undefined && typeof onConnect !== 'function') {
    throw invalidArgType('onConnect', 'a function', onConnect);
  }
  const signal = opts.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalidArgType('options.signal', 'an AbortSignal', signal);
  }
  const transport = asImpl(opts.transport ?? defaultTransport(), 'options.transport');
  const socket = transport.connect({
    cid,
    port,
    allowHalfOpen: Boolean(opts.allowHalfOpen),
    ...(connectTimeout === undefined ? {} : { connectTimeout }),
  });
  if (timeout !== undefined) socket.setTimeout(timeout);
  if (onConnect) socket.once('connect', onConnect);
  if (signal) {
    const address = formatVsockAddress({ cid, port });
    const onAbort = () => socket.destroy(abortError('connect', address, signal.reason));
    if (signal.aborted) process.nextTick(onAbort);
    else {
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once('close', () => signal.removeEventListener('abort', onAbort));
    }
  }
  return socket;
}

/** Alias of {@link connect}, as in `net`. */
export const createConnection = connect;

/** Options of {@link vsockDialer}. */
export interface VsockDialerOptions {
  cid: number;
  port: number;
  connectTimeout?: number;
  transport?: VsockTransport;
  /**
   * TLS options used when undici asks for an `https:` origin (the dialer then runs TLS over
   * the vsock stream, with `servername` from the request unless given here).
   */
  tls?: tls.ConnectionOptions;
}

/**
 * What undici (`buildConnector.Options`) and node:http (`ClientRequestArgs`) pass to a connect
 * function: only `protocol`, `hostname` and `servername` are read. Every field takes `null` and
 * `undefined` so both shapes are accepted in strict mode (with `exactOptionalPropertyTypes`).
 */
export interface DialRequest {
  protocol?: string | null | undefined;
  hostname?: string | null | undefined;
  servername?: string | null | undefined;
}

/** The socket a dialer hands out: the vsock stream, or TLS over it for `https:` origins. */
export type DialedSocket = VsockSocket | tls.TLSSocket;

/** undici's connect callback (`buildConnector.Callback`): `(null, socket)` or `(err, null)`. */
export type UndiciConnectCallback = (
  ...args: [err: null, socket: DialedSocket] | [err: Error, socket: null]
) => void;

/** node:http's `createConnection` callback (`oncreate`). */
export type HttpConnectCallback = (err: Error | null, socket: DialedSocket) => void;

/**
 * A dial function with three uses:
 * - undici: `new Agent({ connect: dialer })` (called as `(opts, cb)`, calls `cb(err, socket)`);
 * - node:http: `http.request({ createConnection: dialer })` / an Agent's `createConnection`
 *   (returns the socket at once);
 * - the toolkit's Dialer seam: `await dialer.dial()` resolves once connected.
 */
export interface VsockDialer {
  /** undici's `connect` option. */
  (request: DialRequest, cb: UndiciConnectCallback): DialedSocket;
  /** node:http's `createConnection` (request option or Agent method); or a bare call. */
  (request?: DialRequest, cb?: HttpConnectCallback): DialedSocket;
  /** Connects and resolves with the socket once 'connect' fired. */
  dial(options?: { signal?: AbortSignal | undefined }): Promise<VsockSocket>;
}

/**
 * node:tls, loaded on the first https: dial: it is ~5 MiB of a process's memory (OpenSSL
 * contexts, the module graph), and a vsock process that never speaks TLS over vsock (every
 * proxy: TLS passes through them end to end) should not pay it.
 */
let tlsModule: typeof tls | undefined;
function loadTls(): typeof tls {
  // a builtin resolves from any require (import.meta.url is not there in the CJS build)
  tlsModule ??= createRequire(`${process.cwd()}/`)('node:tls') as typeof tls;
  return tlsModule;
}

/** Builds a {@link VsockDialer} to one vsock address. */
export function vsockDialer(options: VsockDialerOptions): VsockDialer {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgType('options', 'an object { cid, port }', options);
  }
  const base = {
    cid: validateU32(options.cid, 'options.cid'),
    port: validateU32(options.port, 'options.port'),
    ...(options.connectTimeout === undefined
      ? {}
      : { connectTimeout: validateMs(options.connectTimeout, 'options.connectTimeout') }),
    transport: options.transport ?? defaultTransport(),
  };
  asImpl(base.transport, 'options.transport');
  const dialer = ((
    request?: DialRequest,
    cb?: (err: Error | null, socket: DialedSocket | null) => void,
  ) => {
    const raw = connect(base);
    let socket: DialedSocket = raw;
    let readyEvent = 'connect';
    if (request?.protocol === 'https:') {
      const servername = options.tls?.servername ?? request.servername ?? request.hostname;
      socket = loadTls().connect({
        ...options.tls,
        socket: raw,
        ...(servername ? { servername } : {}),
      });
      readyEvent = 'secureConnect';
    }
    if (typeof cb === 'function') {
      const s = socket;
      const onReady = () => {
        s.off('error', onError);
        cb(null, s);
      };
      const onError = (err: Error) => {
        s.off(readyEvent, onReady);
        cb(err, null);
      };
      s.once(readyEvent, onReady);
      s.once('error', onError);
    }
    return socket;
  }) as VsockDialer;
  dialer.dial = ({ signal } = {}) =>
    new Promise<VsockSocket>((resolve, reject) => {
      const s = connect({ ...base, ...(signal ? { signal } : {}) });
      const onError = (err: Error) => reject(err);
      s.once('error', onError);
      s.once('connect', () => {
        s.off('error', onError);
        resolve(s);
      });
    });
  return dialer;
}

/** This machine's CID from the transport (kernel: ioctl on /dev/vsock; synchronous). */
export function localCid(options: { transport?: VsockTransport } = {}): number {
  return asImpl(options.transport ?? defaultTransport(), 'options.transport').localCid();
}
