import { VhostVsockError } from './errors.js';
import { closeFd, type Mapping, mapShared } from './native.js';

/** One region of SET_MEM_TABLE. */
export interface MemoryRegionInfo {
  guestPhysAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}

interface Region {
  gpa: number;
  uva: number;
  size: number;
  view: Buffer;
  mapping: Mapping;
}

/**
 * The guest memory table: every region mmapped from the fd the front-end passed. Descriptor
 * addresses are guest-physical; ring addresses (SET_VRING_ADDR) are in the front-end's virtual
 * address space: both translate through the table. Addresses are kept as JS numbers (exact up
 * to 2^53, far above any guest physical or x86-64 user address).
 */
export class GuestMemory {
  private readonly regions: Region[] = [];

  constructor(infos: readonly MemoryRegionInfo[], fds: readonly number[]) {
    try {
      infos.forEach((info, i) => {
        const fd = fds[i] as number;
        const size = Number(info.size);
        const off = Number(info.mmapOffset);
        const mapping = mapShared(fd, size + off);
        closeFd(fd);
        this.regions.push({
          gpa: Number(info.guestPhysAddr),
          uva: Number(info.userAddr),
          size,
          view: mapping.buffer.subarray(off, off + size),
          mapping,
        });
      });
    } catch (err) {
      for (let i = this.regions.length + 1; i < fds.length; i++) closeFd(fds[i] as number);
      this.close();
      throw err;
    }
  }

  get regionCount(): number {
    return this.regions.length;
  }

  /** `len` bytes at guest-physical `gpa`, as a Buffer aliasing guest memory. */
  guest(gpa: number, len: number): Buffer {
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa + len <= r.gpa + r.size) {
        const o = gpa - r.gpa;
        return r.view.subarray(o, o + len);
      }
    }
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_MEMORY',
      `guest address 0x${gpa.toString(16)} (+${len}) is outside the memory table (${this.describe()})`,
    );
  }

  /** `len` bytes at front-end virtual address `uva` (ring addresses). */
  user(uva: number, len: number): Buffer {
    for (const r of this.regions) {
      if (uva >= r.uva && uva + len <= r.uva + r.size) {
        const o = uva - r.uva;
        return r.view.subarray(o, o + len);
      }
    }
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_MEMORY',
      `ring address 0x${uva.toString(16)} (+${len}) is outside the memory table (${this.describe()})`,
    );
  }

  private describe(): string {
    return this.regions
      .map((r) => `gpa 0x${r.gpa.toString(16)}+0x${r.size.toString(16)}`)
      .join(', ');
  }

  close(): void {
    for (const r of this.regions.splice(0)) r.mapping.unmap();
  }
}
