import { deviceTransport } from './device.js';
import { NsmError } from './errors.js';
import {
  encodeRequest,
  expectResponse,
  MAX_FIELD_BYTES,
  MAX_RANDOM_PER_REQUEST,
  MAX_REQUEST_BYTES,
  type NsmDescription,
  type NsmRequest,
  type PcrDescription,
} from './protocol.js';
import type { NsmTransport } from './transport.js';

export interface NsmClientOptions {
  /**
   * Where requests go. Default: the device (`deviceTransport()`, `/dev/nsm`). Pass an
   * `NsmSimulator` or `await socketTransport(path)` for development.
   */
  transport?: NsmTransport;
}

export interface AttestationRequest {
  /** Up to 1024 bytes echoed in the document's `user_data`. */
  userData?: Uint8Array | null;
  /** Up to 1024 bytes echoed in the document's `nonce`. */
  nonce?: Uint8Array | null;
  /** Up to 1024 bytes echoed in the document's `public_key` (KMS wants a DER SPKI of an RSA key). */
  publicKey?: Uint8Array | null;
}

/** Most bytes one getRandom()/randomBytes() call returns (loops of 256-byte requests). */
export const MAX_RANDOM_BYTES = 1 << 20;

function invalid(field: string, message: string): NsmError {
  return new NsmError('ERR_NSM_INVALID_ARGUMENT', `${field} ${message}`, { field });
}

function u16(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw invalid(
      field,
      `must be an integer 0..65535 (got ${String(value)}); PCR indexes on a Nitro enclave are 0..31`,
    );
  }
  return value;
}

function bytesArg(value: unknown, field: string, max?: number): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw invalid(field, `must be a Uint8Array or Buffer (got ${typeof value})`);
  }
  if (max !== undefined && value.length > max) {
    throw new NsmError(
      'ERR_NSM_INPUT_TOO_LARGE',
      `${field} is ${value.length} bytes; the NSM takes at most ${max}`,
      { field },
    );
  }
  return value;
}

function optField(value: unknown, field: string): Uint8Array | null {
  return value === undefined || value === null ? null : bytesArg(value, field, MAX_FIELD_BYTES);
}

/**
 * A client of the Nitro Secure Module. Every method validates its input, sends one request (or a
 * loop of GetRandom requests) through the transport and maps NSM error answers to NsmError.
 *
 * PCR indexes are checked only to be u16 values: the NSM itself answers InvalidIndex for 32..65535
 * (ERR_NSM_INVALID_INDEX), so that behaviour stays observable.
 */
export class NsmClient {
  readonly #transport: NsmTransport;
  #closed = false;

  private constructor(transport: NsmTransport) {
    this.#transport = transport;
  }

  /** Opens a client on `options.transport`, or on `/dev/nsm` by default. */
  static async open(options: NsmClientOptions = {}): Promise<NsmClient> {
    const given: unknown = options.transport;
    if (given !== undefined) {
      const t = given as Partial<NsmTransport>;
      if (
        typeof t !== 'object' ||
        t === null ||
        typeof t.request !== 'function' ||
        typeof t.close !== 'function'
      ) {
        const hint =
          given instanceof Promise
            ? ' (a Promise: did you forget `await socketTransport(...)`?)'
            : '';
        throw invalid('transport', `must be an NsmTransport with request() and close()${hint}`);
      }
      return new NsmClient(t as NsmTransport);
    }
    return new NsmClient(await deviceTransport());
  }

  /** The transport requests go through (for raw requests and diagnostics). */
  get transport(): NsmTransport {
    return this.#transport;
  }

  async #send(req: NsmRequest, label: string): Promise<Uint8Array> {
    if (this.#closed) {
      throw new NsmError('ERR_NSM_CLOSED', `${label}: the NsmClient is closed; open a new one`, {
        field: label,
      });
    }
    const bytes = encodeRequest(req);
    if (bytes.length > MAX_REQUEST_BYTES) {
      throw new NsmError(
        'ERR_NSM_INPUT_TOO_LARGE',
        `${label}: the encoded request is ${bytes.length} bytes, the NSM accepts at most ${MAX_REQUEST_BYTES}; shorten the data`,
        { field: label },
      );
    }
    return this.#transport.request(bytes);
  }

  /** DescribeNSM: version, module id, PCR count, locked PCRs and digest. */
  async describeNsm(): Promise<NsmDescription> {
    const res = await this.#send({ kind: 'DescribeNSM' }, 'describeNsm()');
    return expectResponse(res, 'DescribeNSM', 'describeNsm()').description;
  }

  /** DescribePCR: the PCR's value and whether it is locked. */
  async describePcr(index: number): Promise<PcrDescription> {
    const label = `describePcr(${String(index)})`;
    const i = u16(index, label);
    const res = expectResponse(
      await this.#send({ kind: 'DescribePCR', index: i }, label),
      'DescribePCR',
      label,
    );
    return { lock: res.lock, data: res.data };
  }

  /** ExtendPCR: PCR = SHA-384(PCR || data); resolves with the new value. */
  async extendPcr(index: number, data: Uint8Array): Promise<Uint8Array> {
    const label = `extendPcr(${String(index)})`;
    const i = u16(index, label);
    const d = bytesArg(data, `${label} data`);
    return expectResponse(
      await this.#send({ kind: 'ExtendPCR', index: i, data: d }, label),
      'ExtendPCR',
      label,
    ).data;
  }

  /** LockPCR: no further extends (or locks) of this PCR until the enclave restarts. */
  async lockPcr(index: number): Promise<void> {
    const label = `lockPcr(${String(index)})`;
    const i = u16(index, label);
    expectResponse(await this.#send({ kind: 'LockPCR', index: i }, label), 'LockPCR', label);
  }

  /** LockPCRs: locks PCRs 0..range-1 (already locked ones are fine). */
  async lockPcrs(range: number): Promise<void> {
    const label = `lockPcrs(${String(range)})`;
    const r = u16(range, label);
    expectResponse(await this.#send({ kind: 'LockPCRs', range: r }, label), 'LockPCRs', label);
  }

  /** Attestation: a COSE_Sign1 attestation document carrying the given fields and locked PCRs. */
  async getAttestationDocument(request: AttestationRequest = {}): Promise<Uint8Array> {
    const label = 'getAttestationDocument()';
    if (typeof request !== 'object' || request === null) {
      throw invalid('getAttestationDocument() options', 'must be an object');
    }
    const req: NsmRequest = {
      kind: 'Attestation',
      userData: optField(request.userData, 'userData'),
      nonce: optField(request.nonce, 'nonce'),
      publicKey: optField(request.publicKey, 'publicKey'),
    };
    return expectResponse(await this.#send(req, label), 'Attestation', label).document;
  }

  /** `n` random bytes from the NSM, in as many GetRandom requests (<= 256 bytes each) as needed. */
  async getRandom(n: number): Promise<Uint8Array> {
    const label = `getRandom(${String(n)})`;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > MAX_RANDOM_BYTES) {
      throw invalid(label, `size must be an integer 0..${MAX_RANDOM_BYTES}`);
    }
    const out = new Uint8Array(n);
    let filled = 0;
    let requests = 0;
    while (filled < n) {
      // device requests may complete synchronously: let I/O run now and then in long loops
      if (++requests % 64 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      const { random } = expectResponse(
        await this.#send({ kind: 'GetRandom' }, label),
        'GetRandom',
        label,
      );
      if (random.length === 0 || random.length > MAX_RANDOM_PER_REQUEST) {
        throw new NsmError(
          'ERR_NSM_UNEXPECTED_RESPONSE',
          `${label}: GetRandom returned ${random.length} bytes (expected 1..${MAX_RANDOM_PER_REQUEST})`,
          { field: label },
        );
      }
      const take = Math.min(random.length, n - filled);
      out.set(random.subarray(0, take), filled);
      filled += take;
    }
    return out;
  }

  /** Like `crypto.randomBytes(n)` (promise form): `n` bytes from the NSM as a Buffer. */
  async randomBytes(n: number): Promise<Buffer> {
    const bytes = await this.getRandom(n);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Closes the transport; later calls fail with ERR_NSM_CLOSED. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#transport.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
