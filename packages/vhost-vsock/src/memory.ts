import { VhostVsockError } from './errors.js';
import { fileSize, type Mapping, mapShared } from './native.js';

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

  /** Maps each region from its fd; the fds stay the caller's to close (also on failure). */
  constructor(infos: readonly MemoryRegionInfo[], fds: readonly number[]) {
    const LIMIT = BigInt(Number.MAX_SAFE_INTEGER);
    try {
      infos.forEach((info, i) => {
        const fd = fds[i] as number;
        const what = `memory region ${i} (gpa 0x${info.guestPhysAddr.toString(16)}, size 0x${info.size.toString(16)}, mmap offset 0x${info.mmapOffset.toString(16)})`;
        if (info.size === 0n) throw memoryError(`${what} is empty`);
        if (
          info.guestPhysAddr + info.size > LIMIT ||
          info.userAddr + info.size > LIMIT ||
          info.mmapOffset + info.size > LIMIT
        ) {
          throw memoryError(`${what} reaches past 2^53`);
        }
        const size = Number(info.size);
        const off = Number(info.mmapOffset);
        // mapping past the end of the file would SIGBUS (kill the process) on first access
        const fileLen = fileSize(fd);
        if (fileLen >= 0 && off + size > fileLen) {
          throw memoryError(`${what} ends past the end of its file (${fileLen} bytes)`);
        }
        const mapping = mapShared(fd, size + off);
        this.regions.push({
          gpa: Number(info.guestPhysAddr),
          uva: Number(info.userAddr),
          size,
          view: mapping.buffer.subarray(off, off + size),
          mapping,
        });
      });
    } catch (err) {
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

function memoryError(msg: string): VhostVsockError {
  return new VhostVsockError(
    'ERR_VHOST_VSOCK_MEMORY',
    `SET_MEM_TABLE: ${msg}; the front-end must pass regions inside their shared memory files`,
  );
}
