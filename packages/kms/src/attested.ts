// Attestation for the real @aws-sdk/client-kms: a middleware that adds `Recipient` (an
// attestation document carrying an ephemeral RSA-2048 public key) to the operations KMS
// accepts it on, then decrypts `CiphertextForRecipient` into the usual output field.
import { generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import {
  KMSClient,
  type KMSClientConfig,
  type ServiceInputTypes,
  type ServiceOutputTypes,
} from '@aws-sdk/client-kms';
import type {
  InitializeHandler,
  InitializeHandlerArguments,
  InitializeMiddleware,
} from '@smithy/types';
import { decryptCiphertextForRecipient } from './cms.js';
import {
  createDialingRequestHandler,
  type DialingRequestHandlerOptions,
  type KmsDialer,
} from './dial.js';
import { KmsError } from './errors.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** What the client needs from an NSM: `NsmClient` from @enclave-extras/nsm fits (device or simulator). */
export interface AttestationSource {
  getAttestationDocument(request: { publicKey?: Uint8Array | null }): Promise<Uint8Array>;
}

/** pino-compatible logger (default silent). */
export interface KmsLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface AttestationOptions {
  /** The NSM that signs the attestation documents (an `NsmClient`). */
  nsm: AttestationSource;
  /** Age after which the ephemeral RSA key is replaced (default 1 hour). */
  keyRotationMs?: number;
  /** Age after which a new attestation document is requested (default 4 min; KMS refuses > 5 min). */
  documentMaxAgeMs?: number;
  /** Clock (ms since epoch); default Date.now. */
  now?: () => number;
  logger?: KmsLogger;
}

/** The operations that take `Recipient`, and where their attested secret goes. */
export const ATTESTED_OPERATIONS = {
  DecryptCommand: 'Plaintext',
  GenerateDataKeyCommand: 'Plaintext',
  GenerateDataKeyPairCommand: 'PrivateKeyPlaintext',
  GenerateRandomCommand: 'Plaintext',
  DeriveSharedSecretCommand: 'SharedSecret',
} as const;

/** The material one request was sent with. */
export interface RecipientMaterial {
  /** DER SubjectPublicKeyInfo of the ephemeral RSA key (the document's public_key). */
  publicKey: Uint8Array;
  /** The attestation document sent as `Recipient.AttestationDocument`. */
  attestationDocument: Uint8Array;
  keyCreatedAt: number;
  documentCreatedAt: number;
}

interface Material extends RecipientMaterial {
  privateKey: KeyObject;
}

const silent: KmsLogger = { debug() {}, info() {}, warn() {}, error() {} };

function positive(v: number | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new KmsError(
      'ERR_KMS_INVALID_ARGUMENT',
      `${name} is ${String(v)}: pass a positive number of milliseconds.`,
    );
  }
  return v;
}

// The private key never leaves this module: the middleware reaches it through this map.
const materialOf = new WeakMap<AttestationSession, () => Promise<Material>>();

/** Keeps the ephemeral key and a fresh attestation document; one refresh at a time. */
export class AttestationSession {
  readonly #nsm: AttestationSource;
  readonly #rotationMs: number;
  readonly #docMaxAgeMs: number;
  readonly #now: () => number;
  readonly #logger: KmsLogger;
  #current: Material | undefined;
  #pending: Promise<Material> | undefined;

  constructor(options: AttestationOptions) {
    if (typeof options?.nsm?.getAttestationDocument !== 'function') {
      throw new KmsError(
        'ERR_KMS_INVALID_ARGUMENT',
        'attestation.nsm must have getAttestationDocument(): pass an NsmClient from @enclave-extras/nsm (device or simulator).',
      );
    }
    this.#nsm = options.nsm;
    this.#rotationMs = positive(options.keyRotationMs, 'keyRotationMs', 60 * 60_000);
    this.#docMaxAgeMs = positive(options.documentMaxAgeMs, 'documentMaxAgeMs', 4 * 60_000);
    this.#now = options.now ?? Date.now;
    this.#logger = options.logger ?? silent;
    materialOf.set(this, () => this.#material());
  }

  /**
   * Makes sure a key and a fresh document exist (rotating / re-attesting when due) and returns
   * their public facts. Call it at start-up to keep the RSA key generation off the first request.
   */
  async prepare(): Promise<RecipientMaterial> {
    await this.#material();
    return this.current!;
  }

  async #material(): Promise<Material> {
    const cur = this.#current;
    const now = this.#now();
    if (
      cur &&
      now - cur.keyCreatedAt < this.#rotationMs &&
      now - cur.documentCreatedAt < this.#docMaxAgeMs
    ) {
      return cur;
    }
    if (!this.#pending) {
      this.#pending = this.#refresh(cur).finally(() => {
        this.#pending = undefined;
      });
    }
    return this.#pending;
  }

  /** Forces a new key (and document) on the next request. */
  rotate(): void {
    this.#current = undefined;
  }

  /** Public facts of the current material (undefined before the first request). */
  get current(): RecipientMaterial | undefined {
    const c = this.#current;
    return (
      c && {
        publicKey: c.publicKey,
        attestationDocument: c.attestationDocument,
        keyCreatedAt: c.keyCreatedAt,
        documentCreatedAt: c.documentCreatedAt,
      }
    );
  }

  async #refresh(cur: Material | undefined): Promise<Material> {
    let privateKey: KeyObject;
    let publicKey: Uint8Array;
    let keyCreatedAt: number;
    if (cur && this.#now() - cur.keyCreatedAt < this.#rotationMs) {
      ({ privateKey, publicKey, keyCreatedAt } = cur);
    } else {
      const pair = await generateKeyPairAsync('rsa', { modulusLength: 2048 });
      privateKey = pair.privateKey;
      publicKey = new Uint8Array(pair.publicKey.export({ format: 'der', type: 'spki' }));
      keyCreatedAt = this.#now();
      this.#logger.debug(
        { rotated: cur !== undefined },
        'kms: new ephemeral RSA-2048 recipient key',
      );
    }
    let attestationDocument: Uint8Array;
    try {
      attestationDocument = await this.#nsm.getAttestationDocument({ publicKey });
    } catch (err) {
      throw new KmsError(
        'ERR_KMS_ATTESTATION',
        `could not get an attestation document from the NSM (${(err as Error)?.message ?? String(err)}): check /dev/nsm or the simulator is reachable.`,
        { cause: err },
      );
    }
    const m: Material = {
      privateKey,
      publicKey,
      attestationDocument,
      keyCreatedAt,
      documentCreatedAt: this.#now(),
    };
    this.#current = m;
    return m;
  }
}

type AnyRecord = Record<string, unknown>;

function attestationMiddleware(
  session: AttestationSession,
): InitializeMiddleware<ServiceInputTypes, ServiceOutputTypes> {
  return (next: InitializeHandler<ServiceInputTypes, ServiceOutputTypes>, context) =>
    async (args: InitializeHandlerArguments<ServiceInputTypes>) => {
      const op = context.commandName as keyof typeof ATTESTED_OPERATIONS | undefined;
      const field = op ? ATTESTED_OPERATIONS[op] : undefined;
      const input = args.input as AnyRecord;
      if (!field || input.Recipient !== undefined) return next(args);
      const m = await materialOf.get(session)!();
      const result = await next({
        ...args,
        input: {
          ...input,
          Recipient: {
            KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
            AttestationDocument: m.attestationDocument,
          },
        } as ServiceInputTypes,
      });
      const output = result.output as unknown as AnyRecord;
      const cfr = output.CiphertextForRecipient;
      if (!(cfr instanceof Uint8Array) || cfr.length === 0) {
        throw new KmsError(
          'ERR_KMS_RESPONSE',
          `${op} answered without CiphertextForRecipient although Recipient was sent: the endpoint is not an attestation-aware KMS (or a proxy rewrote the request); refusing any plaintext it sent.`,
        );
      }
      const secret = decryptCiphertextForRecipient(cfr, m.privateKey);
      const out: AnyRecord = { ...output, [field]: new Uint8Array(secret) };
      delete out.CiphertextForRecipient;
      return { ...result, output: out as unknown as ServiceOutputTypes };
    };
}

const MIDDLEWARE_NAME = 'enclaveExtrasAttestationMiddleware';

/**
 * Makes `client` attested: Decrypt, GenerateDataKey, GenerateDataKeyPair, GenerateRandom and
 * DeriveSharedSecret carry a `Recipient` and come back with Plaintext / PrivateKeyPlaintext /
 * SharedSecret filled from `CiphertextForRecipient`. Calls that set `Recipient` themselves are
 * left alone. Returns the session (key rotation, current document).
 */
export function withAttestation(
  client: KMSClient,
  options: AttestationOptions,
): AttestationSession {
  const session = new AttestationSession(options);
  client.middlewareStack.add(attestationMiddleware(session), {
    step: 'initialize',
    name: MIDDLEWARE_NAME,
    override: true,
  });
  return session;
}

export interface AttestedKmsClientConfig extends KMSClientConfig {
  attestation: AttestationOptions;
  /** Dial every connection through this (vsock, egress gateway, TCP); TLS runs over it for https. */
  connect?: KmsDialer;
  /** Extra CA certificates for https endpoints reached through `connect` (development CA). */
  ca?: DialingRequestHandlerOptions['ca'];
}

/** A `KMSClient` with `withAttestation` applied (and optionally the dial seam as request handler). */
export class AttestedKmsClient extends KMSClient {
  readonly attestation: AttestationSession;

  constructor(config: AttestedKmsClientConfig) {
    const { attestation, connect, ca, ...rest } = config;
    const base: KMSClientConfig = { ...rest };
    if (connect) {
      if (rest.requestHandler) {
        throw new KmsError(
          'ERR_KMS_INVALID_ARGUMENT',
          'pass either connect or requestHandler, not both.',
        );
      }
      base.requestHandler = createDialingRequestHandler(
        ca === undefined ? { connect } : { connect, ca },
      );
    }
    super(base);
    this.attestation = withAttestation(this, attestation);
  }
}
