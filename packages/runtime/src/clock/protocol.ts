// The time service's wire format (ee-parent serves it on a vsock port, the enclave asks).
//
// One connection carries any number of exchanges; every integer is big-endian.
//   request  (8 bytes):  magic "EEt1" | u32 seq
//   response (24 bytes): magic "EEt1" | u32 seq | u64 t1 | u64 t2
// t1 = the parent's CLOCK_REALTIME (ns since the Unix epoch) when the request was read, t2 = when
// the response was written. The client keeps its own send (t0) and receive (t3) times.
import { RuntimeError } from '../errors.js';

export const TIME_MAGIC = Buffer.from('EEt1', 'latin1');
export const TIME_REQUEST_BYTES = 8;
export const TIME_RESPONSE_BYTES = 24;

export function encodeTimeRequest(seq: number): Buffer {
  const b = Buffer.alloc(TIME_REQUEST_BYTES);
  TIME_MAGIC.copy(b, 0);
  b.writeUInt32BE(seq >>> 0, 4);
  return b;
}

/** Reads a request at `offset`; returns its seq or throws ERR_RUNTIME_CLOCK_PROTOCOL. */
export function decodeTimeRequest(buf: Buffer, offset = 0): number {
  if (buf.compare(TIME_MAGIC, 0, 4, offset, offset + 4) !== 0) {
    throw new RuntimeError(
      'ERR_RUNTIME_CLOCK_PROTOCOL',
      'A time request did not start with "EEt1": the peer does not speak the ee-parent time protocol.',
    );
  }
  return buf.readUInt32BE(offset + 4);
}

export function encodeTimeResponse(seq: number, t1: bigint, t2: bigint): Buffer {
  const b = Buffer.alloc(TIME_RESPONSE_BYTES);
  TIME_MAGIC.copy(b, 0);
  b.writeUInt32BE(seq >>> 0, 4);
  b.writeBigUInt64BE(t1, 8);
  b.writeBigUInt64BE(t2, 16);
  return b;
}

export interface TimeResponse {
  seq: number;
  t1: bigint;
  t2: bigint;
}

export function decodeTimeResponse(buf: Buffer, offset = 0): TimeResponse {
  if (buf.compare(TIME_MAGIC, 0, 4, offset, offset + 4) !== 0) {
    throw new RuntimeError(
      'ERR_RUNTIME_CLOCK_PROTOCOL',
      'A time response did not start with "EEt1": check that clock.parent names the port ee-parent serves time on (parent.yaml time.listen).',
    );
  }
  return {
    seq: buf.readUInt32BE(offset + 4),
    t1: buf.readBigUInt64BE(offset + 8),
    t2: buf.readBigUInt64BE(offset + 16),
  };
}
