// The local attested KMS: an HTTP(S) server speaking the KMS JSON 1.1 protocol.
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { OPERATIONS, type OpEnv, type VerifiedRecipient } from './ops.js';
import { type LocalKmsCredential, verifySigV4 } from './sigv4.js';
import type { KeyStore } from './store.js';
import { KmsWireError, wire } from './wire-error.js';

/** pino-compatible logger; the local KMS logs one line per request at debug/info. */
export interface LocalKmsLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface ServerDeps {
  store: KeyStore;
  region: string;
  accountId: string;
  credentials: ReadonlyMap<string, LocalKmsCredential>;
  maxClockSkewMs: number;
  logger: LocalKmsLogger | undefined;
  tls: { key: string | Buffer; cert: string | Buffer } | undefined;
  verifyRecipient(doc: Uint8Array): Promise<VerifiedRecipient>;
  encryptForRecipient(plaintext: Uint8Array, spki: Uint8Array): Promise<Uint8Array>;
}

const MAX_BODY = 1024 * 1024;
/**
 * An oversized body is read and discarded up to this much, so the client gets its
 * ValidationException instead of a reset; beyond it the connection is closed after the answer.
 */
const MAX_DISCARD = 16 * 1024 * 1024;

function tooLarge(): KmsWireError {
  return wire(
    'ValidationException',
    `Request body is larger than ${MAX_BODY} bytes; KMS requests are at most 1 MiB.`,
  );
}

function readBody(req: IncomingMessage, res: ServerResponse): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > MAX_DISCARD) {
      // Not worth reading: answer now and close the connection after the answer.
      res.shouldKeepAlive = false;
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (over) {
        if (size > MAX_DISCARD) {
          // still sending: answer and close instead of reading on
          req.pause();
          res.shouldKeepAlive = false;
          req.removeAllListeners('data');
          reject(tooLarge());
        }
        return;
      }
      if (size > MAX_BODY) {
        over = true; // keep reading, discard, answer at the end
        chunks.length = 0;
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => (over ? reject(tooLarge()) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: object, errorType?: string): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = {
    'content-type': 'application/x-amz-json-1.1',
    'content-length': Buffer.byteLength(text),
    'x-amzn-requestid': crypto.randomUUID(),
  };
  if (errorType) headers['x-amzn-errortype'] = errorType;
  res.writeHead(status, headers);
  res.end(text);
}

async function handle(
  deps: ServerDeps,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<{ op: string; out: object }> {
  const body = await readBody(req, res);
  if (req.method !== 'POST') {
    throw wire(
      'UnknownOperationException',
      `Method ${req.method} is not supported; KMS takes POST / with X-Amz-Target.`,
    );
  }
  const target = req.headers['x-amz-target'];
  const m = typeof target === 'string' ? /^TrentService\.([A-Za-z]+)$/.exec(target) : null;
  const op = m?.[1];
  const fn = op ? OPERATIONS[op] : undefined;
  if (!op || !fn) {
    throw wire(
      'UnknownOperationException',
      `X-Amz-Target '${String(target)}' is not an operation of this local KMS; supported: ${Object.keys(
        OPERATIONS,
      )
        .map((o) => `TrentService.${o}`)
        .join(', ')}.`,
    );
  }
  const cred = await verifySigV4(
    { method: req.method, url: req.url ?? '/', headers: req.headers, body },
    {
      region: deps.region,
      credentials: deps.credentials,
      maxSkewMs: deps.maxClockSkewMs,
      now: new Date(),
    },
  );
  let input: unknown;
  try {
    input = body.length === 0 ? {} : JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw wire('SerializationException', 'The request body is not valid JSON.', err);
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw wire('SerializationException', 'The request body must be a JSON object.');
  }
  const env: OpEnv = {
    store: deps.store,
    accountId: deps.accountId,
    region: deps.region,
    principalArn: cred.principal ?? `arn:aws:iam::${deps.accountId}:user/${cred.accessKeyId}`,
    verifyRecipient: deps.verifyRecipient,
    encryptForRecipient: deps.encryptForRecipient,
  };
  return { op, out: await fn(env, input as Record<string, unknown>) };
}

export function createKmsHttpServer(deps: ServerDeps): Server {
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    const started = process.hrtime.bigint();
    handle(deps, req, res).then(
      ({ op, out }) => {
        send(res, 200, out);
        deps.logger?.debug(
          { op, status: 200, ms: Number(process.hrtime.bigint() - started) / 1e6 },
          'kms request',
        );
      },
      (err: unknown) => {
        const e =
          err instanceof KmsWireError
            ? err
            : wire('KMSInternalException', 'The local KMS failed internally; see its log.', err);
        if (!(err instanceof KmsWireError)) deps.logger?.error({ err }, 'kms internal error');
        send(res, e.status, e.toJSON(), e.type);
        deps.logger?.info(
          {
            target: req.headers['x-amz-target'],
            status: e.status,
            error: e.type,
            reason: e.message,
          },
          'kms request refused',
        );
      },
    );
  };
  return deps.tls
    ? createHttpsServer({ key: deps.tls.key, cert: deps.tls.cert }, listener)
    : createHttpServer(listener);
}

export function endpointOf(server: Server, tls: boolean): string {
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return `${tls ? 'https' : 'http'}://${host}:${a.port}`;
}
