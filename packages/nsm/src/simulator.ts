import { createHash, randomBytes } from 'node:crypto';
import { derToPem, signDocument } from '@enclave-extras/attestation';
import { createDevCa, type DevCa, loadOrCreateDevCa, persistLeaf, renewLeaf } from './ca.js';
import { NsmError } from './errors.js';
import {
  checkRawRequest,
  decodeRequest,
  encodeResponse,
  MAX_FIELD_BYTES,
  MAX_RANDOM_PER_REQUEST,
  type NsmRequest,
  type NsmResponse,
  PCR_COUNT,
} from './protocol.js';
import { type Logger, type NsmTransport, silentLogger } from './transport.js';

export interface NsmSimulatorOptions {
  /**
   * Directory for the development CA (root -> intermediate -> leaf), created on first use and
   * reused afterwards, so documents from every run chain to the same dev root. Default: a fresh
   * in-memory CA per simulator (nothing written).
   */
  stateDir?: string;
  /** module_id of DescribeNSM and documents. Default `i-0000000000000000f-enc0000000000000000`. */
  moduleId?: string;
  /** Initial PCR values (48 bytes as hex or bytes) by index 0..31; others use the defaults. */
  pcrs?: Record<number, string | Uint8Array>;
  /** PCRs locked at start. Default 0..15, as in a real enclave. */
  lockedPcrs?: number[];
  /** Clock (ms since epoch) for document timestamps and the leaf's renewal. Default Date.now. */
  now?: () => number;
  logger?: Logger;
}

const PCR_BYTES = 48;
const DEFAULT_MODULE_ID = 'i-0000000000000000f-enc0000000000000000';

function sha384(...parts: Uint8Array[]): Uint8Array {
  const h = createHash('sha384');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

/** Image-like defaults: PCR0/1/2 (image, kernel, application) and PCR4 (instance) are set. */
function defaultPcr(index: number, moduleId: string): Uint8Array {
  const label: Record<number, string> = {
    0: 'enclave image',
    1: 'kernel and bootstrap',
    2: 'application',
    4: `instance ${moduleId.split('-enc')[0]}`,
  };
  const l = label[index];
  return l === undefined
    ? new Uint8Array(PCR_BYTES)
    : sha384(new TextEncoder().encode(`enclave-extras simulator ${l}`));
}

function pcrValue(v: string | Uint8Array, index: number): Uint8Array {
  let b: Uint8Array;
  if (typeof v === 'string') {
    if (!/^([0-9a-fA-F]{2})*$/.test(v)) {
      throw new NsmError('ERR_NSM_SIMULATOR', `pcrs[${index}] must be hex`, {
        field: `pcrs[${index}]`,
      });
    }
    b = new Uint8Array(Buffer.from(v, 'hex'));
  } else if (v instanceof Uint8Array) {
    b = new Uint8Array(v);
  } else {
    throw new NsmError('ERR_NSM_SIMULATOR', `pcrs[${index}] must be hex or bytes`, {
      field: `pcrs[${index}]`,
    });
  }
  if (b.length !== PCR_BYTES) {
    throw new NsmError(
      'ERR_NSM_SIMULATOR',
      `pcrs[${index}] is ${b.length} bytes; SHA-384 PCRs are ${PCR_BYTES} bytes (96 hex digits)`,
      { field: `pcrs[${index}]` },
    );
  }
  return b;
}

/**
 * A simulated NSM speaking the device's CBOR protocol: use it directly as an NsmTransport
 * (`NsmClient.open({ transport: simulator })`) or share it between processes with
 * `serveSimulator`. It mirrors what the real device answers (learned from the Linux driver and
 * QEMU's virtio-nsm): 32 SHA-384 PCRs, InvalidIndex for indexes >= 32, ReadOnlyIndex when
 * extending or locking a locked PCR, InvalidOperation for malformed or unknown requests, 256-byte
 * GetRandom. Unlike QEMU (whose documents are unsigned), documents are signed ES384 by a
 * development CA, so they verify only when that dev root is trusted, never with the AWS root.
 */
export class NsmSimulator implements NsmTransport {
  readonly name = 'simulator';
  readonly moduleId: string;
  readonly #pcrs: Uint8Array[] = [];
  readonly #locked = new Set<number>();
  readonly #stateDir: string | undefined;
  readonly #now: () => number;
  readonly #logger: Logger;
  #ca: DevCa | undefined;
  #caLoading: Promise<DevCa> | undefined;

  constructor(options: NsmSimulatorOptions = {}) {
    this.moduleId = options.moduleId ?? DEFAULT_MODULE_ID;
    if (typeof this.moduleId !== 'string' || this.moduleId.length === 0) {
      throw new NsmError('ERR_NSM_SIMULATOR', 'moduleId must be a non-empty string', {
        field: 'moduleId',
      });
    }
    this.#stateDir = options.stateDir;
    this.#now = options.now ?? Date.now;
    this.#logger = options.logger ?? silentLogger;
    for (let i = 0; i < PCR_COUNT; i++) this.#pcrs.push(defaultPcr(i, this.moduleId));
    for (const [k, v] of Object.entries(options.pcrs ?? {})) {
      const i = Number(k);
      if (!Number.isInteger(i) || i < 0 || i >= PCR_COUNT) {
        throw new NsmError('ERR_NSM_SIMULATOR', `pcrs: index ${k} is not 0..31`, { field: 'pcrs' });
      }
      this.#pcrs[i] = pcrValue(v, i);
    }
    for (const i of options.lockedPcrs ?? Array.from({ length: 16 }, (_, j) => j)) {
      if (!Number.isInteger(i) || i < 0 || i >= PCR_COUNT) {
        throw new NsmError('ERR_NSM_SIMULATOR', `lockedPcrs: ${String(i)} is not 0..31`, {
          field: 'lockedPcrs',
        });
      }
      this.#locked.add(i);
    }
  }

  /** Answers one raw request exactly as the device would. */
  async request(request: Uint8Array): Promise<Uint8Array> {
    checkRawRequest(request, this.name);
    const req = decodeRequest(request);
    const res = req
      ? await this.#handle(req)
      : { kind: 'Error' as const, error: 'InvalidOperation' };
    this.#logger.debug({ request: req?.kind ?? 'malformed', response: res.kind }, 'nsm simulator');
    return encodeResponse(res);
  }

  /** The simulator keeps its state when a client closes it; nothing to release. */
  async close(): Promise<void> {}

  /** The development root certificate that signs this simulator's documents. */
  async devRoot(): Promise<{ der: Uint8Array; pem: string }> {
    const ca = await this.#devCa();
    return { der: ca.root.certificate, pem: derToPem(ca.root.certificate) };
  }

  #handle(req: NsmRequest): NsmResponse | Promise<NsmResponse> {
    const err = (error: string): NsmResponse => ({ kind: 'Error', error });
    switch (req.kind) {
      case 'DescribePCR':
        if (req.index >= PCR_COUNT) return err('InvalidIndex');
        return {
          kind: 'DescribePCR',
          lock: this.#locked.has(req.index),
          data: new Uint8Array(this.#pcrs[req.index]!),
        };
      case 'ExtendPCR': {
        if (req.index >= PCR_COUNT) return err('InvalidIndex');
        if (this.#locked.has(req.index)) return err('ReadOnlyIndex');
        const next = sha384(this.#pcrs[req.index]!, req.data);
        this.#pcrs[req.index] = next;
        return { kind: 'ExtendPCR', data: new Uint8Array(next) };
      }
      case 'LockPCR':
        if (req.index >= PCR_COUNT) return err('InvalidIndex');
        if (this.#locked.has(req.index)) return err('ReadOnlyIndex');
        this.#locked.add(req.index);
        return { kind: 'LockPCR' };
      case 'LockPCRs':
        if (req.range > PCR_COUNT) return err('InvalidIndex');
        for (let i = 0; i < req.range; i++) this.#locked.add(i);
        return { kind: 'LockPCRs' };
      case 'DescribeNSM':
        return {
          kind: 'DescribeNSM',
          description: {
            versionMajor: 1,
            versionMinor: 0,
            versionPatch: 0,
            moduleId: this.moduleId,
            maxPcrs: PCR_COUNT,
            lockedPcrs: [...this.#locked].sort((a, b) => a - b),
            digest: 'SHA384',
          },
        };
      case 'GetRandom':
        return { kind: 'GetRandom', random: new Uint8Array(randomBytes(MAX_RANDOM_PER_REQUEST)) };
      case 'Attestation': {
        for (const f of [req.userData, req.nonce, req.publicKey]) {
          if (f && f.length > MAX_FIELD_BYTES) return err('InputTooLarge');
        }
        // snapshot the PCRs now, so requests answered later still see request-time state
        const pcrs = new Map<number, Uint8Array>();
        for (const i of [...this.#locked].sort((a, b) => a - b)) {
          pcrs.set(i, new Uint8Array(this.#pcrs[i]!));
        }
        return this.#attest(req, pcrs);
      }
    }
  }

  async #attest(
    req: Extract<NsmRequest, { kind: 'Attestation' }>,
    pcrs: Map<number, Uint8Array>,
  ): Promise<NsmResponse> {
    let ca: DevCa;
    try {
      ca = await this.#devCa();
    } catch (err) {
      this.#logger.error({ err }, 'nsm simulator: dev CA unavailable');
      return { kind: 'Error', error: 'InternalError' };
    }
    const now = this.#now();
    if (renewLeaf(ca, now)) {
      this.#logger.info(
        { notAfter: new Date(ca.leaf.notAfter).toISOString() },
        'nsm simulator: leaf re-issued',
      );
      if (this.#stateDir !== undefined) await persistLeaf(this.#stateDir, ca);
    }
    const document = signDocument(
      {
        moduleId: this.moduleId,
        digest: 'SHA384',
        timestamp: now,
        pcrs,
        userData: req.userData,
        nonce: req.nonce,
        publicKey: req.publicKey,
      },
      {
        privateKey: ca.leaf.privateKey,
        certificate: ca.leaf.certificate,
        cabundle: [ca.root.certificate, ca.intermediate.certificate],
      },
    );
    return { kind: 'Attestation', document };
  }

  #devCa(): Promise<DevCa> {
    if (this.#ca) return Promise.resolve(this.#ca);
    if (!this.#caLoading) {
      const dir = this.#stateDir;
      this.#caLoading = (
        dir === undefined
          ? Promise.resolve(createDevCa(this.#now()))
          : loadOrCreateDevCa(dir, this.#now())
      ).then(
        (ca) => {
          this.#ca = ca;
          return ca;
        },
        (err: unknown) => {
          this.#caLoading = undefined;
          throw err;
        },
      );
    }
    return this.#caLoading;
  }
}
