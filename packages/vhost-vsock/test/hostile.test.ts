// The backend against a hostile guest: everything in the rings and packets is the guest's to
// choose. Each test drives the in-process driver (test/driver.ts) outside the protocol and checks
// that the backend contains it (device stopped, connection reset, or bounded), never the process.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { CID_ANY, emulatedSocketPath } from '@enclave-extras/vsock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createVhostVsockBackend, type VhostVsockBackend } from '../src/index.js';
import {
  encodeHeader,
  HDR_LEN,
  OP_CREDIT_REQUEST,
  OP_CREDIT_UPDATE,
  OP_REQUEST,
  OP_RESPONSE,
  OP_RST,
  OP_RW,
  OP_SHUTDOWN,
} from '../src/packet.js';
import { REQ } from '../src/vhost-user.js';
import { DESC_INDIRECT, DESC_NEXT, type DriverConn, VsockDriver } from './driver.js';
import { type BackendFixture, CID, closeBackend, openBackend, until } from './fixture.js';

const within = <T>(p: Promise<T>, what: string) =>
  Promise.race([
    p,
    new Promise<never>((_, ko) =>
      setTimeout(() => ko(new Error(`timed out waiting for ${what}`)), 10_000),
    ),
  ]);
const settle = () => new Promise((r) => setTimeout(r, 100));

describe('vhost-vsock backend against a hostile guest', () => {
  let dir: string;
  let backend: VhostVsockBackend;
  let driver: VsockDriver;

  let fixture: BackendFixture;
  beforeEach(async () => {
    fixture = await openBackend('vhv-h-');
    ({ dir, backend, driver } = fixture);
  });

  // tests may replace the driver or backend (reconnects): close the ones in use now
  afterEach(() => closeBackend({ ...fixture, dir, backend, driver }));

  /** Waits until the device either stopped or returned the chain; true when it stopped. */
  const stoppedOrConsumed = async (consumedBefore: number) => {
    await until(
      () => backend.stats.deviceResets > 0 || driver.txConsumed > consumedBefore,
      'the device to stop or return the chain',
    );
    return backend.stats.deviceResets > 0;
  };

  describe('descriptor chains', () => {
    it('an indirect table chaining 60k descriptors stops the device (not walked into memory)', async () => {
      const n = 60_000;
      const buf = driver.scratch(64);
      const table = driver.scratch(16 * n);
      for (let i = 0; i < n; i++) {
        driver.writeDesc(table.off, i, {
          addr: buf.gpa,
          len: 1,
          flags: i < n - 1 ? DESC_NEXT : 0,
          next: i + 1,
        });
      }
      const before = driver.txConsumed;
      driver.txRaw({ addr: table.gpa, len: 16 * n, flags: DESC_INDIRECT });
      expect(await stoppedOrConsumed(before)).toBe(true);
    });

    it('an avail index moved ahead by more than the queue size stops the device', async () => {
      const before = driver.txConsumed;
      driver.bumpAvail(1, 1000);
      expect(await stoppedOrConsumed(before)).toBe(true);
      await settle();
      expect(driver.txConsumed).toBe(before); // not one bogus chain returned
    });

    it('an indirect table whose length is not a multiple of 16 stops the device', async () => {
      const table = driver.scratch(32);
      const hdr = driver.scratch(HDR_LEN);
      driver.writeDesc(table.off, 0, { addr: hdr.gpa, len: HDR_LEN, flags: 0 });
      const before = driver.txConsumed;
      driver.txRaw({ addr: table.gpa, len: 17, flags: DESC_INDIRECT });
      expect(await stoppedOrConsumed(before)).toBe(true);
    });

    it('INDIRECT together with NEXT stops the device', async () => {
      const table = driver.scratch(16);
      const hdr = driver.scratch(HDR_LEN);
      driver.writeDesc(table.off, 0, { addr: hdr.gpa, len: HDR_LEN, flags: 0 });
      const before = driver.txConsumed;
      driver.txRaw(
        { addr: table.gpa, len: 16, flags: DESC_INDIRECT | DESC_NEXT },
        { addr: hdr.gpa, len: HDR_LEN, flags: 0 },
      );
      expect(await stoppedOrConsumed(before)).toBe(true);
    });

    for (const [what, addr, len] of [
      ['beyond 2^53', (1n << 60n) + 0x10_0000n, 64],
      ['wrapping past 2^64', (1n << 64n) - 16n, 64],
      ['straddling the end of the region', 0x10_0000n + 4n * 1024n * 1024n - 8n, 64],
      ['below the region', 0x10_0000n - 8n, 64],
      ['with a 4 GiB - 1 length', 0x10_0000n, 0xffff_ffff],
    ] as const) {
      it(`a descriptor ${what} stops the device`, async () => {
        const before = driver.txConsumed;
        driver.txRaw({ addr, len, flags: 0 });
        expect(await stoppedOrConsumed(before)).toBe(true);
      });
    }

    it('a zero-length chain is returned and ignored', async () => {
      const before = driver.txConsumed;
      driver.txRaw({ addr: 0x10_0000n, len: 0, flags: 0 });
      expect(await stoppedOrConsumed(before)).toBe(false);
      expect(backend.stats.deviceResets).toBe(0);
    });

    it('a REQUEST with a spoofed source CID is dropped: no host connection, no answer', async () => {
      let accepted = 0;
      await backend.listen(9000, () => {
        accepted++;
      });
      for (const srcCid of [2, 3, 18, 0xffff_ffff]) {
        driver.sendPacket(driver.header({ srcCid, srcPort: 1234, dstPort: 9000, op: OP_REQUEST }));
      }
      const c = await driver.connect(3, 9000); // a real one after them, as a barrier
      await until(() => accepted === 1, 'the real connection');
      expect(c.state).toBe('established');
      await settle();
      expect(accepted).toBe(1);
      expect(driver.packetsSeen.RST ?? 0).toBe(0);
    });
  });

  describe('packets', () => {
    /** A connection to an in-process handler that counts what reaches the host. */
    const open = async (port: number) => {
      const host = { bytes: 0, closed: false };
      await backend.listen(port, (s) => {
        s.on('data', (d: Buffer) => {
          host.bytes += d.length;
        });
        s.on('error', () => {});
        s.on('close', () => {
          host.closed = true;
        });
      });
      const c = await driver.connect(3, port);
      const rst = new Promise<void>((ok) => c.once('rst', () => ok()));
      return { c, host, rst };
    };
    const rw = (c: DriverConn, len: number) =>
      driver.header({
        srcPort: c.localPort,
        dstCid: 3,
        dstPort: c.remotePort,
        op: OP_RW,
        len,
        bufAlloc: driver.bufAlloc,
      });

    it('a packet with len > 64 KiB resets its connection; nothing reaches the host', async () => {
      const { c, host, rst } = await open(9100);
      const len = 70_000;
      const hdr = driver.scratch(HDR_LEN);
      encodeHeader(rw(c, len), driver.mem.subarray(hdr.off, hdr.off + HDR_LEN));
      const data = driver.scratch(len);
      driver.txRaw(
        { addr: hdr.gpa, len: HDR_LEN, flags: DESC_NEXT },
        { addr: data.gpa, len, flags: 0 },
      );
      await within(rst, 'the RST');
      await until(() => host.closed, 'the host socket to be reset');
      expect(host.bytes).toBe(0);
      expect(backend.stats.deviceResets).toBe(0);
      expect(backend.stats.guestViolations).toBe(1);
    });

    it('a header len larger than the buffer resets the connection (no truncated delivery)', async () => {
      const { c, host, rst } = await open(9101);
      driver.sendPacket(rw(c, 1000), Buffer.from('0123456789'));
      await within(rst, 'the RST');
      await until(() => host.closed, 'the host socket to be reset');
      expect(host.bytes).toBe(0);
      expect(backend.stats.guestViolations).toBe(1);
    });

    it('a guest sending past the credit it was given is reset; the host buffers at most bufAlloc', async () => {
      // a folder listener that accepts and never reads
      const held: net.Socket[] = [];
      const server = net.createServer({ pauseOnConnect: true }, (s) => held.push(s));
      const path = emulatedSocketPath(dir, { cid: CID_ANY, port: 9102 });
      await new Promise<void>((ok) => server.listen(path, () => ok()));
      const c = await driver.connect(3, 9102);
      const rst = new Promise<void>((ok) => c.once('rst', () => ok()));
      let sent = 0;
      for (let i = 0; i < 512; i++) {
        driver.sendPacket(rw(c, 4096), Buffer.alloc(4096, i));
        sent += 4096;
      }
      await within(rst, 'the RST');
      expect(sent).toBe(2 * 1024 * 1024);
      expect(backend.stats.guestViolations).toBe(1);
      await until(() => backend.stats.connections === 0, 'the connection to go');
      for (const s of held) s.destroy();
      await new Promise<void>((ok) => server.close(() => ok()));
    });
  });

  describe('event loop', () => {
    it('a full tx ring is handled in batches: the event loop gets turns in between', async () => {
      driver.close();
      await until(() => !backend.stats.frontEndConnected, 'the front-end to be gone');
      driver = new VsockDriver({ queueSize: 1024, memSize: 16 * 1024 * 1024 });
      await driver.start(backend.socketPath);
      // one chain the device drops without a reply (a CREDIT_UPDATE for no connection), 1024 times
      const hdr = driver.scratch(HDR_LEN);
      encodeHeader(
        driver.header({ srcPort: 1, dstCid: 3, dstPort: 1, op: OP_CREDIT_UPDATE }),
        driver.mem.subarray(hdr.off, hdr.off + HDR_LEN),
      );
      const ring = driver.txRing;
      driver.writeDesc(ring.desc, 0, { addr: hdr.gpa, len: HDR_LEN, flags: 0 });
      driver.publishRepeated(1, 0, 1024);
      const usedIdx = new Uint16Array(driver.mem.buffer, driver.mem.byteOffset + ring.used + 2, 1);
      // what this thread sees each time it gets a turn while the device works through the ring
      const seen: number[] = [];
      const look = () => {
        const u = Atomics.load(usedIdx, 0);
        seen.push(u);
        if (u < 1024) setImmediate(look);
      };
      const resets = backend.stats.deviceResets; // the first driver's disconnect was one
      setImmediate(look);
      driver.kickQueue(1);
      await until(() => seen.at(-1) === 1024, 'the whole ring');
      // a guest vCPU refilling the ring as fast as it drains could otherwise hold this thread
      expect(seen.some((u) => u > 0 && u < 1024)).toBe(true);
      expect(backend.stats.deviceResets).toBe(resets);
    });
  });

  describe('logs', () => {
    it('a guest cannot flood the host log: guest-caused warnings are rate-limited', async () => {
      const warns: unknown[] = [];
      const noop = () => {};
      const logger = { debug: noop, info: noop, error: noop, warn: (o: unknown) => warns.push(o) };
      const socketPath = join(dir, 'logged.sock');
      const other = await createVhostVsockBackend({ socketPath, guestCid: 19, logger });
      const d = new VsockDriver();
      try {
        await d.start(socketPath);
        for (let i = 0; i < 200; i++) {
          // foreign source CID: dropped, and each one used to be a warning
          d.sendPacket(d.header({ srcCid: 3, srcPort: i, dstPort: 1, op: OP_REQUEST }));
        }
        await until(() => d.txConsumed >= 200, 'the packets');
        expect(warns.length).toBeGreaterThan(0);
        expect(warns.length).toBeLessThanOrEqual(20);
      } finally {
        d.close();
        await other.close();
      }
    });
  });

  describe('connections and replies', () => {
    it('replies the guest does not take do not pile up: tx is left unread while rx is full', async () => {
      driver.rxPaused = true; // the guest posts no rx buffers and reads none of the used ones
      const n = 2000;
      for (let i = 0; i < n; i++) {
        // each is answered with an RST (nobody serves port 4444)
        driver.sendPacket(
          driver.header({ srcPort: 20_000 + i, dstCid: 3, dstPort: 4444, op: OP_REQUEST }),
        );
      }
      await until(() => driver.txConsumed >= 64, 'the first requests');
      await settle();
      // 32 answers fit the posted rx buffers, then at most a queue's worth (64) waits
      expect(driver.txConsumed).toBeLessThanOrEqual(32 + 64 + 32);
      driver.resumeRx();
      await until(() => (driver.packetsSeen.RST ?? 0) === n, `${n} RSTs`);
      expect(driver.txConsumed).toBe(n);
      expect(backend.stats.refused).toBe(n);
      expect(driver.violations).toEqual([]);
    });

    it('a guest cannot open more than maxConnections host sockets: the rest get RST', async () => {
      const socketPath = join(dir, 'capped.sock');
      const capped = await createVhostVsockBackend({ socketPath, guestCid: 18, maxConnections: 4 });
      const d = new VsockDriver();
      try {
        await d.start(socketPath);
        let accepted = 0;
        await capped.listen(9200, (s) => {
          s.on('error', () => {});
          accepted++;
        });
        const results = await Promise.allSettled(
          Array.from({ length: 6 }, () => d.connect(3, 9200)),
        );
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(4);
        expect(capped.stats.connections).toBe(4);
        expect(capped.stats.refused).toBe(2);
        await until(() => accepted === 4, 'the handlers');
        // one closes: a new one fits again
        const first = results.find((r) => r.status === 'fulfilled');
        if (first?.status === 'fulfilled') first.value.rst();
        await until(() => capped.stats.connections === 3, 'the RST');
        await expect(d.connect(3, 9200)).resolves.toBeDefined();
      } finally {
        d.close();
        await capped.close();
      }
      await expect(
        createVhostVsockBackend({ socketPath, guestCid: 18, maxConnections: 0 }),
      ).rejects.toMatchObject({ code: 'ERR_VHOST_VSOCK_INVALID_ARG' });
    });

    it('a guest connect to a CID other than the host (2, 3) is refused, not routed to that CID', async () => {
      let reached = 0;
      const held: net.Socket[] = [];
      const cids = [16, CID, CID_ANY];
      const servers = cids.map(() =>
        net.createServer((s) => {
          reached++;
          held.push(s);
        }),
      );
      await Promise.all(
        servers.map(
          (srv, i) =>
            new Promise<void>((ok) =>
              srv.listen(emulatedSocketPath(dir, { cid: cids[i] as number, port: 9300 }), () =>
                ok(),
              ),
            ),
        ),
      );
      try {
        for (const cid of [16, CID, 0xffff_ffff, 0, 1]) {
          await expect(driver.connect(cid, 9300)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
        }
        expect(reached).toBe(0);
        // the host CIDs still reach the any-CID listener
        await driver.connect(3, 9300);
        await until(() => reached === 1, 'the host listener');
      } finally {
        for (const s of held) s.destroy();
        await Promise.all(servers.map((srv) => new Promise((ok) => srv.close(ok))));
      }
    });

    it('a duplicate REQUEST for an open connection resets it on both sides', async () => {
      let hostClosed = false;
      await backend.listen(9400, (s) => {
        s.on('error', () => {});
        s.on('close', () => {
          hostClosed = true;
        });
      });
      const c = await driver.connect(3, 9400);
      const rst = new Promise<void>((ok) => c.once('rst', () => ok()));
      driver.sendPacket(
        driver.header({ srcPort: c.localPort, dstCid: 3, dstPort: 9400, op: OP_REQUEST }),
      );
      await within(rst, 'the RST');
      await until(() => hostClosed, 'the host side to be reset');
      expect(backend.stats.connections).toBe(0);
    });
  });

  describe('what already held', () => {
    it('packets for connections that do not exist: RST for RESPONSE/RW/unknown type, the rest dropped', async () => {
      const base = { srcPort: 30_000, dstCid: 3, dstPort: 7777 };
      for (const op of [
        OP_RESPONSE,
        OP_RW,
        OP_SHUTDOWN,
        OP_CREDIT_UPDATE,
        OP_CREDIT_REQUEST,
        OP_RST,
        99,
      ]) {
        driver.sendPacket(driver.header({ ...base, op, flags: 0xffff_ffff }));
      }
      driver.sendPacket(driver.header({ ...base, type: 7, op: OP_REQUEST }));
      await until(() => (driver.packetsSeen.RST ?? 0) >= 3, 'the RSTs');
      await settle();
      expect(driver.packetsSeen.RST).toBe(3);
      expect(backend.stats.connections).toBe(0);
      expect(backend.stats.deviceResets).toBe(0);
      // the device still serves
      await backend.listen(7778, (s) => s.end('ok'));
      const c = await driver.connect(3, 7778);
      await until(() => c.data().toString() === 'ok', 'the answer');
    });

    it('SHUTDOWN with every flag bit set closes like a full shutdown (RST back, host side closed)', async () => {
      let ended = false;
      await backend.listen(7779, (s) => {
        s.on('error', () => {});
        s.on('close', () => {
          ended = true;
        });
        s.resume();
      });
      const c = await driver.connect(3, 7779);
      const rst = new Promise<void>((ok) => c.once('rst', () => ok()));
      driver.sendPacket(
        driver.header({ srcPort: c.localPort, dstPort: 7779, op: OP_SHUTDOWN, flags: 0xffff_ffff }),
      );
      await within(rst, 'the RST');
      await until(() => ended && backend.stats.connections === 0, 'the host side to close');
    });

    it('a guest advertising a 4 GiB buffer and reading nothing: bounded by its rx buffers, the host writer held back', async () => {
      driver.close();
      await until(() => !backend.stats.frontEndConnected, 'the front-end to be gone');
      driver = new VsockDriver({ bufAlloc: 0xffff_ffff });
      await driver.start(backend.socketPath);
      let hostWrote = false;
      const big = randomBytes(8 * 1024 * 1024);
      await backend.listen(7780, (s) => {
        s.on('error', () => {});
        s.write(big, () => {
          hostWrote = true;
        });
      });
      await driver.connect(3, 7780);
      driver.rxPaused = true;
      await until(() => backend.stats.bytesToGuest > 0, 'the first data');
      await settle();
      await settle();
      expect(hostWrote).toBe(false);
      // what fits the rx buffers posted (32 x 4 KiB), plus those reposted before the pause
      expect(backend.stats.bytesToGuest).toBeLessThanOrEqual(64 * 4096);
    });
  });

  describe('control plane (the front-end)', () => {
    const memTable = (regions: { gpa: bigint; size: bigint; uva: bigint; off: bigint }[]) => {
      const t = Buffer.alloc(8 + 32 * regions.length);
      t.writeUInt32LE(regions.length, 0);
      regions.forEach((r, i) => {
        t.writeBigUInt64LE(r.gpa, 8 + 32 * i);
        t.writeBigUInt64LE(r.size, 16 + 32 * i);
        t.writeBigUInt64LE(r.uva, 24 + 32 * i);
        t.writeBigUInt64LE(r.off, 32 + 32 * i);
      });
      return t;
    };
    const mib = 1024n * 1024n;
    // where the driver's rings live, so only the region under test is wrong
    const gpa = 0x10_0000n;
    const uva = 0x7f00_0000_0000n;

    const state = (i: number, n: number) => {
      const b = Buffer.alloc(8);
      b.writeUInt32LE(i, 0);
      b.writeUInt32LE(n, 4);
      return b;
    };
    for (const [what, req, payload] of [
      ['SET_VRING_NUM 0', REQ.SET_VRING_NUM, state(1, 0)],
      ['SET_VRING_NUM 48 (not a power of 2)', REQ.SET_VRING_NUM, state(1, 48)],
      ['SET_VRING_NUM 65536 (over 32768)', REQ.SET_VRING_NUM, state(1, 65536)],
      ['SET_VRING_NUM for queue 7 (the device has 3)', REQ.SET_VRING_NUM, state(7, 64)],
      ['SET_MEM_TABLE with 100 regions and no fds', REQ.SET_MEM_TABLE, state(100, 0)],
      ['a payload over 4096 bytes', REQ.SET_OWNER, Buffer.alloc(5000)],
    ] as const) {
      it(`${what} drops the front-end (held)`, async () => {
        driver.sendRequest(req, payload);
        await until(() => !backend.stats.frontEndConnected, 'the front-end to be dropped');
      });
    }

    it('a misaligned avail ring drops the front-end when the ring is rebuilt (held)', async () => {
      const ring = driver.txRing;
      const addr = Buffer.alloc(40);
      addr.writeUInt32LE(1, 0);
      addr.writeBigUInt64LE(0x7f00_0000_0000n + BigInt(ring.desc), 8);
      addr.writeBigUInt64LE(0x7f00_0000_0000n + BigInt(ring.used), 16);
      addr.writeBigUInt64LE(0x7f00_0000_0000n + BigInt(ring.avail + 1), 24);
      driver.sendRequest(REQ.SET_VRING_ADDR, addr);
      await until(() => !backend.stats.frontEndConnected, 'the front-end to be dropped');
    });

    it('extra fds on a request are closed (held; afterEach checks the fd count)', async () => {
      const fd = driver.memfdForTests;
      driver.sendRequest(REQ.SET_OWNER, Buffer.alloc(0), [fd, fd, fd, fd, fd, fd, fd, fd]);
      driver.sendRequest(REQ.GET_FEATURES, Buffer.alloc(0));
      // a request after it is still served: the connection stays up
      await settle();
      expect(backend.stats.frontEndConnected).toBe(true);
      const c = await driver.connect(3, 4444).catch((e: { code?: string }) => e.code);
      expect(c).toBe('ECONNREFUSED');
    });

    for (const [what, regions] of [
      [
        'a region larger than its memory file (mapping it would SIGBUS the process)',
        [{ gpa, size: 8n * mib, uva, off: 0n }],
      ],
      [
        'a region reaching past its file through mmap_offset',
        [{ gpa, size: 4n * mib, uva, off: mib }],
      ],
      [
        'an empty second region',
        [
          { gpa, size: 4n * mib, uva, off: 0n },
          { gpa: 16n * mib, size: 0n, uva: 2n << 40n, off: 0n },
        ],
      ],
      ['a region past 2^53', [{ gpa: 1n << 60n, size: 4n * mib, uva, off: 0n }]],
    ] as const) {
      it(`SET_MEM_TABLE with ${what} drops the front-end; the fds it passed are closed`, async () => {
        const fd = driver.memfdForTests;
        driver.sendRequest(
          REQ.SET_MEM_TABLE,
          memTable([...regions]),
          regions.map(() => fd),
        );
        await until(() => !backend.stats.frontEndConnected, 'the front-end to be dropped');
        expect(backend.stats.deviceResets).toBe(1);
        // fds are checked by afterEach (the backend's copies of the memfd are closed)
      });
    }
  });
});
