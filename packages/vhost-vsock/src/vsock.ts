// The virtio-vsock device model: connections between the guest and host stream sockets, with
// the credit-based flow control of the virtio specification (5.10.6.3) in both directions.
import type { Duplex } from 'node:stream';
import { VhostVsockError } from './errors.js';
import type { Logger } from './logger.js';
import {
  capacity,
  decodeHeader,
  encodeHeader,
  gather,
  HDR_LEN,
  OP_CREDIT_REQUEST,
  OP_CREDIT_UPDATE,
  OP_NAMES,
  OP_REQUEST,
  OP_RESPONSE,
  OP_RST,
  OP_RW,
  OP_SHUTDOWN,
  type PacketHeader,
  SHUTDOWN_RCV,
  SHUTDOWN_SEND,
  TYPE_STREAM,
} from './packet.js';
import type { SplitQueue } from './virtqueue.js';

const MAX_PKT = 64 * 1024;
const CLOSE_TIMEOUT_MS = 8000;
const REQUEST_TIMEOUT_MS = 10_000;
const SHUTDOWN_BOTH = SHUTDOWN_RCV | SHUTDOWN_SEND;
/**
 * Most tx chains handled in one pass before the event loop gets a turn (Linux vhost-vsock's
 * VHOST_VSOCK_PKT_WEIGHT): a guest that refills tx as fast as we drain it must not hold the
 * process's one thread (other connections, timers, other backends in the same process).
 */
const TX_BATCH = 256;
/** Most rx chains filled in one pass, for the same reason (a guest refilling rx concurrently). */
const RX_BATCH = 256;
/** Warnings a guest can cause, at most this many per window; the rest are counted. */
const GUEST_WARNS_PER_WINDOW = 20;
const GUEST_WARN_WINDOW_MS = 10_000;

/** Counters of a backend (cumulative since it started). */
export interface VhostVsockStats {
  /** connections open now */
  connections: number;
  /** connections ever established (both directions) */
  connectionsTotal: number;
  /** payload bytes delivered from the guest to host sockets */
  bytesFromGuest: number;
  /** payload bytes written into the guest's rx queue */
  bytesToGuest: number;
  /** connection requests answered with RST (nothing listening, refused) */
  refused: number;
  /** device resets (front-end disconnect, RESET_OWNER, ring stop: guest reboot) */
  deviceResets: number;
  /** whether a vhost-user front-end (QEMU) is connected */
  frontEndConnected: boolean;
  /**
   * packets the guest sent against the rules (oversized, longer than their buffer, past the
   * credit we gave, ...): each is logged and resets its connection
   */
  guestViolations: number;
}

/** How the device reaches the host: opens a stream for a guest connect, or refuses (null). */
export type HostConnector = (
  guest: { cid: number; port: number },
  dst: { cid: number; port: number },
) => Duplex | null;

interface Conn {
  key: string;
  guestPort: number;
  hostPort: number;
  hostCid: number;
  socket: Duplex;
  state: 'connecting' | 'requesting' | 'established' | 'closing';
  fromHost: boolean;
  onOutcome?: (ok: boolean, hostPort: number) => void;
  // host -> guest
  pending: Buffer[];
  pendingBytes: number;
  txCnt: number;
  peerBufAlloc: number;
  peerFwdCnt: number;
  creditRequested: boolean;
  hostEof: boolean;
  sentShutdown: number;
  pausedForCredit: boolean;
  // guest -> host
  rxCnt: number;
  fwdCnt: number;
  lastSentFwdCnt: number;
  guestShutdown: number;
  closeTimer?: NodeJS.Timeout;
  dead: boolean;
}

interface Outgoing {
  conn: Conn | null;
  hdr: PacketHeader;
}

/** The device's queues, set once the front-end started them. */
export interface DeviceQueues {
  rx: SplitQueue;
  tx: SplitQueue;
  /** signals the driver that used buffers are available on `queue` */
  notify(queue: SplitQueue): void;
  /** a ring broke the rules while the device processed it outside a kick (the device must stop) */
  fail(err: unknown, queue: SplitQueue): void;
}

export interface VsockDeviceOptions {
  guestCid: number;
  hostCid: number;
  /** most guest-initiated connections open at once (each holds a host socket) */
  maxConnections: number;
  bufAlloc: number;
  connector: HostConnector;
  logger: Logger;
  stats: VhostVsockStats;
}

const key = (guestPort: number, hostPort: number) => `${guestPort}:${hostPort}`;

export class VsockDevice {
  private queues: DeviceQueues | null = null;
  private readonly conns = new Map<string, Conn>();
  private readonly ctrl: Outgoing[] = [];
  private readonly ready = new Set<Conn>();
  private rxScheduled = false;
  private txScheduled = false;
  /** tx was left unread because the guest has not taken the replies already queued */
  private txHeld = false;
  private guestConns = 0;
  private capLogged = false;
  private warnWindowStart = 0;
  private warnsInWindow = 0;
  private warnsSuppressed = 0;
  private rxSizeLogged = false;
  private nextHostPort = 0x4000_0000;
  private readonly highWater: number;
  private readonly lowWater: number;

  constructor(private readonly o: VsockDeviceOptions) {
    this.highWater = Math.max(o.bufAlloc, 64 * 1024);
    this.lowWater = this.highWater >> 2;
  }

  get running(): boolean {
    return this.queues !== null;
  }

  /** Whether the device runs on exactly these queue objects. */
  uses(rx: SplitQueue, tx: SplitQueue): boolean {
    return this.queues?.rx === rx && this.queues?.tx === tx;
  }

  start(queues: DeviceQueues): void {
    this.queues = queues;
    this.scheduleRx();
  }

  /** Device reset: every connection is dropped (host sockets destroyed), queues forgotten. */
  reset(reason: string): void {
    const n = this.conns.size;
    this.queues = null;
    this.ctrl.length = 0;
    this.txHeld = false;
    this.ready.clear();
    for (const c of [...this.conns.values()]) this.drop(c, true);
    this.o.stats.deviceResets++;
    this.o.logger.info({ reason, connectionsReset: n }, 'vhost-vsock: device reset');
  }

  // ------------------------------------------------------------------ tx (guest -> device)

  /** Processes everything the guest queued on tx; called on a tx kick. */
  processTx(): void {
    const q = this.queues;
    if (!q) return;
    let pushed = false;
    for (let n = 0; ; n++) {
      if (n >= TX_BATCH) {
        this.scheduleTx(); // the rest after the event loop had a turn
        break;
      }
      // Replies (RST, RESPONSE, CREDIT_UPDATE) wait for rx buffers the guest posts. A guest that
      // sends without taking them would grow that queue without bound: like Linux vhost, stop
      // reading tx until rx has made room (the guest's tx ring fills; that is its backpressure).
      if (this.ctrl.length >= q.rx.num) {
        this.txHeld = true;
        break;
      }
      const chain = q.tx.pop();
      if (!chain) break;
      const total = capacity(chain.readable);
      let hdr: PacketHeader | null = null;
      let payload: Buffer | null = null;
      let malformed: string | null = null;
      if (total >= HDR_LEN) {
        hdr = decodeHeader(gather(chain.readable, 0, HDR_LEN));
        // never copy more than one packet's worth, whatever the guest's buffers or header say
        if (hdr.len > MAX_PKT) malformed = `len ${hdr.len} is over ${MAX_PKT}`;
        else if (hdr.len > total - HDR_LEN) {
          malformed = `len ${hdr.len} but the buffer holds ${total - HDR_LEN} payload bytes`;
        } else if (hdr.len > 0) payload = gather(chain.readable, HDR_LEN, hdr.len);
      }
      q.tx.push(chain.head, 0);
      pushed = true;
      if (hdr && malformed) this.onMalformed(hdr, malformed);
      else if (hdr) this.onPacket(hdr, payload);
      else
        this.guestWarn({ bytes: total }, 'vhost-vsock: tx buffer shorter than a header; dropped');
      if (!this.queues) return; // reset while handling
    }
    if (pushed) q.notify(q.tx);
    this.scheduleRx();
  }

  /** A warning the guest caused: rate-limited, so a guest cannot flood the host's logs. */
  private guestWarn(obj: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    if (now - this.warnWindowStart >= GUEST_WARN_WINDOW_MS) {
      this.warnWindowStart = now;
      this.warnsInWindow = 0;
    }
    if (this.warnsInWindow >= GUEST_WARNS_PER_WINDOW) {
      this.warnsSuppressed++;
      this.o.logger.debug(obj, msg);
      return;
    }
    this.warnsInWindow++;
    const suppressed = this.warnsSuppressed;
    this.warnsSuppressed = 0;
    this.o.logger.warn(suppressed ? { ...obj, suppressed } : obj, msg);
  }

  /**
   * The guest broke the packet rules on one connection: logged (ERR_VHOST_VSOCK_PROTOCOL), the
   * connection is reset both ways; the device and the other connections go on.
   */
  private guestViolation(c: Conn | null, h: PacketHeader | null, what: string): void {
    this.o.stats.guestViolations++;
    const where = h
      ? `${OP_NAMES[h.op] ?? `op ${h.op}`} packet from guest port ${h.srcPort} to ${h.dstCid}:${h.dstPort}`
      : `data from guest port ${c?.guestPort} to ${c?.hostCid}:${c?.hostPort}`;
    const err = new VhostVsockError(
      'ERR_VHOST_VSOCK_PROTOCOL',
      `guest ${where}: ${what}; the connection is reset (a guest driver bug or a hostile guest)`,
    );
    this.guestWarn({ err }, 'vhost-vsock: guest protocol violation');
    if (c) this.drop(c, true);
    else if (h && h.op !== OP_RST) this.sendRst(h.dstCid, h.dstPort, h.srcPort);
  }

  private onMalformed(h: PacketHeader, what: string): void {
    if (h.srcCid !== this.o.guestCid) {
      this.onPacket(h, null); // dropped as foreign
      return;
    }
    const c = h.type === TYPE_STREAM ? this.conns.get(key(h.srcPort, h.dstPort)) : undefined;
    this.guestViolation(c ?? null, h, what);
  }

  private onPacket(h: PacketHeader, payload: Buffer | null): void {
    if (h.srcCid !== this.o.guestCid) {
      this.guestWarn(
        { srcCid: h.srcCid, guestCid: this.o.guestCid },
        'vhost-vsock: packet with a foreign source CID dropped',
      );
      return;
    }
    if (h.type !== TYPE_STREAM) {
      if (h.op !== OP_RST) this.sendRst(h.dstCid, h.dstPort, h.srcPort, h.type);
      return;
    }
    if (!this.isHostCid(h.dstCid)) {
      // no guest-to-guest (or any other CID) routing: the folder's X_P.sock for another CID is
      // another VM's or an emulated enclave's listener, never this guest's to reach
      if (h.op === OP_REQUEST) this.o.stats.refused++;
      this.o.logger.debug(
        { dstCid: h.dstCid, dstPort: h.dstPort, op: OP_NAMES[h.op] ?? h.op },
        'vhost-vsock: packet to a CID that is not the host; RST',
      );
      if (h.op !== OP_RST) this.sendRst(h.dstCid, h.dstPort, h.srcPort);
      return;
    }
    const c = this.conns.get(key(h.srcPort, h.dstPort));
    if (c) {
      c.peerBufAlloc = h.bufAlloc;
      c.peerFwdCnt = h.fwdCnt;
      if (c.pendingBytes > 0) this.markReady(c);
    }
    switch (h.op) {
      case OP_REQUEST:
        if (c) {
          this.guestViolation(c, h, 'REQUEST for a connection that is open');
          return;
        }
        this.guestConnect(h);
        return;
      case OP_RESPONSE:
        if (!c) {
          this.sendRst(h.dstCid, h.dstPort, h.srcPort);
          return;
        }
        if (c.state !== 'requesting') return;
        c.state = 'established';
        if (c.closeTimer) clearTimeout(c.closeTimer);
        this.o.stats.connectionsTotal++;
        c.onOutcome?.(true, c.hostPort);
        c.onOutcome = undefined;
        this.pump(c);
        return;
      case OP_RST:
        if (c) this.drop(c, true);
        return;
      case OP_SHUTDOWN:
        if (!c) return;
        this.onGuestShutdown(c, h.flags & SHUTDOWN_BOTH);
        return;
      case OP_RW:
        if (!c) {
          this.sendRst(h.dstCid, h.dstPort, h.srcPort);
          return;
        }
        if (payload && payload.length > 0) this.toHost(c, payload);
        return;
      case OP_CREDIT_UPDATE:
        if (c) this.markReady(c);
        return;
      case OP_CREDIT_REQUEST:
        if (c) this.queueCtrl(c, OP_CREDIT_UPDATE, 0);
        return;
      default:
        // debug, not warn: a guest must not be able to flood the host's logs
        this.o.logger.debug({ op: h.op }, 'vhost-vsock: unknown packet op dropped');
    }
  }

  private newConn(
    guestPort: number,
    hostPort: number,
    hostCid: number,
    socket: Duplex,
    fromHost: boolean,
  ): Conn {
    const c: Conn = {
      key: key(guestPort, hostPort),
      guestPort,
      hostPort,
      hostCid,
      socket,
      state: fromHost ? 'requesting' : 'connecting',
      fromHost,
      pending: [],
      pendingBytes: 0,
      txCnt: 0,
      peerBufAlloc: 0,
      peerFwdCnt: 0,
      creditRequested: false,
      hostEof: false,
      sentShutdown: 0,
      pausedForCredit: false,
      rxCnt: 0,
      fwdCnt: 0,
      lastSentFwdCnt: 0,
      guestShutdown: 0,
      dead: false,
    };
    this.conns.set(c.key, c);
    if (!fromHost) this.guestConns++;
    this.o.stats.connections = this.conns.size;
    return c;
  }

  /** The CIDs a guest reaches the host on: 2 (VMADDR_CID_HOST), 3 (Nitro's parent), hostCid. */
  private isHostCid(cid: number): boolean {
    return cid === 2 || cid === 3 || cid === this.o.hostCid;
  }

  private guestConnect(h: PacketHeader): void {
    if (this.guestConns >= this.o.maxConnections) {
      // each guest connection holds a host socket: a guest must not exhaust the host's fds
      this.o.stats.refused++;
      const log = { port: h.dstPort, maxConnections: this.o.maxConnections };
      if (!this.capLogged) {
        this.capLogged = true;
        this.o.logger.warn(
          log,
          'vhost-vsock: guest connection limit reached; RST (raise maxConnections)',
        );
      } else this.o.logger.debug(log, 'vhost-vsock: guest connection limit reached; RST');
      this.sendRst(h.dstCid, h.dstPort, h.srcPort);
      return;
    }
    let socket: Duplex | null = null;
    try {
      socket = this.o.connector(
        { cid: h.srcCid, port: h.srcPort },
        { cid: h.dstCid, port: h.dstPort },
      );
    } catch (err) {
      this.o.logger.warn({ err, port: h.dstPort }, 'vhost-vsock: host connect failed');
    }
    if (!socket) {
      this.o.stats.refused++;
      this.o.logger.debug({ port: h.dstPort }, 'vhost-vsock: nothing listens; RST');
      this.sendRst(h.dstCid, h.dstPort, h.srcPort);
      return;
    }
    const c = this.newConn(h.srcPort, h.dstPort, h.dstCid, socket, false);
    c.peerBufAlloc = h.bufAlloc;
    c.peerFwdCnt = h.fwdCnt;
    socket.pause();
    const onConnect = () => {
      if (c.dead) return;
      socket.off('error', onEarlyError);
      c.state = 'established';
      this.o.stats.connectionsTotal++;
      this.queueCtrl(c, OP_RESPONSE, 0);
      this.pump(c);
    };
    const onEarlyError = (err: Error) => {
      if (c.dead) return;
      this.o.stats.refused++;
      this.o.logger.debug({ err, port: h.dstPort }, 'vhost-vsock: host refused; RST');
      this.drop(c, true);
    };
    socket.once('error', onEarlyError);
    // net.Socket emits 'connect'; an in-process stream is connected at once.
    if ((socket as Duplex & { connecting?: boolean }).connecting) socket.once('connect', onConnect);
    else process.nextTick(onConnect);
  }

  /** A host client asks for guest port `port`; `onOutcome` says whether the guest accepted. */
  hostConnect(
    port: number,
    socket: Duplex,
    onOutcome: (ok: boolean, hostPort: number) => void,
  ): void {
    if (!this.queues) {
      onOutcome(false, 0);
      return;
    }
    let hostPort = this.nextHostPort;
    while (this.conns.has(key(port, hostPort))) hostPort++;
    this.nextHostPort = hostPort >= 0xffff_fff0 ? 0x4000_0000 : hostPort + 1;
    const c = this.newConn(port, hostPort, this.o.hostCid, socket, true);
    c.onOutcome = onOutcome;
    // a guest that never answers the REQUEST (hung) does not keep the host client forever
    c.closeTimer = setTimeout(
      () => c.state === 'requesting' && this.drop(c, true),
      REQUEST_TIMEOUT_MS,
    );
    c.closeTimer.unref();
    socket.pause();
    socket.once('error', () => c.state !== 'established' && this.drop(c, true));
    socket.once('close', () => c.state !== 'established' && this.drop(c, true));
    this.queueCtrl(c, OP_REQUEST, 0);
  }

  /** Wires the host socket of an established connection. */
  private pump(c: Conn): void {
    const s = c.socket;
    s.on('data', (chunk: Buffer) => {
      if (c.dead) return;
      if (c.guestShutdown & SHUTDOWN_RCV) return; // the guest reads no more: discard
      c.pending.push(chunk);
      c.pendingBytes += chunk.length;
      if (c.pendingBytes >= this.highWater && !c.pausedForCredit) {
        c.pausedForCredit = true;
        s.pause();
      }
      this.markReady(c);
    });
    s.on('end', () => {
      if (c.dead) return;
      c.hostEof = true;
      this.markReady(c);
    });
    s.on('error', (err: Error) => {
      if (c.dead) return;
      this.o.logger.debug({ err, guestPort: c.guestPort }, 'vhost-vsock: host socket error; RST');
      this.drop(c, true);
    });
    s.on('close', () => {
      if (c.dead) return;
      if (!c.hostEof) {
        this.drop(c, true); // closed without EOF: a reset
        return;
      }
      c.state = 'closing';
      this.markReady(c); // full SHUTDOWN goes once pending data is out
    });
    s.resume();
  }

  private toHost(c: Conn, payload: Buffer): void {
    if (c.state !== 'established' && c.state !== 'closing') return;
    // What the host side has not taken yet may not exceed the buffer we advertised: a guest
    // that ignores its credit would otherwise make us buffer without bound.
    const buffered = (c.rxCnt - c.fwdCnt) >>> 0;
    if (buffered + payload.length > this.o.bufAlloc) {
      this.guestViolation(
        c,
        null,
        `${payload.length} bytes sent with ${buffered} of our ${this.o.bufAlloc}-byte buffer still unread (past its credit)`,
      );
      return;
    }
    c.rxCnt = (c.rxCnt + payload.length) >>> 0;
    const s = c.socket;
    if (s.destroyed || s.writableEnded) {
      this.deliver(c, payload.length);
      return;
    }
    s.write(payload, (err) => {
      if (err || c.dead) return;
      this.deliver(c, payload.length);
    });
  }

  private deliver(c: Conn, n: number): void {
    c.fwdCnt = (c.fwdCnt + n) >>> 0;
    this.o.stats.bytesFromGuest += n;
    // Tell the guest about freed space when its view of our buffer runs low (it stalls at 0).
    const inFlightSeen = (c.rxCnt - c.lastSentFwdCnt) >>> 0;
    const freeSeen = this.o.bufAlloc - inFlightSeen;
    if (freeSeen < this.o.bufAlloc / 2 && c.fwdCnt !== c.lastSentFwdCnt) {
      this.queueCtrl(c, OP_CREDIT_UPDATE, 0);
    }
  }

  private onGuestShutdown(c: Conn, flags: number): void {
    const before = c.guestShutdown;
    c.guestShutdown |= flags;
    if (flags & SHUTDOWN_SEND && !(before & SHUTDOWN_SEND) && c.state !== 'closing') {
      if (!c.socket.destroyed) c.socket.end();
    }
    if (flags & SHUTDOWN_RCV) {
      c.pending.length = 0;
      c.pendingBytes = 0;
      if (c.pausedForCredit) {
        c.pausedForCredit = false;
        c.socket.resume();
      }
    }
    if (c.guestShutdown === SHUTDOWN_BOTH) {
      // The guest closed: finish the host side after queued writes, answer with RST.
      this.sendRst(c.hostCid, c.hostPort, c.guestPort);
      this.forget(c);
      const s = c.socket;
      if (!s.destroyed) {
        if (!s.writableEnded) s.end();
        s.resume();
        if (s.writableFinished) s.destroy();
        else s.once('finish', () => s.destroy());
      }
    }
  }

  /** Resets one connection: RST to the guest (if asked) and the host socket destroyed. */
  private drop(c: Conn, rst: boolean): void {
    if (c.dead) return;
    if (rst && this.queues) this.sendRst(c.hostCid, c.hostPort, c.guestPort);
    this.forget(c);
    if (c.onOutcome) {
      const cb = c.onOutcome;
      c.onOutcome = undefined;
      cb(false, 0);
    }
    c.socket.destroy();
  }

  private forget(c: Conn): void {
    if (c.dead) return;
    c.dead = true;
    if (!c.fromHost) {
      this.guestConns--;
      if (this.guestConns < this.o.maxConnections) this.capLogged = false;
    }
    if (c.closeTimer) clearTimeout(c.closeTimer);
    this.ready.delete(c);
    this.conns.delete(c.key);
    this.o.stats.connections = this.conns.size;
  }

  // ------------------------------------------------------------------ rx (device -> guest)

  private header(c: Conn | null, op: number, flags: number, len: number): PacketHeader {
    return {
      srcCid: c ? c.hostCid : 0,
      dstCid: this.o.guestCid,
      srcPort: c ? c.hostPort : 0,
      dstPort: c ? c.guestPort : 0,
      len,
      type: TYPE_STREAM,
      op,
      flags,
      bufAlloc: this.o.bufAlloc,
      fwdCnt: c ? c.fwdCnt : 0,
    };
  }

  private queueCtrl(c: Conn, op: number, flags: number): void {
    this.ctrl.push({ conn: c, hdr: this.header(c, op, flags, 0) });
    this.scheduleRx();
  }

  private sendRst(srcCid: number, srcPort: number, dstPort: number, type = TYPE_STREAM): void {
    const hdr: PacketHeader = {
      srcCid,
      dstCid: this.o.guestCid,
      srcPort,
      dstPort,
      len: 0,
      type,
      op: OP_RST,
      flags: 0,
      bufAlloc: 0,
      fwdCnt: 0,
    };
    this.ctrl.push({ conn: null, hdr });
    this.scheduleRx();
  }

  private markReady(c: Conn): void {
    this.ready.add(c);
    this.scheduleRx();
  }

  scheduleRx(): void {
    if (this.rxScheduled) return;
    this.rxScheduled = true;
    setImmediate(() => {
      this.rxScheduled = false;
      const q = this.queues;
      try {
        this.processRx();
      } catch (err) {
        if (q && this.queues === q) q.fail(err, q.rx);
        else throw err;
      }
    });
  }

  private credit(c: Conn): number {
    const inFlight = (c.txCnt - c.peerFwdCnt) >>> 0;
    return Math.max(0, c.peerBufAlloc - inFlight);
  }

  /** Fills the guest's rx buffers: control packets first, then data round-robin. */
  processRx(): void {
    const q = this.queues;
    if (!q) return;
    let pushed = false;
    let popped = 0;
    const hdrBuf = Buffer.alloc(HDR_LEN);
    for (;;) {
      if (popped >= RX_BATCH) {
        // e.g. a guest posting rx buffers too small for a header as fast as we hand them back
        this.scheduleRx();
        break;
      }
      let out: Outgoing | undefined = this.ctrl.shift();
      let data: Buffer[] = [];
      let dataLen = 0;
      let conn: Conn | null = null;
      if (!out) {
        conn = this.nextReady();
        if (!conn) {
          if (this.ctrl.length) continue; // a CREDIT_REQUEST was queued
          break;
        }
      }
      const chain = q.rx.pop();
      if (chain) popped++;
      if (!chain) {
        if (out) this.ctrl.unshift(out);
        else if (conn) this.ready.add(conn);
        break; // the guest kicks rx when it adds buffers
      }
      const room = capacity(chain.writable) - HDR_LEN;
      if (!this.rxSizeLogged) {
        this.rxSizeLogged = true;
        this.o.logger.debug(
          { bytes: room + HDR_LEN, buffers: chain.writable.length },
          'vhost-vsock: guest rx buffer size',
        );
      }
      if (room < 0) {
        q.rx.push(chain.head, 0);
        pushed = true;
        if (out) this.ctrl.unshift(out);
        else if (conn) this.ready.add(conn);
        continue;
      }
      if (conn) {
        // data, or the SHUTDOWN that follows the last of it
        const c = conn;
        if (c.pendingBytes > 0) {
          const n = Math.min(c.pendingBytes, this.credit(c), room, MAX_PKT);
          ({ data, dataLen } = this.take(c, n));
          c.txCnt = (c.txCnt + dataLen) >>> 0;
          this.o.stats.bytesToGuest += dataLen;
          out = { conn: c, hdr: this.header(c, OP_RW, 0, dataLen) };
          if (c.pausedForCredit && c.pendingBytes <= this.lowWater) {
            c.pausedForCredit = false;
            if (!c.dead) c.socket.resume();
          }
        } else {
          out = this.shutdownFor(c) ?? undefined;
        }
        if (c.pendingBytes > 0 || (this.wantsShutdown(c) && out?.hdr.op === OP_RW)) {
          this.ready.add(c);
        }
        if (!out) {
          // nothing after all: give the chain back unused (length 0 is allowed for rx)
          q.rx.push(chain.head, 0);
          pushed = true;
          continue;
        }
      }
      if (!out) break;
      const o = out;
      if (o.conn) {
        if (o.conn.dead && o.hdr.op !== OP_RST) {
          q.rx.push(chain.head, 0);
          pushed = true;
          continue;
        }
        o.hdr.fwdCnt = o.conn.fwdCnt;
        o.conn.lastSentFwdCnt = o.conn.fwdCnt;
      }
      encodeHeader(o.hdr, hdrBuf);
      const written = scatterInto(chain.writable, hdrBuf, data);
      q.rx.push(chain.head, written);
      pushed = true;
    }
    if (pushed) q.notify(q.rx);
    if (this.txHeld && this.ctrl.length < q.rx.num) {
      this.txHeld = false;
      this.scheduleTx();
    }
  }

  private scheduleTx(): void {
    if (this.txScheduled) return;
    this.txScheduled = true;
    setImmediate(() => {
      this.txScheduled = false;
      const q = this.queues;
      try {
        this.processTx();
      } catch (err) {
        if (q && this.queues === q) q.fail(err, q.tx);
        else throw err;
      }
    });
  }

  private wantsShutdown(c: Conn): boolean {
    return (
      (c.hostEof && !(c.sentShutdown & SHUTDOWN_SEND)) ||
      (c.state === 'closing' && c.sentShutdown !== SHUTDOWN_BOTH)
    );
  }

  private shutdownFor(c: Conn): Outgoing | null {
    if (c.pendingBytes > 0 || c.dead) return null;
    if (c.state === 'closing' && c.sentShutdown !== SHUTDOWN_BOTH) {
      c.sentShutdown = SHUTDOWN_BOTH;
      c.closeTimer = setTimeout(() => this.drop(c, true), CLOSE_TIMEOUT_MS);
      c.closeTimer.unref();
      return { conn: c, hdr: this.header(c, OP_SHUTDOWN, SHUTDOWN_BOTH, 0) };
    }
    if (c.hostEof && !(c.sentShutdown & SHUTDOWN_SEND)) {
      c.sentShutdown |= SHUTDOWN_SEND;
      return { conn: c, hdr: this.header(c, OP_SHUTDOWN, SHUTDOWN_SEND, 0) };
    }
    return null;
  }

  /** The next connection that has something to send now (data with credit, or a shutdown). */
  private nextReady(): Conn | null {
    for (const c of this.ready) {
      this.ready.delete(c);
      if (c.dead || c.state === 'connecting' || c.state === 'requesting') continue;
      if (c.pendingBytes > 0) {
        if (this.credit(c) > 0) return c;
        if (!c.creditRequested) {
          c.creditRequested = true;
          this.ctrl.push({ conn: c, hdr: this.header(c, OP_CREDIT_REQUEST, 0, 0) });
        }
        continue; // waits for the guest's CREDIT_UPDATE, which marks it ready again
      }
      if (this.wantsShutdown(c)) return c;
    }
    return null;
  }

  private take(c: Conn, n: number): { data: Buffer[]; dataLen: number } {
    const data: Buffer[] = [];
    let left = n;
    while (left > 0 && c.pending.length) {
      const head = c.pending[0] as Buffer;
      if (head.length <= left) {
        data.push(head);
        c.pending.shift();
        left -= head.length;
      } else {
        data.push(head.subarray(0, left));
        c.pending[0] = head.subarray(left);
        left = 0;
      }
    }
    const dataLen = n - left;
    c.pendingBytes -= dataLen;
    if (dataLen > 0) c.creditRequested = false;
    return { data, dataLen };
  }
}

function scatterInto(bufs: readonly Buffer[], hdr: Buffer, data: readonly Buffer[]): number {
  let bi = 0;
  let bo = 0;
  let total = 0;
  const put = (p: Buffer) => {
    let po = 0;
    while (po < p.length) {
      const b = bufs[bi];
      if (!b) return;
      const n = p.copy(b, bo, po);
      po += n;
      bo += n;
      total += n;
      if (bo >= b.length) {
        bi++;
        bo = 0;
      }
    }
  };
  put(hdr);
  for (const d of data) put(d);
  return total;
}

export { OP_NAMES };
