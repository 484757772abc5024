// The driver side of a vhost-user-vsock device, in-process, for the fast tests: a vhost-user
// front-end (what QEMU does: handshake, memfd guest memory, eventfds) plus a guest virtio-vsock
// driver (split rings, packets, credit flow control: what the guest kernel does). It is a second
// implementation of the protocol written against the specification, not a mock of the backend.
import { EventEmitter } from 'node:events';
import {
  closeFd,
  EAGAIN,
  mapShared,
  newEventFd,
  newMemfd,
  readEventFd,
  recvWithFds,
  sendWithFds,
  signalEventFd,
  unixConnect,
  type Watch,
  watchReadable,
} from '../src/native.js';
import {
  decodeHeader,
  encodeHeader,
  HDR_LEN,
  OP_CREDIT_REQUEST,
  OP_CREDIT_UPDATE,
  OP_REQUEST,
  OP_RESPONSE,
  OP_RST,
  OP_RW,
  OP_SHUTDOWN,
  type PacketHeader,
  SHUTDOWN_RCV,
  SHUTDOWN_SEND,
  TYPE_STREAM,
} from '../src/packet.js';
import { FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, HDR, REQ } from '../src/vhost-user.js';

const DEFAULT_MEM_SIZE = 4 * 1024 * 1024;
const GPA_BASE = 0x10_0000; // guest-physical address of the memfd's first byte
const UVA_BASE = 0x7f00_0000_0000; // the "front-end virtual address" of the same byte
const DEFAULT_QSIZE = 64;
const RX_DATA = 4096;
const TX_DATA = 4096;
const NO_SHUTDOWN = 0;

interface QueueLayout {
  desc: number;
  avail: number;
  used: number;
  kick: number;
  call: number;
  lastUsed: number;
  availIdx: number;
}

/** A descriptor as a hostile guest writes it (any address, length, flags). */
export interface RawDesc {
  addr: bigint;
  len: number;
  flags: number;
  next?: number;
}

export const DESC_NEXT = 1;
export const DESC_WRITE = 2;
export const DESC_INDIRECT = 4;

/** A guest-side stream. */
export class DriverConn extends EventEmitter {
  state: 'connecting' | 'established' | 'closed' = 'connecting';
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  txCnt = 0;
  rxCnt = 0;
  fwdCnt = 0;
  lastSentFwd = 0;
  peerShutdown = NO_SHUTDOWN;
  received: Buffer[] = [];
  /** when false, received bytes are not consumed (credit is not returned) */
  consuming = true;
  queued: Buffer[] = [];
  endQueued = false;
  creditUpdatesSeen = 0;
  maxInFlightSeen = 0;
  constructor(
    readonly driver: VsockDriver,
    readonly localPort: number,
    readonly remoteCid: number,
    readonly remotePort: number,
  ) {
    super();
  }
  write(b: Buffer): void {
    this.queued.push(b);
    this.driver.flush();
  }
  end(): void {
    this.endQueued = true;
    this.driver.flush();
  }
  /** consumes what was held back and returns the credit */
  consume(): void {
    this.consuming = true;
    const n = this.rxCnt - this.fwdCnt;
    this.fwdCnt = this.rxCnt;
    if (n > 0) this.driver.control(this, OP_CREDIT_UPDATE, 0);
  }
  rst(): void {
    this.driver.control(this, OP_RST, 0);
    this.state = 'closed';
  }
  data(): Buffer {
    return Buffer.concat(this.received);
  }
}

/**
 * One vhost-user front-end + guest driver. `guestCid` is learnt from GET_CONFIG; the guest's
 * receive buffer per connection is `bufAlloc` bytes.
 */
export class VsockDriver {
  readonly mem: Buffer;
  private readonly memfd: number;
  private readonly unmap: () => void;
  private fd = -1;
  private watch: Watch | null = null;
  private inbuf: Buffer = Buffer.alloc(0);
  private waiting: ((b: Buffer) => void)[] = [];
  private readonly q: QueueLayout[] = [];
  private readonly callWatches: Watch[] = [];
  private alloc = 0;
  private readonly txFree: number[] = [];
  private readonly conns = new Map<string, DriverConn>();
  private readonly listeners = new Map<number, (c: DriverConn) => boolean>();
  private readonly pendingTx: { hdr: PacketHeader; data?: Buffer }[] = [];
  guestCid = 0;
  nextPort = 50_000;
  readonly bufAlloc: number;
  violations: string[] = [];
  packetsSeen: Record<string, number> = {};
  /** tx chains the device has returned on the used ring */
  txConsumed = 0;
  /** while true, the guest takes nothing off the rx used ring and posts no new rx buffers */
  rxPaused = false;

  /** queue size of all three rings */
  readonly qsize: number;
  /** guest memory (one memfd region) */
  readonly memSize: number;

  constructor(opts: { bufAlloc?: number; queueSize?: number; memSize?: number } = {}) {
    this.bufAlloc = opts.bufAlloc ?? 64 * 1024;
    this.qsize = opts.queueSize ?? DEFAULT_QSIZE;
    this.memSize = opts.memSize ?? DEFAULT_MEM_SIZE;
    this.memfd = newMemfd('vsock-driver', this.memSize);
    const m = mapShared(this.memfd, this.memSize);
    this.mem = m.buffer;
    this.unmap = () => m.unmap();
  }

  private take(n: number, align = 16): number {
    this.alloc = Math.ceil(this.alloc / align) * align;
    const o = this.alloc;
    this.alloc += n;
    if (this.alloc > this.memSize) throw new Error('driver memory exhausted');
    return o;
  }

  // ------------------------------------------------------------ vhost-user front-end

  private send(req: number, payload: Buffer, fds: number[] = [], needReply = false): void {
    const m = Buffer.alloc(HDR + payload.length);
    m.writeUInt32LE(req, 0);
    m.writeUInt32LE(FLAG_VERSION | (needReply ? FLAG_NEED_REPLY : 0), 4);
    m.writeUInt32LE(payload.length, 8);
    payload.copy(m, HDR);
    const n = sendWithFds(this.fd, m, fds);
    if (n !== m.length) throw new Error(`sendmsg: ${n}`);
  }

  private reply(): Promise<Buffer> {
    return new Promise((ok) => this.waiting.push(ok));
  }

  private onReadable(): void {
    for (;;) {
      const r = recvWithFds(this.fd, 4096);
      if (r.n === -EAGAIN) break;
      if (r.n <= 0) {
        this.watch?.close();
        this.watch = null;
        return;
      }
      this.inbuf = Buffer.concat([this.inbuf, r.data]);
    }
    while (this.inbuf.length >= HDR) {
      const size = this.inbuf.readUInt32LE(8);
      if (this.inbuf.length < HDR + size) break;
      const flags = this.inbuf.readUInt32LE(4);
      if (!(flags & FLAG_REPLY)) this.violations.push('message without the reply flag');
      const p = Buffer.from(this.inbuf.subarray(HDR, HDR + size));
      this.inbuf = this.inbuf.subarray(HDR + size);
      this.waiting.shift()?.(p);
    }
  }

  private async request(req: number, payload: Buffer, fds: number[] = []): Promise<Buffer> {
    const r = this.reply();
    this.send(req, payload, fds);
    return r;
  }

  private async ack(req: number, payload: Buffer, fds: number[] = []): Promise<bigint> {
    const r = this.reply();
    this.send(req, payload, fds, true);
    return (await r).readBigUInt64LE(0);
  }

  private u64(v: bigint): Buffer {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    return b;
  }

  private state(i: number, n: number): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(i, 0);
    b.writeUInt32LE(n, 4);
    return b;
  }

  /** Connects to the backend and runs QEMU's handshake order; the device is live after this. */
  async start(socketPath: string): Promise<void> {
    this.fd = unixConnect(socketPath);
    // replies are awaited through uv_poll (reads use MSG_DONTWAIT), like the backend's reads
    this.watch = watchReadable(this.fd, () => this.onReadable());
    const features = (await this.request(REQ.GET_FEATURES, Buffer.alloc(0))).readBigUInt64LE(0);
    const pf = (await this.request(REQ.GET_PROTOCOL_FEATURES, Buffer.alloc(0))).readBigUInt64LE(0);
    if (!(pf & (1n << 9n))) throw new Error('backend lacks the CONFIG protocol feature');
    this.send(REQ.SET_PROTOCOL_FEATURES, this.u64(pf & ((1n << 3n) | (1n << 9n))));
    const cfgReq = Buffer.alloc(12 + 8);
    cfgReq.writeUInt32LE(0, 0);
    cfgReq.writeUInt32LE(8, 4);
    const cfg = await this.request(REQ.GET_CONFIG, cfgReq);
    this.guestCid = Number(cfg.readBigUInt64LE(12));
    this.send(REQ.SET_OWNER, Buffer.alloc(0));
    const want = features & ((1n << 32n) | (1n << 30n));
    if (await this.ack(REQ.SET_FEATURES, this.u64(want))) throw new Error('SET_FEATURES refused');
    await this.setMemTable();
    this.alloc = 0;
    for (let i = 0; i < 3; i++) {
      const desc = this.take(16 * this.qsize);
      const avail = this.take(6 + 2 * this.qsize, 2);
      const used = this.take(6 + 8 * this.qsize, 4);
      const kick = newEventFd();
      const call = newEventFd();
      this.q.push({ desc, avail, used, kick, call, lastUsed: 0, availIdx: 0 });
      this.send(REQ.SET_VRING_NUM, this.state(i, this.qsize));
      const addr = Buffer.alloc(40);
      addr.writeUInt32LE(i, 0);
      addr.writeBigUInt64LE(BigInt(UVA_BASE + desc), 8);
      addr.writeBigUInt64LE(BigInt(UVA_BASE + used), 16);
      addr.writeBigUInt64LE(BigInt(UVA_BASE + avail), 24);
      this.send(REQ.SET_VRING_ADDR, addr);
      this.send(REQ.SET_VRING_BASE, this.state(i, 0));
      this.send(REQ.SET_VRING_CALL, this.u64(BigInt(i)), [call]);
      this.callWatches.push(
        watchReadable(call, () => {
          readEventFd(call);
          if (i === 0 && !this.rxPaused) this.reapRx();
          if (i === 1) this.reapTx();
        }),
      );
    }
    // rx: chains of two descriptors (header, data), like older Linux drivers
    for (let h = 0; h < this.qsize / 2; h++) this.postRx(h * 2);
    for (let d = 0; d < this.qsize / 2; d++) this.txFree.push(d);
    this.txData = this.take((TX_DATA * this.qsize) / 2);
    this.txHdr = this.take((HDR_LEN * this.qsize) / 2);
    for (let i = 0; i < 3; i++) {
      const q = this.q[i] as QueueLayout;
      if (await this.ack(REQ.SET_VRING_KICK, this.u64(BigInt(i)), [q.kick]))
        throw new Error('kick refused');
      if (await this.ack(REQ.SET_VRING_ENABLE, this.state(i, 1))) throw new Error('enable refused');
    }
  }

  private txData = 0;
  private txHdr = 0;
  private rxArea = new Map<number, { hdr: number; data: number }>();

  private postRx(head: number): void {
    const q = this.q[0] as QueueLayout;
    let area = this.rxArea.get(head);
    if (!area) {
      area = { hdr: this.take(HDR_LEN, 8), data: this.take(RX_DATA) };
      this.rxArea.set(head, area);
    }
    const d0 = q.desc + head * 16;
    this.mem.writeBigUInt64LE(BigInt(GPA_BASE + area.hdr), d0);
    this.mem.writeUInt32LE(HDR_LEN, d0 + 8);
    this.mem.writeUInt16LE(2 | 1, d0 + 12); // WRITE | NEXT
    this.mem.writeUInt16LE(head + 1, d0 + 14);
    const d1 = q.desc + (head + 1) * 16;
    this.mem.writeBigUInt64LE(BigInt(GPA_BASE + area.data), d1);
    this.mem.writeUInt32LE(RX_DATA, d1 + 8);
    this.mem.writeUInt16LE(2, d1 + 12);
    this.publish(0, head);
  }

  private publish(qi: number, head: number): void {
    const q = this.q[qi] as QueueLayout;
    this.mem.writeUInt16LE(head, q.avail + 4 + 2 * (q.availIdx % this.qsize));
    q.availIdx = (q.availIdx + 1) & 0xffff;
    const idx = new Uint16Array(this.mem.buffer, this.mem.byteOffset + q.avail + 2, 1);
    Atomics.store(idx, 0, q.availIdx);
  }

  private kick(qi: number): void {
    signalEventFd((this.q[qi] as QueueLayout).kick);
  }

  private *usedEntries(qi: number): Generator<{ id: number; len: number }> {
    const q = this.q[qi] as QueueLayout;
    const idx = new Uint16Array(this.mem.buffer, this.mem.byteOffset + q.used + 2, 1);
    while (q.lastUsed !== Atomics.load(idx, 0)) {
      const o = q.used + 4 + 8 * (q.lastUsed % this.qsize);
      q.lastUsed = (q.lastUsed + 1) & 0xffff;
      yield { id: this.mem.readUInt32LE(o), len: this.mem.readUInt32LE(o + 4) };
    }
  }

  // ------------------------------------------------------------ guest virtio-vsock driver

  private reapRx(): void {
    let reposted = false;
    for (const { id, len } of this.usedEntries(0)) {
      const area = this.rxArea.get(id);
      if (!area) {
        this.violations.push(`rx used id ${id} was never posted`);
        continue;
      }
      if (len >= HDR_LEN) {
        const h = decodeHeader(this.mem.subarray(area.hdr, area.hdr + HDR_LEN));
        if (h.len !== len - HDR_LEN) this.violations.push(`rx len ${h.len} vs used len ${len}`);
        const data = Buffer.from(this.mem.subarray(area.data, area.data + h.len));
        this.onPacket(h, data);
      }
      this.postRx(id);
      reposted = true;
    }
    if (reposted) this.kick(0);
    this.flush();
  }

  private reapTx(): void {
    for (const { id } of this.usedEntries(1)) {
      this.txConsumed++;
      if (id % 2 === 0 && id < this.qsize) this.txFree.push(id / 2);
      else this.violations.push(`tx used id ${id} was never posted`);
    }
    this.flush();
  }

  private onPacket(h: PacketHeader, data: Buffer): void {
    const name =
      ['?', 'REQUEST', 'RESPONSE', 'RST', 'SHUTDOWN', 'RW', 'CREDIT_UPDATE', 'CREDIT_REQUEST'][
        h.op
      ] ?? '?';
    this.packetsSeen[name] = (this.packetsSeen[name] ?? 0) + 1;
    if (h.dstCid !== this.guestCid) this.violations.push(`packet to CID ${h.dstCid}`);
    const key = `${h.dstPort}:${h.srcCid}:${h.srcPort}`;
    let c = this.conns.get(key);
    if (c) {
      c.peerBufAlloc = h.bufAlloc;
      c.peerFwdCnt = h.fwdCnt;
    }
    switch (h.op) {
      case OP_REQUEST: {
        const accept = this.listeners.get(h.dstPort);
        if (!accept || c) {
          this.queuePacket(this.hdr(h.dstPort, h.srcCid, h.srcPort, OP_RST, 0, 0, 0));
          return;
        }
        c = new DriverConn(this, h.dstPort, h.srcCid, h.srcPort);
        c.peerBufAlloc = h.bufAlloc;
        c.peerFwdCnt = h.fwdCnt;
        c.state = 'established';
        this.conns.set(key, c);
        if (!accept(c)) {
          this.conns.delete(key);
          this.queuePacket(this.hdr(h.dstPort, h.srcCid, h.srcPort, OP_RST, 0, 0, 0));
          return;
        }
        this.control(c, OP_RESPONSE, 0);
        return;
      }
      case OP_RESPONSE:
        if (c && c.state === 'connecting') {
          c.state = 'established';
          c.emit('connect');
        }
        return;
      case OP_RST:
        if (c && c.state === 'connecting') {
          c.state = 'closed';
          this.conns.delete(key);
          c.emit('refused');
        } else if (c) {
          c.state = 'closed';
          this.conns.delete(key);
          c.emit('rst');
          c.emit('close');
        }
        return;
      case OP_RW: {
        if (!c) return;
        const inFlight = c.rxCnt + data.length - c.fwdCnt;
        c.maxInFlightSeen = Math.max(c.maxInFlightSeen, inFlight);
        if (inFlight > this.bufAlloc)
          this.violations.push(`device overran our credit: ${inFlight} > ${this.bufAlloc}`);
        c.rxCnt += data.length;
        c.received.push(data);
        if (c.consuming) {
          c.fwdCnt = c.rxCnt;
          // like Linux: tell the device when its view of our free space gets low
          if (this.bufAlloc - (c.rxCnt - c.lastSentFwd) < this.bufAlloc / 2)
            this.control(c, OP_CREDIT_UPDATE, 0);
        }
        c.emit('data', data);
        return;
      }
      case OP_SHUTDOWN:
        if (!c) return;
        c.peerShutdown |= h.flags;
        if (h.flags & SHUTDOWN_SEND) c.emit('end');
        if (c.peerShutdown === (SHUTDOWN_RCV | SHUTDOWN_SEND)) {
          // like Linux: a fully shut peer gets our RST
          this.control(c, OP_RST, 0);
          c.state = 'closed';
          this.conns.delete(key);
          c.emit('close');
        }
        return;
      case OP_CREDIT_UPDATE:
        if (c) c.creditUpdatesSeen++;
        this.flush();
        return;
      case OP_CREDIT_REQUEST:
        if (c) this.control(c, OP_CREDIT_UPDATE, 0);
        return;
    }
  }

  private hdr(
    srcPort: number,
    dstCid: number,
    dstPort: number,
    op: number,
    flags: number,
    len: number,
    fwd: number,
  ): PacketHeader {
    return {
      srcCid: this.guestCid,
      dstCid,
      srcPort,
      dstPort,
      len,
      type: TYPE_STREAM,
      op,
      flags,
      bufAlloc: this.bufAlloc,
      fwdCnt: fwd,
    };
  }

  control(c: DriverConn, op: number, flags: number): void {
    c.lastSentFwd = c.fwdCnt;
    this.queuePacket(this.hdr(c.localPort, c.remoteCid, c.remotePort, op, flags, 0, c.fwdCnt));
  }

  // ------------------------------------------------------------ a hostile guest

  /** Takes the rx ring back up (answers everything the device wrote meanwhile). */
  resumeRx(): void {
    this.rxPaused = false;
    this.reapRx();
  }

  /** `n` bytes of guest memory for hand-made tables and buffers: offset in `mem` and its GPA. */
  scratch(n: number): { off: number; gpa: bigint } {
    const off = this.take(n);
    return { off, gpa: BigInt(GPA_BASE + off) };
  }

  /** Writes descriptor `i` of a table at `off` in `mem`. */
  writeDesc(off: number, i: number, d: RawDesc): void {
    const o = off + i * 16;
    this.mem.writeBigUInt64LE(BigInt.asUintN(64, d.addr), o);
    this.mem.writeUInt32LE(d.len >>> 0, o + 8);
    this.mem.writeUInt16LE(d.flags, o + 12);
    this.mem.writeUInt16LE(d.next ?? 0, o + 14);
  }

  /** Puts a hand-made chain on tx (one or two descriptors in a free slot) and kicks. */
  txRaw(d0: RawDesc, d1?: RawDesc): void {
    const slot = this.txFree.shift();
    if (slot === undefined) throw new Error('no free tx slot');
    const q = this.q[1] as QueueLayout;
    const head = slot * 2;
    this.writeDesc(q.desc, head, { next: head + 1, ...d0 });
    if (d1) this.writeDesc(q.desc, head + 1, d1);
    this.publish(1, head);
    this.kick(1);
  }

  /** A packet header the guest could write, with `over` replacing any field. */
  header(over: Partial<PacketHeader>): PacketHeader {
    return { ...this.hdr(0, 2, 0, OP_RW, 0, 0, 0), ...over };
  }

  /** Sends a packet with any header (payload up to 4096 bytes, whatever `hdr.len` says). */
  sendPacket(hdr: PacketHeader, data?: Buffer): void {
    this.queuePacket(hdr, data);
  }

  /** Makes chain `head` available `n` times on queue `qi` without kicking. */
  publishRepeated(qi: number, head: number, n: number): void {
    for (let i = 0; i < n; i++) this.publish(qi, head);
  }

  /** Kicks queue `qi` (signals its kick eventfd). */
  kickQueue(qi: number): void {
    this.kick(qi);
  }

  /** Moves the avail index of queue `qi` ahead by `n` without writing ring entries, and kicks. */
  bumpAvail(qi: number, n: number): void {
    const q = this.q[qi] as QueueLayout;
    q.availIdx = (q.availIdx + n) & 0xffff;
    const idx = new Uint16Array(this.mem.buffer, this.mem.byteOffset + q.avail + 2, 1);
    Atomics.store(idx, 0, q.availIdx);
    this.kick(qi);
  }

  /** Sends raw vhost-user request `req` (no reply awaited). */
  sendRequest(req: number, payload: Buffer, fds: number[] = []): void {
    this.send(req, payload, fds);
  }

  /** Where the tx ring lives in `mem` and its kick eventfd (for a second thread playing guest). */
  get txRing(): { desc: number; avail: number; used: number; kick: number; size: number } {
    const q = this.q[1] as QueueLayout;
    return { desc: q.desc, avail: q.avail, used: q.used, kick: q.kick, size: this.qsize };
  }

  get memfdForTests(): number {
    return this.memfd;
  }

  private queuePacket(hdr: PacketHeader, data?: Buffer): void {
    this.pendingTx.push({ hdr, data });
    this.flush();
  }

  /** Moves queued control packets and credit-limited data onto the tx ring. */
  flush(): void {
    let kicked = false;
    const put = (hdr: PacketHeader, data?: Buffer): boolean => {
      const slot = this.txFree.shift();
      if (slot === undefined) return false;
      const q = this.q[1] as QueueLayout;
      const head = slot * 2;
      const ho = this.txHdr + slot * HDR_LEN;
      encodeHeader(hdr, this.mem.subarray(ho, ho + HDR_LEN));
      const d0 = q.desc + head * 16;
      this.mem.writeBigUInt64LE(BigInt(GPA_BASE + ho), d0);
      this.mem.writeUInt32LE(HDR_LEN, d0 + 8);
      this.mem.writeUInt16LE(data?.length ? 1 : 0, d0 + 12);
      this.mem.writeUInt16LE(head + 1, d0 + 14);
      if (data?.length) {
        const dOff = this.txData + slot * TX_DATA;
        data.copy(this.mem, dOff);
        const d1 = q.desc + (head + 1) * 16;
        this.mem.writeBigUInt64LE(BigInt(GPA_BASE + dOff), d1);
        this.mem.writeUInt32LE(data.length, d1 + 8);
        this.mem.writeUInt16LE(0, d1 + 12);
      }
      this.publish(1, head);
      kicked = true;
      return true;
    };
    while (this.pendingTx.length) {
      const p = this.pendingTx[0] as { hdr: PacketHeader; data?: Buffer };
      if (!put(p.hdr, p.data)) break;
      this.pendingTx.shift();
    }
    for (const c of this.conns.values()) {
      if (c.state !== 'established') continue;
      while (c.queued.length) {
        const credit = c.peerBufAlloc - (c.txCnt - c.peerFwdCnt);
        if (credit <= 0) break;
        const head = c.queued[0] as Buffer;
        const n = Math.min(head.length, credit, TX_DATA);
        const chunk = head.subarray(0, n);
        c.lastSentFwd = c.fwdCnt;
        if (!put(this.hdr(c.localPort, c.remoteCid, c.remotePort, OP_RW, 0, n, c.fwdCnt), chunk))
          break;
        c.txCnt += n;
        if (n === head.length) c.queued.shift();
        else c.queued[0] = head.subarray(n);
      }
      if (!c.queued.length && c.endQueued) {
        c.endQueued = false;
        c.lastSentFwd = c.fwdCnt;
        if (
          !put(
            this.hdr(
              c.localPort,
              c.remoteCid,
              c.remotePort,
              OP_SHUTDOWN,
              SHUTDOWN_SEND,
              0,
              c.fwdCnt,
            ),
          )
        ) {
          c.endQueued = true;
        }
      }
    }
    if (kicked) this.kick(1);
  }

  /** A guest connect to (cid, port). Resolves on RESPONSE, rejects on RST. */
  connect(cid: number, port: number): Promise<DriverConn> {
    const c = new DriverConn(this, this.nextPort++, cid, port);
    this.conns.set(`${c.localPort}:${cid}:${port}`, c);
    return new Promise((ok, ko) => {
      c.once('connect', () => ok(c));
      c.once('refused', () =>
        ko(Object.assign(new Error('ECONNREFUSED'), { code: 'ECONNREFUSED' })),
      );
      this.queuePacket(this.hdr(c.localPort, cid, port, OP_REQUEST, 0, 0, 0));
    });
  }

  /** Guest listener on `port`; `accept` returns false to refuse. */
  listen(port: number, accept: (c: DriverConn) => boolean): void {
    this.listeners.set(port, accept);
  }

  /** SET_MEM_TABLE (also while running: QEMU re-sends it when the memory map changes). */
  async setMemTable(): Promise<void> {
    const table = Buffer.alloc(8 + 32);
    table.writeUInt32LE(1, 0);
    table.writeBigUInt64LE(BigInt(GPA_BASE), 8);
    table.writeBigUInt64LE(BigInt(this.memSize), 16);
    table.writeBigUInt64LE(BigInt(UVA_BASE), 24);
    table.writeBigUInt64LE(0n, 32);
    if (await this.ack(REQ.SET_MEM_TABLE, table, [this.memfd]))
      throw new Error('SET_MEM_TABLE refused');
  }

  /** Puts a chain head that does not exist on the tx ring and kicks (a broken driver). */
  publishBogusTx(): void {
    this.publish(1, this.qsize + 5);
    this.kick(1);
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** Drops the front-end connection (QEMU exiting); the memfd stays for a reconnect. */
  disconnect(): void {
    this.watch?.close();
    this.watch = null;
    for (const w of this.callWatches.splice(0)) w.close();
    for (const q of this.q.splice(0)) {
      closeFd(q.kick);
      closeFd(q.call);
    }
    closeFd(this.fd);
    this.fd = -1;
    this.conns.clear();
    this.pendingTx.length = 0;
    this.txFree.length = 0;
    this.rxArea.clear();
  }

  close(): void {
    if (this.fd >= 0) this.disconnect();
    this.unmap();
    closeFd(this.memfd);
  }
}
