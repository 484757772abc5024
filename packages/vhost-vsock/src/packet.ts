// virtio-vsock packet header (virtio 1.2, 5.10.6): 44 bytes, little-endian.
export const HDR_LEN = 44;
export const TYPE_STREAM = 1;
export const OP_REQUEST = 1;
export const OP_RESPONSE = 2;
export const OP_RST = 3;
export const OP_SHUTDOWN = 4;
export const OP_RW = 5;
export const OP_CREDIT_UPDATE = 6;
export const OP_CREDIT_REQUEST = 7;
export const SHUTDOWN_RCV = 1;
export const SHUTDOWN_SEND = 2;
export const EVENT_TRANSPORT_RESET = 0;

export interface PacketHeader {
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
}

export const OP_NAMES: Record<number, string> = {
  1: 'REQUEST',
  2: 'RESPONSE',
  3: 'RST',
  4: 'SHUTDOWN',
  5: 'RW',
  6: 'CREDIT_UPDATE',
  7: 'CREDIT_REQUEST',
};

export function decodeHeader(b: Buffer): PacketHeader {
  return {
    srcCid: Number(b.readBigUInt64LE(0)),
    dstCid: Number(b.readBigUInt64LE(8)),
    srcPort: b.readUInt32LE(16),
    dstPort: b.readUInt32LE(20),
    len: b.readUInt32LE(24),
    type: b.readUInt16LE(28),
    op: b.readUInt16LE(30),
    flags: b.readUInt32LE(32),
    bufAlloc: b.readUInt32LE(36),
    fwdCnt: b.readUInt32LE(40),
  };
}

export function encodeHeader(h: PacketHeader, b: Buffer = Buffer.alloc(HDR_LEN)): Buffer {
  b.writeBigUInt64LE(BigInt(h.srcCid), 0);
  b.writeBigUInt64LE(BigInt(h.dstCid), 8);
  b.writeUInt32LE(h.srcPort >>> 0, 16);
  b.writeUInt32LE(h.dstPort >>> 0, 20);
  b.writeUInt32LE(h.len >>> 0, 24);
  b.writeUInt16LE(h.type, 28);
  b.writeUInt16LE(h.op, 30);
  b.writeUInt32LE(h.flags >>> 0, 32);
  b.writeUInt32LE(h.bufAlloc >>> 0, 36);
  b.writeUInt32LE(h.fwdCnt >>> 0, 40);
  return b;
}

/** Gathers `len` bytes from `bufs` starting at byte `from` into one new Buffer. */
export function gather(bufs: readonly Buffer[], from: number, len: number): Buffer {
  const out = Buffer.allocUnsafe(len);
  let skip = from;
  let o = 0;
  for (const b of bufs) {
    if (o >= len) break;
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    o += b.copy(out, o, skip, Math.min(b.length, skip + (len - o)));
    skip = 0;
  }
  if (o < len) return out.subarray(0, o);
  return out;
}

/** Scatters `parts` (concatenated) into `bufs`; returns bytes written. */
export function scatter(bufs: readonly Buffer[], parts: readonly Buffer[]): number {
  let bi = 0;
  let bo = 0;
  let total = 0;
  for (const p of parts) {
    let po = 0;
    while (po < p.length) {
      const b = bufs[bi];
      if (!b) return total;
      const n = p.copy(b, bo, po);
      po += n;
      bo += n;
      total += n;
      if (bo >= b.length) {
        bi++;
        bo = 0;
      }
    }
  }
  return total;
}

export function capacity(bufs: readonly Buffer[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}
