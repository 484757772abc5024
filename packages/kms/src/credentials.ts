// Credentials for the enclave: the parent serves the instance's AWS credentials (any AWS SDK
// provider; default the node provider chain, i.e. IMDSv2 role credentials on EC2) over a vsock
// port, one JSON answer per connection, to the peer CIDs it allows; the enclave reads them with
// fromParentInstance().
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';
import {
  CID_ANY,
  CID_PARENT,
  createServer,
  formatVsockAddress,
  type VsockServer,
  type VsockSocket,
  type VsockTransport,
  connect as vsockConnect,
} from '@enclave-extras/vsock';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import type { KmsLogger } from './attested.js';
import { KmsError } from './errors.js';

/** The JSON one connection answers with. */
export interface RelayedCredentials {
  Version: 1;
  AccessKeyId: string;
  SecretAccessKey: string;
  SessionToken?: string;
  /** ISO 8601. */
  Expiration?: string;
  Region?: string;
}

interface RelayedError {
  Version: 1;
  Error: { Code: string; Message: string };
}

export interface CredentialsRelayOptions {
  /** Any AWS SDK credential provider. Default `fromNodeProviderChain()` (env, profile, IMDSv2 role ...). */
  provider?: AwsCredentialIdentityProvider;
  /** Where to listen: a vsock port (cid default CID_ANY). */
  listen: { port: number; cid?: number };
  /**
   * Peer CIDs that get credentials: the CIDs of your enclaves (`nitro-cli run-enclave
   * --enclave-cid N`). Required; `'any'` serves every peer that reaches the port (an explicit
   * opt-in). Other peers are answered a `PeerNotAllowed` error, logged, and get nothing.
   */
  allowCids: readonly number[] | 'any';
  /**
   * A connection is closed this long after it was accepted, answered or not, so a client that
   * stops reading (or a slow provider) does not hold a descriptor (default 5000 ms).
   */
  connectionTimeoutMs?: number;
  /** vsock transport (kernel or emulation); default the vsock package's default. */
  transport?: VsockTransport;
  /** Region to hand to the enclave with the credentials. */
  region?: string;
  /** Fetch new credentials when the cached ones expire within this (default 5 min). */
  refreshBeforeExpiryMs?: number;
  /**
   * Credentials are also fetched in the background when they enter the refresh window, so an
   * enclave never waits on IMDS; this is the shortest gap between background fetches (default 10 s).
   */
  minRefreshIntervalMs?: number;
  /** Logs every hand-out (info), refusal and timeout (warn) with the peer as `vm(16):1234`. */
  logger?: KmsLogger;
}

export interface CredentialsRelay {
  /** `vm(cid):port` as listened on. */
  readonly address: string;
  readonly server: VsockServer;
  /** How many connections were answered with credentials. */
  readonly served: number;
  /** How many connections were refused because their peer CID is not allowed. */
  readonly refused: number;
  /** How many connections were closed by `connectionTimeoutMs`. */
  readonly timedOut: number;
  /** Stops listening and closes the connections still open. */
  close(): Promise<void>;
}

const silent: KmsLogger = { debug() {}, info() {}, warn() {}, error() {} };

function invalid(message: string): KmsError {
  return new KmsError('ERR_KMS_INVALID_ARGUMENT', message);
}

function checkAllowCids(value: unknown): ReadonlySet<number> | 'any' {
  if (value === 'any') return 'any';
  if (!Array.isArray(value)) {
    throw invalid(
      `allowCids is ${value === undefined ? 'missing' : JSON.stringify(value)}: pass the CIDs of the enclaves that may fetch credentials (nitro-cli run-enclave --enclave-cid), or 'any' to serve every peer.`,
    );
  }
  if (value.length === 0) {
    throw invalid(
      "allowCids is empty: nobody could fetch credentials; pass the enclave CIDs, or 'any' to serve every peer.",
    );
  }
  for (const [i, cid] of value.entries()) {
    if (!Number.isInteger(cid) || cid < 0 || cid >= CID_ANY) {
      throw invalid(
        `allowCids[${i}] is ${JSON.stringify(cid)}: a peer CID is an integer from 0 to ${CID_ANY - 1} (for every peer pass allowCids: 'any').`,
      );
    }
  }
  return new Set(value as number[]);
}

/** Serves credentials from `provider` over vsock, one JSON object per connection. */
export async function createCredentialsRelay(
  options: CredentialsRelayOptions,
): Promise<CredentialsRelay> {
  const port = options?.listen?.port;
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) {
    throw invalid(`listen.port is ${String(port)}: pass a vsock port (u32).`);
  }
  const allowed = checkAllowCids(options.allowCids);
  const timeoutMs = options.connectionTimeoutMs ?? 5000;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 0x7fffffff) {
    throw invalid(
      `connectionTimeoutMs is ${String(timeoutMs)}: pass a whole number of milliseconds from 1 to ${0x7fffffff}.`,
    );
  }
  const provider = options.provider ?? fromNodeProviderChain();
  const logger = options.logger ?? silent;
  const refreshBefore = options.refreshBeforeExpiryMs ?? 5 * 60_000;
  let cached: AwsCredentialIdentity | undefined;
  let pending: Promise<AwsCredentialIdentity> | undefined;
  const minInterval = options.minRefreshIntervalMs ?? 10_000;
  let served = 0;
  let refused = 0;
  let timedOut = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const open = new Set<VsockSocket>();

  const schedule = (c: AwsCredentialIdentity | undefined): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (closed) return;
    const exp = c?.expiration?.getTime();
    if (c && exp === undefined) return; // static credentials: nothing to refresh
    const due = exp === undefined ? minInterval : exp - refreshBefore - Date.now();
    timer = setTimeout(
      () => {
        fetchNow().catch((err: unknown) => {
          logger.warn({ err }, 'kms: background credentials refresh failed; will retry');
          schedule(undefined);
        });
      },
      Math.max(due, minInterval),
    );
    timer.unref();
  };

  const fetchNow = (): Promise<AwsCredentialIdentity> => {
    if (!pending) {
      pending = Promise.resolve(provider())
        .then((c) => {
          cached = c;
          schedule(c);
          logger.info(
            { expiration: c.expiration?.toISOString() },
            'kms: credentials fetched for the enclave',
          );
          return c;
        })
        .finally(() => {
          pending = undefined;
        });
    }
    return pending;
  };

  const current = async (): Promise<AwsCredentialIdentity> => {
    const exp = cached?.expiration?.getTime();
    if (cached && (exp === undefined || exp - Date.now() > refreshBefore)) return cached;
    try {
      return await fetchNow();
    } catch (err) {
      // still valid (inside the refresh window only): better than no credentials
      if (cached && exp !== undefined && exp > Date.now()) {
        logger.warn({ err }, 'kms: credentials refresh failed; serving the still-valid ones');
        return cached;
      }
      throw err;
    }
  };

  const answer = async (socket: VsockSocket, peer: string): Promise<void> => {
    let body: RelayedCredentials | RelayedError;
    try {
      const c = await current();
      body = { Version: 1, AccessKeyId: c.accessKeyId, SecretAccessKey: c.secretAccessKey };
      if (c.sessionToken) body.SessionToken = c.sessionToken;
      if (c.expiration) body.Expiration = c.expiration.toISOString();
      if (options.region) body.Region = options.region;
    } catch (err) {
      logger.error({ err, peer }, 'kms: credentials provider failed');
      body = {
        Version: 1,
        Error: {
          Code: (err as { name?: string })?.name ?? 'Error',
          Message: (err as Error)?.message ?? String(err),
        },
      };
    }
    if (socket.destroyed) return; // timed out or closed meanwhile: nothing was handed out
    socket.end(`${JSON.stringify(body)}\n`);
    if ('AccessKeyId' in body) {
      served++;
      logger.info(
        { peer, accessKeyId: body.AccessKeyId, expiration: body.Expiration },
        'kms: credentials handed out',
      );
    }
  };

  const server = createServer(
    options.transport ? { transport: options.transport } : {},
    (socket) => {
      const cid = socket.remoteCid;
      const peer = socket.remoteVsockAddress ?? `an unknown peer (cid ${String(cid)})`;
      open.add(socket);
      const deadline = setTimeout(() => {
        timedOut++;
        logger.warn(
          { peer, timeoutMs },
          'kms: credentials relay connection closed: still open after connectionTimeoutMs',
        );
        socket.destroy();
      }, timeoutMs);
      deadline.unref();
      socket.once('close', () => {
        clearTimeout(deadline);
        open.delete(socket);
      });
      socket.on('error', (err) =>
        logger.warn({ err, peer }, 'kms: credentials relay connection failed'),
      );
      socket.resume(); // the protocol has no request: whatever the peer sends is discarded
      if (allowed !== 'any' && (cid === undefined || !allowed.has(cid))) {
        refused++;
        logger.warn(
          { peer, allowCids: [...allowed] },
          'kms: credentials refused: the peer CID is not in the allow list',
        );
        const body: RelayedError = {
          Version: 1,
          Error: {
            Code: 'PeerNotAllowed',
            Message: `${peer} may not fetch credentials: CID ${String(cid)} is not in this relay's allow list (ee-parent credentials-relay --enclave-cid).`,
          },
        };
        socket.end(`${JSON.stringify(body)}\n`);
        return;
      }
      void answer(socket, peer);
    },
  );
  const cid = options.listen.cid;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cid === undefined ? { port } : { port, cid }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'kms: credentials relay server error'));
  const addr = server.address();
  const address = addr ? formatVsockAddress(addr) : `vsock port ${port}`;
  logger.info(
    { address, allowCids: allowed === 'any' ? 'any' : [...allowed], timeoutMs },
    'kms: credentials relay listening',
  );
  return {
    address,
    server,
    get served() {
      return served;
    },
    get refused() {
      return refused;
    },
    get timedOut() {
      return timedOut;
    },
    close: () => {
      closed = true;
      if (timer) clearTimeout(timer);
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of open) s.destroy();
      return done;
    },
  };
}

export interface FromParentInstanceOptions {
  /** vsock port the parent's relay listens on. */
  port: number;
  /** CID of the parent (default 3, the parent as seen from an enclave). */
  cid?: number;
  transport?: VsockTransport;
  /** Give up after this many ms (default 5000). */
  timeoutMs?: number;
}

const MAX_ANSWER = 64 * 1024;

function credentialsError(message: string, cause?: unknown, address?: string): KmsError {
  return new KmsError('ERR_KMS_CREDENTIALS', message, {
    ...(cause === undefined ? {} : { cause }),
    ...(address ? { address } : {}),
  });
}

function readAnswer(opts: FromParentInstanceOptions, address: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const socket = vsockConnect({
      cid: opts.cid ?? CID_PARENT,
      port: opts.port,
      ...(opts.transport ? { transport: opts.transport } : {}),
    });
    const done = (err: Error | undefined, text?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(text ?? '');
    };
    const timer = setTimeout(
      () =>
        done(
          credentialsError(
            `no credentials from the parent at ${address} within ${opts.timeoutMs ?? 5000} ms: is ee-parent's credentials relay running on that port?`,
            undefined,
            address,
          ),
        ),
      opts.timeoutMs ?? 5000,
    );
    socket.on('data', (b: Buffer) => {
      size += b.length;
      if (size > MAX_ANSWER)
        done(
          credentialsError(
            `the answer from ${address} exceeds ${MAX_ANSWER} bytes: not a credentials relay.`,
            undefined,
            address,
          ),
        );
      else chunks.push(b);
    });
    socket.on('end', () => done(undefined, Buffer.concat(chunks).toString('utf8')));
    socket.on('error', (err: Error) => done(err));
  });
}

/**
 * An AWS SDK credential provider reading the credentials the parent instance relays over vsock
 * (`createCredentialsRelay` / `ee-parent`). Use as `new KMSClient({ credentials: fromParentInstance({ port }) })`;
 * the SDK caches them until shortly before `expiration`.
 */
export function fromParentInstance(
  options: FromParentInstanceOptions,
): AwsCredentialIdentityProvider {
  if (!Number.isInteger(options?.port) || options.port < 0 || options.port > 0xffffffff) {
    throw new KmsError(
      'ERR_KMS_INVALID_ARGUMENT',
      `port is ${String(options?.port)}: pass the vsock port of the parent's credentials relay.`,
    );
  }
  const address = formatVsockAddress({ cid: options.cid ?? CID_PARENT, port: options.port });
  return async () => {
    const text = await readAnswer(options, address);
    let body: Partial<RelayedCredentials & RelayedError>;
    try {
      body = JSON.parse(text) as Partial<RelayedCredentials & RelayedError>;
    } catch (err) {
      throw credentialsError(
        `the answer from ${address} is not JSON (${text.length} bytes): is the port that of a credentials relay?`,
        err,
        address,
      );
    }
    if (body?.Error) {
      throw credentialsError(
        `the credentials relay at ${address} answered ${body.Error.Code}: ${body.Error.Message}`,
        undefined,
        address,
      );
    }
    if (
      typeof body?.AccessKeyId !== 'string' ||
      typeof body.SecretAccessKey !== 'string' ||
      body.AccessKeyId === ''
    ) {
      throw credentialsError(
        `the answer from ${address} has no AccessKeyId/SecretAccessKey.`,
        undefined,
        address,
      );
    }
    const creds: { -readonly [K in keyof AwsCredentialIdentity]: AwsCredentialIdentity[K] } = {
      accessKeyId: body.AccessKeyId,
      secretAccessKey: body.SecretAccessKey,
    };
    if (typeof body.SessionToken === 'string') creds.sessionToken = body.SessionToken;
    if (typeof body.Expiration === 'string') {
      const d = new Date(body.Expiration);
      if (Number.isNaN(d.getTime()))
        throw credentialsError(
          `the answer from ${address} has an invalid Expiration.`,
          undefined,
          address,
        );
      creds.expiration = d;
    }
    return creds;
  };
}
