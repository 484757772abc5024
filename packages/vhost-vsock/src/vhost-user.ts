// The back-end side of the vhost-user protocol (QEMU docs/interop/vhost-user.rst) for a vsock
// device: one front-end (QEMU) connection at a time on a Unix socket we listen on.
import { VhostVsockError } from './errors.js';
import type { Logger } from './logger.js';
import { GuestMemory, type MemoryRegionInfo } from './memory.js';
import {
  closeFd,
  EAGAIN,
  readEventFd,
  recvWithFds,
  signalEventFd,
  type Watch,
  watchReadable,
  writeFd,
} from './native.js';
import { SplitQueue } from './virtqueue.js';
import type { VsockDevice } from './vsock.js';

// requests
export const REQ = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
} as const;
const REQ_NAMES = Object.fromEntries(Object.entries(REQ).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;

export const HDR = 12;
export const FLAG_VERSION = 0x1;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
const MAX_PAYLOAD = 4096;

export const F_INDIRECT_DESC = 28n;
export const F_PROTOCOL_FEATURES = 30n;
export const F_VERSION_1 = 32n;
export const PF_REPLY_ACK = 3n;
export const PF_CONFIG = 9n;

export const DEVICE_FEATURES =
  (1n << F_VERSION_1) | (1n << F_INDIRECT_DESC) | (1n << F_PROTOCOL_FEATURES);
export const PROTOCOL_FEATURES = (1n << PF_REPLY_ACK) | (1n << PF_CONFIG);
const NUM_QUEUES = 3; // rx, tx, event
const VRING_NOFD = 0x100;
const MAX_QUEUE_SIZE = 32768;

interface Ring {
  num: number;
  addr?: { desc: number; avail: number; used: number };
  base: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  enabled: boolean;
  watch?: Watch;
  queue?: SplitQueue;
}

function newRing(): Ring {
  // Rings run once they have a kick fd unless the front-end disabled them (SET_VRING_ENABLE 0):
  // QEMU versions differ in whether they send SET_VRING_ENABLE 1 at start.
  return { num: 0, base: 0, kickFd: -1, callFd: -1, errFd: -1, enabled: true };
}

/** One front-end connection (QEMU). Closing it resets the device. */
export class FrontEnd {
  private watch: Watch | null;
  private inbuf: Buffer = Buffer.alloc(0);
  private infds: number[] = [];
  private protocolFeatures = 0n;
  private memory: GuestMemory | null = null;
  private readonly rings: Ring[] = Array.from({ length: NUM_QUEUES }, newRing);
  private closed = false;

  constructor(
    private readonly fd: number,
    private readonly device: VsockDevice,
    private readonly guestCid: number,
    private readonly logger: Logger,
    private readonly onClose: () => void,
  ) {
    this.watch = watchReadable(fd, () => this.onReadable());
  }

  // Reads exactly one message at a time (header, then payload): SCM_RIGHTS fds arrive with the
  // first bytes of the message they were sent with, so they are never mixed up between messages.
  private onReadable(): void {
    for (;;) {
      if (this.closed) return;
      const want =
        this.inbuf.length < HDR
          ? HDR - this.inbuf.length
          : HDR + this.inbuf.readUInt32LE(8) - this.inbuf.length;
      if (want > 0) {
        const r = recvWithFds(this.fd, want);
        if (r.n === -EAGAIN) return;
        for (const f of r.fds) this.infds.push(f);
        if (r.n <= 0) {
          this.close(r.n === 0 ? 'front-end disconnected' : `front-end read failed: errno ${-r.n}`);
          return;
        }
        this.inbuf = this.inbuf.length ? Buffer.concat([this.inbuf, r.data]) : r.data;
        if (this.inbuf.length < HDR) continue;
      }
      const size = this.inbuf.readUInt32LE(8);
      if (size > MAX_PAYLOAD) {
        this.close(`vhost-user message payload of ${size} bytes is too large`);
        return;
      }
      if (this.inbuf.length < HDR + size) continue;
      const req = this.inbuf.readUInt32LE(0);
      const flags = this.inbuf.readUInt32LE(4);
      const payload = this.inbuf.subarray(HDR, HDR + size);
      this.inbuf = Buffer.alloc(0);
      const fds = this.infds;
      this.infds = [];
      try {
        this.handle(req, flags, payload, fds);
      } catch (err) {
        for (const f of fds) closeFd(f);
        this.logger.error(
          { err, request: REQ_NAMES[req] ?? req },
          'vhost-vsock: vhost-user request failed; dropping the front-end',
        );
        this.close(`request ${REQ_NAMES[req] ?? req} failed: ${(err as Error).message}`);
        return;
      }
    }
  }

  private reply(req: number, payload: Buffer): void {
    const m = Buffer.alloc(HDR + payload.length);
    m.writeUInt32LE(req, 0);
    m.writeUInt32LE(FLAG_VERSION | FLAG_REPLY, 4);
    m.writeUInt32LE(payload.length, 8);
    payload.copy(m, HDR);
    const n = writeFd(this.fd, m);
    if (n !== m.length) throw protocol(`reply to ${REQ_NAMES[req] ?? req} not sent (${n})`);
  }

  private replyU64(req: number, v: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    this.reply(req, b);
  }

  private handle(req: number, flags: number, p: Buffer, fds: number[]): void {
    const name = REQ_NAMES[req] ?? `request ${req}`;
    this.logger.debug({ request: name, size: p.length, fds: fds.length }, 'vhost-vsock: request');
    let replied = false;
    const need = (n: number) => {
      if (p.length < n) throw protocol(`${name}: payload ${p.length} bytes, expected ${n}`);
    };
    const ring = (i: number): Ring => {
      const r = this.rings[i];
      if (!r) throw protocol(`${name}: queue index ${i} (this device has ${NUM_QUEUES})`);
      return r;
    };
    let status = 0n;
    switch (req) {
      case REQ.GET_FEATURES:
        this.replyU64(req, DEVICE_FEATURES);
        replied = true;
        break;
      case REQ.SET_FEATURES: {
        need(8);
        const f = p.readBigUInt64LE(0);
        if (f & ~DEVICE_FEATURES)
          throw protocol(`SET_FEATURES 0x${f.toString(16)} has bits not offered`);

        this.logger.debug({ features: `0x${f.toString(16)}` }, 'vhost-vsock: features acked');
        break;
      }
      case REQ.GET_PROTOCOL_FEATURES:
        this.replyU64(req, PROTOCOL_FEATURES);
        replied = true;
        break;
      case REQ.SET_PROTOCOL_FEATURES:
        need(8);
        this.protocolFeatures = p.readBigUInt64LE(0) & PROTOCOL_FEATURES;
        break;
      case REQ.SET_OWNER:
        break;
      case REQ.RESET_OWNER:
        this.stopAll('RESET_OWNER');
        break;
      case REQ.GET_CONFIG: {
        need(12);
        const offset = p.readUInt32LE(0);
        const size = p.readUInt32LE(4);
        const config = Buffer.alloc(8);
        config.writeBigUInt64LE(BigInt(this.guestCid));
        const out = Buffer.alloc(12 + size);
        p.copy(out, 0, 0, 12);
        config.copy(out, 12, Math.min(offset, 8), Math.min(offset + size, 8));
        this.reply(req, out);
        replied = true;
        break;
      }
      case REQ.SET_CONFIG:
        status = 1n; // the vsock config space is read-only
        break;
      case REQ.SET_MEM_TABLE: {
        need(8);
        const n = p.readUInt32LE(0);
        need(8 + n * 32);
        if (fds.length !== n) throw protocol(`SET_MEM_TABLE: ${n} regions but ${fds.length} fds`);
        const infos: MemoryRegionInfo[] = [];
        for (let i = 0; i < n; i++) {
          const o = 8 + i * 32;
          infos.push({
            guestPhysAddr: p.readBigUInt64LE(o),
            size: p.readBigUInt64LE(o + 8),
            userAddr: p.readBigUInt64LE(o + 16),
            mmapOffset: p.readBigUInt64LE(o + 24),
          });
        }
        const mem = new GuestMemory(infos, fds); // mapped: the fds are closed below
        const old = this.memory;
        this.memory = mem;
        // rings built on the old table are rebuilt on the new one
        for (let i = 0; i < NUM_QUEUES; i++) {
          const r = this.rings[i] as Ring;
          if (r.queue) {
            r.base = r.queue.lastAvail;
            r.queue = undefined;
          }
        }
        old?.close();
        this.logger.debug({ regions: n }, 'vhost-vsock: memory table set');
        this.maybeStart();
        break;
      }
      case REQ.SET_VRING_NUM: {
        need(8);
        const r = ring(p.readUInt32LE(0));
        const num = p.readUInt32LE(4);
        if (num === 0 || num > MAX_QUEUE_SIZE || (num & (num - 1)) !== 0) {
          throw protocol(`SET_VRING_NUM: size ${num} is not a power of 2 up to ${MAX_QUEUE_SIZE}`);
        }
        r.num = num;
        break;
      }
      case REQ.SET_VRING_ADDR: {
        need(40);
        const r = ring(p.readUInt32LE(0));
        r.addr = {
          desc: Number(p.readBigUInt64LE(8)),
          used: Number(p.readBigUInt64LE(16)),
          avail: Number(p.readBigUInt64LE(24)),
        };
        r.queue = undefined;
        this.maybeStart();
        break;
      }
      case REQ.SET_VRING_BASE: {
        need(8);
        const r = ring(p.readUInt32LE(0));
        r.base = p.readUInt32LE(4) & 0xffff;
        break;
      }
      case REQ.GET_VRING_BASE: {
        need(8);
        const i = p.readUInt32LE(0);
        const r = ring(i);
        const base = r.queue ? r.queue.lastAvail : r.base;
        this.stopRing(i, 'GET_VRING_BASE');
        const out = Buffer.alloc(8);
        out.writeUInt32LE(i, 0);
        out.writeUInt32LE(base, 4);
        this.reply(req, out);
        replied = true;
        break;
      }
      case REQ.SET_VRING_KICK:
      case REQ.SET_VRING_CALL:
      case REQ.SET_VRING_ERR: {
        need(8);
        const v = Number(p.readBigUInt64LE(0) & 0x1ffn);
        const r = ring(v & 0xff);
        const fd = v & VRING_NOFD ? -1 : fds.shift();
        if (fd === undefined) throw protocol(`${name}: no fd passed`);
        const field =
          req === REQ.SET_VRING_KICK ? 'kickFd' : req === REQ.SET_VRING_CALL ? 'callFd' : 'errFd';
        if (req === REQ.SET_VRING_KICK) {
          r.watch?.close();
          r.watch = undefined;
        }
        closeFd(r[field]);
        r[field] = fd;
        if (req === REQ.SET_VRING_KICK) {
          if (fd < 0)
            throw protocol('SET_VRING_KICK without an fd (polling mode) is not supported');
          this.maybeStart();
        }
        break;
      }
      case REQ.SET_VRING_ENABLE: {
        need(8);
        const r = ring(p.readUInt32LE(0));
        r.enabled = p.readUInt32LE(4) !== 0;
        this.maybeStart();
        break;
      }
      default:
        this.logger.warn({ request: req }, 'vhost-vsock: unsupported vhost-user request');
        status = 1n;
    }
    for (const f of fds) closeFd(f);
    if (!replied && flags & FLAG_NEED_REPLY && this.protocolFeatures & (1n << PF_REPLY_ACK)) {
      this.replyU64(req, status);
    }
  }

  /** Starts rings that have everything: memory, size, addresses, a kick fd, enabled. */
  private maybeStart(): void {
    const mem = this.memory;
    if (!mem) return;
    this.rings.forEach((r, i) => {
      if (r.queue || !r.addr || !r.num || r.kickFd < 0 || !r.enabled) return;
      r.queue = new SplitQueue(mem, i, r.num, r.addr, r.base, 'user');
      r.watch?.close();
      r.watch = watchReadable(r.kickFd, () => {
        readEventFd(r.kickFd);
        this.onKick(i);
      });
    });
    const rx = this.rings[0]?.queue;
    const tx = this.rings[1]?.queue;
    if (rx && tx && (!this.device.running || !this.device.uses(rx, tx))) {
      // first start, or the rings were rebuilt on a new memory table while running
      if (!this.device.running)
        this.logger.info({ guestCid: this.guestCid }, 'vhost-vsock: device started');
      this.device.start({
        rx,
        tx,
        notify: (q) => this.notify(q),
        fail: (err, q) => this.ringFailed(err, q.index),
      });
      this.onKick(1);
    }
  }

  private onKick(i: number): void {
    if (this.closed) return;
    try {
      if (i === 1) this.device.processTx();
      else if (i === 0) this.device.processRx();
    } catch (err) {
      this.ringFailed(err, i);
    }
  }

  /** A ring broke the rules: the guest driver is told (error eventfd), the device stops. */
  private ringFailed(err: unknown, i: number): void {
    this.logger.error({ err, queue: i }, 'vhost-vsock: virtqueue error; device stopped');
    const r = this.rings[i];
    if (r && r.errFd >= 0) signalEventFd(r.errFd);
    this.stopAll(`virtqueue ${i} error`);
  }

  private notify(q: SplitQueue): void {
    const r = this.rings[q.index];
    if (r && r.callFd >= 0 && q.wantsInterrupt()) signalEventFd(r.callFd);
  }

  private stopRing(i: number, why: string): void {
    const r = this.rings[i] as Ring;
    r.watch?.close();
    r.watch = undefined;
    if (r.queue) r.base = r.queue.lastAvail;
    r.queue = undefined;
    if (this.device.running && (i === 0 || i === 1)) this.device.reset(why);
  }

  private stopAll(why: string): void {
    for (let i = 0; i < NUM_QUEUES; i++) this.stopRing(i, why);
    for (const r of this.rings) {
      closeFd(r.kickFd);
      closeFd(r.callFd);
      closeFd(r.errFd);
      Object.assign(r, newRing());
    }
    this.memory?.close();
    this.memory = null;
  }

  close(why: string): void {
    if (this.closed) return;
    this.closed = true;
    this.logger.info({ reason: why }, 'vhost-vsock: front-end connection closed');
    this.watch?.close();
    this.watch = null;
    this.stopAll(why);
    for (const f of this.infds) closeFd(f);
    this.infds = [];
    closeFd(this.fd);
    this.onClose();
  }
}

function protocol(msg: string): VhostVsockError {
  return new VhostVsockError('ERR_VHOST_VSOCK_PROTOCOL', `vhost-user: ${msg}`);
}
