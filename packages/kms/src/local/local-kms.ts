import type { Server } from 'node:http';
import { makeRecipientEncryptor, makeRecipientVerifier, type RecipientRoots } from './attest.js';
import { localError } from './errors.js';
import { createKmsHttpServer, endpointOf, type LocalKmsLogger } from './server.js';
import type { LocalKmsCredential } from './sigv4.js';
import { KeyStore } from './store.js';

export interface LocalKmsOptions {
  /** Directory the keys persist in (created with mode 0700; key files 0600). */
  dataDir: string;
  /**
   * Trusted attestation roots (PEM or DER) for Recipient documents, e.g. the NSM
   * simulator's development root. Without roots, requests carrying Recipient are refused.
   */
  roots?: RecipientRoots;
  /** Region in ARNs and the SigV4 scope; default `us-east-1`. */
  region?: string;
  /** Account id in ARNs; default `111122223333`. */
  accountId?: string;
  /** Accepted SigV4 credentials (at least one). */
  credentials: LocalKmsCredential[];
  /** Allowed client clock skew; default 5 minutes. */
  maxClockSkewMs?: number;
  /** Oldest accepted attestation document (by its timestamp); default 5 minutes. */
  attestationMaxAgeMs?: number;
  /** Accept debug-mode enclave documents (PCR0-2 all zero); default false. */
  allowDebugEnclaves?: boolean;
  /**
   * INSECURE, local development only; default false. Also accept the UNSIGNED attestation
   * documents of QEMU's `nitro-enclave` machine (COSE alg -1, no AWS certificate chain), so an
   * EIF booted locally (@enclave-extras/local-enclave) can use attested calls. Nothing
   * authenticates such a document: anyone who reaches this KMS can claim any PCRs. Each accepted
   * document is logged as a warning. Never set it for a KMS holding real secrets.
   */
  insecureAcceptUnsignedQemuAttestation?: boolean;
  /** Serve HTTPS with this key and certificate (PEM) instead of HTTP. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  logger?: LocalKmsLogger;
}

export interface LocalKmsListenOptions {
  /** Default 0 (an ephemeral port). */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
}

export interface LocalKms {
  /** The underlying node server (http or https). */
  readonly server: Server;
  /** Starts listening; resolves with the endpoint URL for `new KMSClient({ endpoint })`. */
  listen(options?: LocalKmsListenOptions): Promise<string>;
  /** `http(s)://host:port` once listening. */
  readonly endpoint: string;
  /** Stops accepting, closes idle keep-alive connections and waits for the rest. */
  close(): Promise<void>;
}

/** Creates a local KMS serving the KMS JSON 1.1 protocol over HTTP(S). */
export async function createLocalKms(options: LocalKmsOptions): Promise<LocalKms> {
  if (!options || typeof options.dataDir !== 'string' || options.dataDir === '') {
    throw localError(
      'ERR_KMS_LOCAL_CONFIG',
      'createLocalKms: dataDir is required (a directory for the key files).',
    );
  }
  if (!Array.isArray(options.credentials) || options.credentials.length === 0) {
    throw localError(
      'ERR_KMS_LOCAL_CONFIG',
      'createLocalKms: credentials must list at least one { accessKeyId, secretAccessKey } the clients sign with.',
    );
  }
  const credentials = new Map<string, LocalKmsCredential>();
  options.credentials.forEach((c, i) => {
    if (
      typeof c?.accessKeyId !== 'string' ||
      !c.accessKeyId ||
      typeof c.secretAccessKey !== 'string' ||
      !c.secretAccessKey
    ) {
      throw localError(
        'ERR_KMS_LOCAL_CONFIG',
        `createLocalKms: credentials[${i}] needs non-empty accessKeyId and secretAccessKey.`,
      );
    }
    credentials.set(c.accessKeyId, c);
  });
  const region = options.region ?? 'us-east-1';
  if (!/^[a-z0-9-]+$/.test(region)) {
    throw localError(
      'ERR_KMS_LOCAL_CONFIG',
      `createLocalKms: region '${region}' is not a region name like us-east-1.`,
    );
  }
  const accountId = options.accountId ?? '111122223333';
  if (!/^\d{12}$/.test(accountId)) {
    throw localError(
      'ERR_KMS_LOCAL_CONFIG',
      `createLocalKms: accountId '${accountId}' must be 12 digits.`,
    );
  }
  let store: KeyStore;
  try {
    store = await KeyStore.open(options.dataDir);
  } catch (err) {
    throw localError(
      'ERR_KMS_LOCAL_STORE',
      `createLocalKms: cannot open the key store in ${options.dataDir}: ${(err as Error).message}; check the directory and its permissions.`,
      err,
    );
  }
  const tls = options.tls;
  const server = createKmsHttpServer({
    store,
    region,
    accountId,
    credentials,
    maxClockSkewMs: options.maxClockSkewMs ?? 5 * 60_000,
    logger: options.logger,
    tls,
    verifyRecipient: makeRecipientVerifier({
      roots: options.roots,
      maxAgeMs: options.attestationMaxAgeMs ?? 5 * 60_000,
      allowDebug: options.allowDebugEnclaves ?? false,
      insecureAcceptUnsignedQemuAttestation: options.insecureAcceptUnsignedQemuAttestation === true,
      onUnsignedAccepted: (pcr0) =>
        options.logger?.warn(
          { pcr0 },
          'INSECURE: accepted an UNSIGNED QEMU attestation document (insecureAcceptUnsignedQemuAttestation)',
        ),
    }),
    encryptForRecipient: makeRecipientEncryptor(),
  });
  let endpoint = '';
  return {
    server,
    get endpoint() {
      return endpoint;
    },
    listen(opts = {}) {
      return new Promise<string>((resolve, reject) => {
        const onError = (err: NodeJS.ErrnoException) => {
          const addr = `${opts.host ?? '127.0.0.1'}:${opts.port ?? 0}`;
          reject(
            localError(
              err.code ?? 'ERR_KMS_LOCAL_LISTEN',
              `local KMS cannot listen on ${addr}: ${err.message}`,
              err,
              {
                syscall: err.syscall,
                address: addr,
              },
            ),
          );
        };
        server.once('error', onError);
        server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
          server.off('error', onError);
          endpoint = endpointOf(server, tls !== undefined);
          options.logger?.info({ endpoint }, 'local KMS listening');
          if (options.insecureAcceptUnsignedQemuAttestation === true) {
            options.logger?.warn(
              { endpoint },
              'INSECURE DEVELOPMENT MODE: this local KMS accepts UNSIGNED QEMU attestation documents (insecureAcceptUnsignedQemuAttestation); any client can claim any PCRs',
            );
          }
          resolve(endpoint);
        });
      });
    },
    close() {
      return new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        server.closeIdleConnections();
      });
    },
  };
}
