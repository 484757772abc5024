import {
  CborTag,
  type CborValue,
  decodeCbor as decodeStrict,
  encodeCbor,
} from '@enclave-extras/attestation';
import { deviceError, NsmError } from './errors.js';

/** Largest request the NSM driver accepts (bigger ones fail with EMSGSIZE). */
export const MAX_REQUEST_BYTES = 0x1000;
/** Size of the response buffer handed to the driver. */
export const MAX_RESPONSE_BYTES = 0x3000;
/** Largest user_data / nonce / public_key this package sends. */
export const MAX_FIELD_BYTES = 1024;
/** Most random bytes one GetRandom request returns. */
export const MAX_RANDOM_PER_REQUEST = 256;
/** PCR count of a Nitro enclave's NSM. */
export const PCR_COUNT = 32;

/** PCR hash algorithm as DescribeNSM reports it. */
export type NsmDigest = 'SHA256' | 'SHA384' | 'SHA512';

/** DescribeNSM's answer. */
export interface NsmDescription {
  versionMajor: number;
  versionMinor: number;
  versionPatch: number;
  moduleId: string;
  maxPcrs: number;
  /** Locked PCR indexes, ascending. */
  lockedPcrs: number[];
  digest: NsmDigest;
}

/** DescribePCR's answer. */
export interface PcrDescription {
  lock: boolean;
  data: Uint8Array;
}

/** A request in the NSM protocol (internal shape; the wire form is serde_cbor's). */
export type NsmRequest =
  | { kind: 'DescribePCR'; index: number }
  | { kind: 'ExtendPCR'; index: number; data: Uint8Array }
  | { kind: 'LockPCR'; index: number }
  | { kind: 'LockPCRs'; range: number }
  | { kind: 'DescribeNSM' }
  | {
      kind: 'Attestation';
      userData: Uint8Array | null;
      nonce: Uint8Array | null;
      publicKey: Uint8Array | null;
    }
  | { kind: 'GetRandom' };

/** A response in the NSM protocol. */
export type NsmResponse =
  | { kind: 'DescribePCR'; lock: boolean; data: Uint8Array }
  | { kind: 'ExtendPCR'; data: Uint8Array }
  | { kind: 'LockPCR' }
  | { kind: 'LockPCRs' }
  | { kind: 'DescribeNSM'; description: NsmDescription }
  | { kind: 'Attestation'; document: Uint8Array }
  | { kind: 'GetRandom'; random: Uint8Array }
  | { kind: 'Error'; error: string };

// serde_cbor's shape: unit variants are text, struct variants one-entry maps, None is null,
// integers in their shortest form, Vec<u8> (serde_bytes) as byte strings, fields in declaration
// order. The attestation package's strict codec writes exactly that from Maps in insertion order
// (checked against the byte examples and against cbor-x in the tests); using it instead of a
// general-purpose CBOR library keeps the install free of native addons.
type Wire = string | number | boolean | null | Uint8Array | number[] | { [key: string]: Wire };

function toCbor(v: Wire): CborValue {
  if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v;
  return new Map(Object.entries(v).map(([k, x]) => [k, toCbor(x)]));
}

function cbor(value: Wire): Uint8Array {
  return encodeCbor(toCbor(value));
}

/** Encodes a request exactly as the NSM's serde_cbor expects it. */
export function encodeRequest(req: NsmRequest): Uint8Array {
  switch (req.kind) {
    case 'DescribeNSM':
    case 'GetRandom':
      return cbor(req.kind);
    case 'DescribePCR':
    case 'LockPCR':
      return cbor({ [req.kind]: { index: req.index } });
    case 'ExtendPCR':
      return cbor({ ExtendPCR: { index: req.index, data: req.data } });
    case 'LockPCRs':
      return cbor({ LockPCRs: { range: req.range } });
    case 'Attestation':
      return cbor({
        Attestation: { user_data: req.userData, nonce: req.nonce, public_key: req.publicKey },
      });
  }
}

/** Encodes a response as the NSM does (used by the simulator). */
export function encodeResponse(res: NsmResponse): Uint8Array {
  switch (res.kind) {
    case 'LockPCR':
    case 'LockPCRs':
      return cbor(res.kind);
    case 'DescribePCR':
      return cbor({ DescribePCR: { lock: res.lock, data: res.data } });
    case 'ExtendPCR':
      return cbor({ ExtendPCR: { data: res.data } });
    case 'DescribeNSM': {
      const d = res.description;
      return cbor({
        DescribeNSM: {
          version_major: d.versionMajor,
          version_minor: d.versionMinor,
          version_patch: d.versionPatch,
          module_id: d.moduleId,
          max_pcrs: d.maxPcrs,
          locked_pcrs: d.lockedPcrs,
          digest: d.digest,
        },
      });
    }
    case 'Attestation':
      return cbor({ Attestation: { document: res.document } });
    case 'GetRandom':
      return cbor({ GetRandom: { random: res.random } });
    case 'Error':
      return cbor({ Error: res.error });
  }
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function own(o: Obj, key: string): unknown {
  return Object.hasOwn(o, key) ? o[key] : undefined;
}

function isU16(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff;
}

function bytes(v: unknown): Uint8Array | undefined {
  if (!(v instanceof Uint8Array)) return undefined;
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function optBytes(v: unknown): Uint8Array | null | undefined {
  if (v === null || v === undefined) return null;
  return bytes(v);
}

/** Maps with text keys become plain objects (what the shape checks below expect). */
function fromCbor(v: CborValue): unknown {
  if (Array.isArray(v)) return v.map(fromCbor);
  if (v instanceof Map) {
    const o: Obj = Object.create(null);
    for (const [k, x] of v) {
      if (typeof k !== 'string') throw new TypeError(`map key ${String(k)} is not text`);
      o[k] = fromCbor(x);
    }
    return o;
  }
  if (v instanceof CborTag) throw new TypeError(`tag ${v.tag} is not part of the NSM protocol`);
  return v;
}

function decodeCbor(data: Uint8Array): unknown {
  return fromCbor(decodeStrict(data, 'NSM message'));
}

/**
 * Decodes a request the way the NSM's serde_cbor does, or returns null when the NSM would answer
 * InvalidOperation (malformed CBOR, unknown request, wrong field types, index not a u16).
 */
export function decodeRequest(data: Uint8Array): NsmRequest | null {
  let v: unknown;
  try {
    v = decodeCbor(data);
  } catch {
    return null;
  }
  if (v === 'DescribeNSM' || v === 'GetRandom') return { kind: v };
  if (!isObj(v)) return null;
  const keys = Object.keys(v);
  if (keys.length !== 1) return null;
  const kind = keys[0]!;
  const body = own(v, kind);
  if (!isObj(body)) return null;
  switch (kind) {
    case 'DescribePCR':
    case 'LockPCR': {
      const index = own(body, 'index');
      return isU16(index) ? { kind, index } : null;
    }
    case 'ExtendPCR': {
      const index = own(body, 'index');
      const data = bytes(own(body, 'data'));
      return isU16(index) && data ? { kind, index, data } : null;
    }
    case 'LockPCRs': {
      const range = own(body, 'range');
      return isU16(range) ? { kind, range } : null;
    }
    case 'Attestation': {
      const userData = optBytes(own(body, 'user_data'));
      const nonce = optBytes(own(body, 'nonce'));
      const publicKey = optBytes(own(body, 'public_key'));
      if (userData === undefined || nonce === undefined || publicKey === undefined) return null;
      return { kind, userData, nonce, publicKey };
    }
    default:
      return null;
  }
}

function malformed(request: string, what: string, cause?: unknown): NsmError {
  return new NsmError(
    'ERR_NSM_UNEXPECTED_RESPONSE',
    `${request}: the NSM response ${what}; is the transport talking to an NSM?`,
    { field: request, cause },
  );
}

const DIGESTS = new Set(['SHA256', 'SHA384', 'SHA512']);

/**
 * Decodes a response to `request` (the request kind), checking its shape. A device error answer
 * is returned as `{ kind: 'Error' }`; use {@link expectResponse} to turn it into an NsmError.
 */
export function decodeResponse(data: Uint8Array, request = 'request'): NsmResponse {
  let v: unknown;
  try {
    v = decodeCbor(data);
  } catch (err) {
    throw malformed(request, `is not valid CBOR (${data.length} bytes)`, err);
  }
  if (v === 'LockPCR' || v === 'LockPCRs') return { kind: v };
  if (!isObj(v) || Object.keys(v).length !== 1) throw malformed(request, 'is not an NSM response');
  const kind = Object.keys(v)[0]!;
  const body = own(v, kind);
  if (kind === 'Error') {
    if (typeof body !== 'string') throw malformed(request, 'carries a non-text Error');
    return { kind, error: body };
  }
  if (!isObj(body)) throw malformed(request, `${kind} is not a map`);
  const need = <T>(value: T | undefined, field: string): T => {
    if (value === undefined) throw malformed(request, `${kind}.${field} is missing or mistyped`);
    return value;
  };
  switch (kind) {
    case 'DescribePCR': {
      const lock = own(body, 'lock');
      return {
        kind,
        lock: need(typeof lock === 'boolean' ? lock : undefined, 'lock'),
        data: need(bytes(own(body, 'data')), 'data'),
      };
    }
    case 'ExtendPCR':
      return { kind, data: need(bytes(own(body, 'data')), 'data') };
    case 'Attestation':
      return { kind, document: need(bytes(own(body, 'document')), 'document') };
    case 'GetRandom':
      return { kind, random: need(bytes(own(body, 'random')), 'random') };
    case 'DescribeNSM': {
      const num = (f: string) => {
        const x = own(body, f);
        return need(isU16(x) ? x : undefined, f);
      };
      const moduleId = own(body, 'module_id');
      const locked = own(body, 'locked_pcrs');
      const digest = own(body, 'digest');
      return {
        kind,
        description: {
          versionMajor: num('version_major'),
          versionMinor: num('version_minor'),
          versionPatch: num('version_patch'),
          moduleId: need(typeof moduleId === 'string' ? moduleId : undefined, 'module_id'),
          maxPcrs: num('max_pcrs'),
          lockedPcrs: need(
            Array.isArray(locked) && locked.every(isU16)
              ? [...locked].sort((a, b) => a - b)
              : undefined,
            'locked_pcrs',
          ),
          digest: need(
            typeof digest === 'string' && DIGESTS.has(digest) ? (digest as NsmDigest) : undefined,
            'digest',
          ),
        },
      };
    }
    default:
      throw malformed(request, `is an unknown variant ${JSON.stringify(kind)}`);
  }
}

/** Decodes the response to `request` and returns it when it is of `kind`, else throws NsmError. */
export function expectResponse<K extends NsmResponse['kind']>(
  data: Uint8Array,
  kind: K,
  request: string,
): Extract<NsmResponse, { kind: K }> {
  const res = decodeResponse(data, request);
  if (res.kind === 'Error') throw deviceError(res.error, request);
  if (res.kind !== kind) throw malformed(request, `is ${res.kind}, expected ${kind}`);
  return res as Extract<NsmResponse, { kind: K }>;
}

/**
 * Checks raw request bytes before any transport sends them: the NSM driver rejects more than
 * 4096 bytes (EMSGSIZE; the device transport leaves that check to the kernel, `sizeLimit: false`)
 * and an EMPTY request makes QEMU's virtio-nsm (and so the driver) stop answering until the VM
 * restarts, so it is never sent.
 */
export function checkRawRequest(
  request: Uint8Array,
  transport: string,
  options: { sizeLimit: boolean } = { sizeLimit: true },
): void {
  if (!(request instanceof Uint8Array)) {
    throw new NsmError('ERR_NSM_INVALID_ARGUMENT', `${transport}: request must be a Uint8Array`, {
      field: 'request',
    });
  }
  if (request.length === 0) {
    throw new NsmError(
      'ERR_NSM_INVALID_ARGUMENT',
      `${transport}: request is empty; an empty request is never sent to the NSM (it stalls the device)`,
      { field: 'request' },
    );
  }
  if (options.sizeLimit && request.length > MAX_REQUEST_BYTES) {
    throw new NsmError(
      'ERR_NSM_INPUT_TOO_LARGE',
      `${transport}: request is ${request.length} bytes, the NSM accepts at most ${MAX_REQUEST_BYTES}; shorten the request data`,
      { field: 'request' },
    );
  }
}
