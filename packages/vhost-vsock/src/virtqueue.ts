import { VhostVsockError } from './errors.js';
import type { GuestMemory } from './memory.js';

const VRING_DESC_F_NEXT = 1;
const VRING_DESC_F_WRITE = 2;
const VRING_DESC_F_INDIRECT = 4;
const VRING_AVAIL_F_NO_INTERRUPT = 1;
/**
 * Most descriptors one chain may have, indirect entries included: QEMU's VIRTQUEUE_MAX_SIZE and
 * Linux vhost's UIO_MAXIOV. A virtio-vsock driver uses 1 to ~20; the cap keeps a guest from
 * making the device walk (and hold) millions of descriptors through one indirect table.
 */
export const MAX_CHAIN_DESCRIPTORS = 1024;

/** A buffer of a descriptor chain, aliasing guest memory. */
export interface Chain {
  head: number;
  /** device-readable buffers, in order */
  readable: Buffer[];
  /** device-writable buffers, in order */
  writable: Buffer[];
}

/**
 * The device side of one split virtqueue (virtio 1.x, 2.7): pops descriptor chains from the
 * available ring and returns them on the used ring. Indices are read and published with
 * Atomics, so the vCPUs running the driver see the used entries before the index.
 */
export class SplitQueue {
  private readonly desc: Buffer;
  private readonly availIdx: Uint16Array;
  private readonly availRing: Uint16Array;
  private readonly availFlags: Uint16Array;
  private readonly used: Buffer;
  private readonly usedIdx: Uint16Array;
  lastAvail: number;
  private nextUsed: number;

  constructor(
    private readonly mem: GuestMemory,
    readonly index: number,
    readonly num: number,
    addrs: { desc: number; avail: number; used: number },
    base: number,
    /** translate ring addresses as front-end virtual addresses (vhost-user) or guest-physical */
    space: 'user' | 'guest',
  ) {
    const at = (a: number, len: number) =>
      space === 'user' ? mem.user(a, len) : mem.guest(a, len);
    this.desc = at(addrs.desc, 16 * num);
    const avail = at(addrs.avail, 6 + 2 * num);
    this.used = at(addrs.used, 6 + 8 * num);
    const u16 = (b: Buffer, off: number, n: number) => {
      if ((b.byteOffset + off) % 2 !== 0) {
        throw new VhostVsockError(
          'ERR_VHOST_VSOCK_PROTOCOL',
          `virtqueue ${index}: ring address not 2-byte aligned`,
        );
      }
      return new Uint16Array(b.buffer, b.byteOffset + off, n);
    };
    this.availFlags = u16(avail, 0, 1);
    this.availIdx = u16(avail, 2, 1);
    this.availRing = u16(avail, 4, num);
    this.usedIdx = u16(this.used, 2, 1);
    this.lastAvail = base & 0xffff;
    this.nextUsed = Atomics.load(this.usedIdx, 0);
  }

  /** Chains the driver made available and this side has not taken yet. */
  pending(): number {
    return (Atomics.load(this.availIdx, 0) - this.lastAvail) & 0xffff;
  }

  /** The next available chain, or null. */
  pop(): Chain | null {
    const pending = this.pending();
    if (pending === 0) return null;
    if (pending > this.num) {
      // the driver cannot have more than `num` chains outstanding: its index is corrupt
      this.bad(
        `avail index ${Atomics.load(this.availIdx, 0)} is ${pending} ahead of ${this.lastAvail} (queue size ${this.num})`,
      );
    }
    const head = Atomics.load(this.availRing, this.lastAvail % this.num);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (head >= this.num) this.bad(`available head ${head} >= queue size ${this.num}`);
    const chain: Chain = { head, readable: [], writable: [] };
    this.walk(this.desc, this.num, head, chain, false, { n: 0 });
    return chain;
  }

  private walk(
    table: Buffer,
    size: number,
    first: number,
    chain: Chain,
    nested: boolean,
    count: { n: number },
  ): void {
    let i = first;
    for (let n = 0; ; n++) {
      if (n >= size) this.bad(`descriptor chain from head ${chain.head} loops`);
      if (++count.n > MAX_CHAIN_DESCRIPTORS) {
        this.bad(
          `descriptor chain from head ${chain.head} has more than ${MAX_CHAIN_DESCRIPTORS} descriptors`,
        );
      }
      const o = i * 16;
      const addr64 = table.readBigUInt64LE(o);
      const len = table.readUInt32LE(o + 8);
      const flags = table.readUInt16LE(o + 12);
      // guest-physical addresses are far below 2^53; above that a JS number would round
      if (addr64 > BigInt(Number.MAX_SAFE_INTEGER - 0xffff_ffff)) {
        this.bad(`descriptor ${i} address 0x${addr64.toString(16)} is out of range`);
      }
      const addr = Number(addr64);
      if (flags & VRING_DESC_F_INDIRECT) {
        if (nested) this.bad('nested indirect descriptor');
        if (flags & VRING_DESC_F_NEXT) this.bad(`descriptor ${i} has both INDIRECT and NEXT`);
        if (len === 0 || len % 16 !== 0) {
          this.bad(`indirect table of ${len} bytes (descriptor ${i}) is not a multiple of 16`);
        }
        const t = this.mem.guest(addr, len);
        this.walk(t, len / 16, 0, chain, true, count);
        return;
      }
      if (len > 0) {
        const b = this.mem.guest(addr, len);
        if (flags & VRING_DESC_F_WRITE) chain.writable.push(b);
        else {
          if (chain.writable.length) this.bad('readable descriptor after a writable one');
          chain.readable.push(b);
        }
      }
      if (!(flags & VRING_DESC_F_NEXT)) return;
      i = table.readUInt16LE(o + 14);
      if (i >= size) this.bad(`next descriptor ${i} >= table size ${size}`);
    }
  }

  private bad(what: string): never {
    throw new VhostVsockError('ERR_VHOST_VSOCK_PROTOCOL', `virtqueue ${this.index}: ${what}`);
  }

  /** Returns chain `head` to the driver with `len` bytes written. */
  push(head: number, len: number): void {
    const o = 4 + (this.nextUsed % this.num) * 8;
    this.used.writeUInt32LE(head, o);
    this.used.writeUInt32LE(len, o + 4);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    Atomics.store(this.usedIdx, 0, this.nextUsed);
  }

  /** True unless the driver asked not to be interrupted (VRING_AVAIL_F_NO_INTERRUPT). */
  wantsInterrupt(): boolean {
    return (Atomics.load(this.availFlags, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }
}
