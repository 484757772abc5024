import { CID_ANY, CID_HOST, CID_HYPERVISOR, CID_LOCAL, U32_MAX } from './constants.js';
import { invalidArgType, invalidArgValue, outOfRange } from './errors.js';

/** A vsock address: context id and port, both u32. */
export interface VsockAddress {
  cid: number;
  port: number;
}

/** Throws ERR_INVALID_ARG_TYPE / ERR_OUT_OF_RANGE unless `value` is an integer in 0..2^32-1. */
export function validateU32(value: unknown, name: string): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw outOfRange(name, `an integer >= 0 and <= ${U32_MAX}`, value);
  }
  return value;
}

function cidName(cid: number): string {
  switch (cid) {
    case CID_HYPERVISOR:
      return `hypervisor(${cid})`;
    case CID_LOCAL:
      return `local(${cid})`;
    case CID_HOST:
      return `host(${cid})`;
    case CID_ANY:
      return `any(${cid})`;
    default:
      return `vm(${cid})`;
  }
}

/**
 * Formats an address the way mdlayher/vsock prints it: `vm(16):5000`, `local(1):5000`,
 * `host(2):5000`, `hypervisor(0):5000`, `any(4294967295):5000`.
 */
export function formatVsockAddress(address: VsockAddress): string {
  if (typeof address !== 'object' || address === null) {
    throw invalidArgType('address', 'an object { cid, port }', address);
  }
  const cid = validateU32(address.cid, 'address.cid');
  const port = validateU32(address.port, 'address.port');
  return `${cidName(cid)}:${port}`;
}

const NAMED = /^(?:(vm|local|host|hypervisor|any)\((\d+)\)|(\d+)|(any|local|host|hypervisor))$/i;
const NAME_TO_CID: Record<string, number> = {
  any: CID_ANY,
  local: CID_LOCAL,
  host: CID_HOST,
  hypervisor: CID_HYPERVISOR,
};

function parseCid(text: string, input: string): number {
  const m = NAMED.exec(text);
  if (!m) throw invalidArgValue('address', input, 'has a cid that is not a number or a cid name');
  if (m[3] !== undefined) return validateU32(Number(m[3]), 'cid');
  if (m[4] !== undefined) return NAME_TO_CID[m[4].toLowerCase()]!;
  const cid = validateU32(Number(m[2]), 'cid');
  const kind = m[1]!.toLowerCase();
  if (kind !== 'vm' && NAME_TO_CID[kind] !== cid) {
    throw invalidArgValue('address', input, `names ${kind} but gives cid ${cid}`);
  }
  return cid;
}

/**
 * Parses `vsock://16:5000`, `vsock:16:5000`, `16:5000`, or the printed form `vm(16):5000`
 * (also `local(1):5000`, `host:5000`, `any:5000`). Throws a VsockError with code
 * ERR_INVALID_ARG_VALUE (or ERR_OUT_OF_RANGE) naming the input otherwise.
 */
export function parseVsockAddress(input: string): VsockAddress {
  if (typeof input !== 'string') throw invalidArgType('address', 'of type string', input);
  let rest = input.trim();
  if (/^vsock:\/\//i.test(rest)) rest = rest.slice(8).replace(/\/$/, '');
  else if (/^vsock:/i.test(rest)) rest = rest.slice(6);
  const colon = rest.lastIndexOf(':');
  if (colon <= 0 || colon === rest.length - 1) {
    throw invalidArgValue(
      'address',
      input,
      'must look like "vsock://<cid>:<port>" or "<cid>:<port>"',
    );
  }
  const cid = parseCid(rest.slice(0, colon), input);
  const portText = rest.slice(colon + 1);
  if (!/^\d+$/.test(portText))
    throw invalidArgValue('address', input, 'has a port that is not a number');
  const port = validateU32(Number(portText), 'port');
  return { cid, port };
}
