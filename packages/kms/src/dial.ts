// The dial seam: an HTTP request handler for @aws-sdk/client-kms whose agents open their
// connections through a user-supplied dialer (vsock, the egress gateway, plain TCP), with TLS
// run over the dialled socket for https endpoints (end to end: the carrier sees ciphertext).
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { KmsError } from './errors.js';

/** Where the HTTP client wants to go; the dialer decides how to get there. */
export interface DialTarget {
  host: string;
  port: number;
  signal?: AbortSignal;
}

/** Opens a byte stream towards `target` (a vsock/TCP/Unix/egress-gateway socket). */
export type KmsDialer = (target: DialTarget) => Promise<Socket>;

export interface DialingRequestHandlerOptions {
  /** The dialer every connection goes through. */
  connect: KmsDialer;
  /** Extra trusted CA certificates (PEM) for https endpoints, e.g. a development CA. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** TLS server name (SNI and certificate check). Default: the endpoint's host name. */
  servername?: string;
  /** Keep connections alive between requests (default true). */
  keepAlive?: boolean;
  /** Milliseconds to wait for a response (passed to NodeHttpHandler; default none). */
  requestTimeout?: number;
}

type CreateConnectionCallback = (err: Error | null, stream: Duplex) => void;

interface AgentConnectOptions {
  host?: string | null;
  hostname?: string | null;
  port?: number | string | null;
  servername?: string;
  signal?: AbortSignal;
}

function targetOf(options: AgentConnectOptions, defaultPort: number): DialTarget {
  const host = String(options.hostname ?? options.host ?? 'localhost').replace(/^\[(.*)\]$/, '$1');
  const port = Number(options.port ?? defaultPort);
  return options.signal ? { host, port, signal: options.signal } : { host, port };
}

function dialFailed(target: DialTarget, err: unknown): Error {
  if (err instanceof Error && typeof (err as { code?: unknown }).code === 'string') return err;
  return new KmsError(
    'ERR_KMS_DIAL',
    `the KMS dialer failed to open a connection to ${target.host}:${target.port}: check the connect option (gateway, vsock port) is reachable.`,
    { cause: err, syscall: 'connect', address: `${target.host}:${target.port}` },
  );
}

function dial(
  opts: DialingRequestHandlerOptions,
  target: DialTarget,
  secure: boolean,
  callback: CreateConnectionCallback,
): void {
  let p: Promise<Socket>;
  try {
    p = Promise.resolve(opts.connect(target));
  } catch (err) {
    p = Promise.reject(err);
  }
  p.then(
    (socket) => {
      if (!secure) {
        callback(null, socket);
        return;
      }
      const servername = opts.servername ?? target.host;
      // SNI only for names; `host` makes the certificate check use the endpoint's own
      // name or IP literal instead of tls.connect's default of "localhost".
      const tls = tlsConnect({
        socket,
        host: servername,
        ...(isIP(servername) ? {} : { servername }),
        ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
        ALPNProtocols: ['http/1.1'],
      });
      const onError = (err: Error): void => {
        tls.removeListener('secureConnect', onSecure);
        socket.destroy();
        callback(err, tls);
      };
      const onSecure = (): void => {
        tls.removeListener('error', onError);
        callback(null, tls);
      };
      tls.once('error', onError);
      tls.once('secureConnect', onSecure);
    },
    (err: unknown) => callback(dialFailed(target, err), undefined as unknown as Duplex),
  );
}

class DialingHttpAgent extends HttpAgent {
  readonly #opts: DialingRequestHandlerOptions;
  constructor(opts: DialingRequestHandlerOptions) {
    super({ keepAlive: opts.keepAlive ?? true });
    this.#opts = opts;
  }
  override createConnection(
    options: AgentConnectOptions,
    callback?: CreateConnectionCallback,
  ): undefined {
    dial(this.#opts, targetOf(options, 80), false, callback ?? (() => {}));
    return undefined;
  }
}

class DialingHttpsAgent extends HttpsAgent {
  readonly #opts: DialingRequestHandlerOptions;
  constructor(opts: DialingRequestHandlerOptions) {
    super({ keepAlive: opts.keepAlive ?? true });
    this.#opts = opts;
  }
  override createConnection(
    options: AgentConnectOptions,
    callback?: CreateConnectionCallback,
  ): undefined {
    dial(this.#opts, targetOf(options, 443), true, callback ?? (() => {}));
    return undefined;
  }
}

/**
 * A `requestHandler` for `new KMSClient({ requestHandler })` that dials every connection with
 * `options.connect` (TLS over the returned socket for https endpoints).
 */
export function createDialingRequestHandler(
  options: DialingRequestHandlerOptions,
): NodeHttpHandler {
  if (typeof options?.connect !== 'function') {
    throw new KmsError(
      'ERR_KMS_INVALID_ARGUMENT',
      'connect must be a function (target: { host, port, signal? }) => Promise<net.Socket>, e.g. a vsock or egress-gateway dialer.',
    );
  }
  return new NodeHttpHandler({
    httpAgent: new DialingHttpAgent(options),
    httpsAgent: new DialingHttpsAgent(options),
    ...(options.requestTimeout !== undefined ? { requestTimeout: options.requestTimeout } : {}),
  });
}
