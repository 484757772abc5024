// The backend against a hostile guest: everything in the rings and packets is the guest's to
// choose. Each test drives the in-process driver (test/driver.ts) outside the protocol and checks
// that the backend contains it (device stopped, connection reset, or bounded), never the process.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createVhostVsockBackend, type VhostVsockBackend } from '../src/index.js';
import { HDR_LEN, OP_REQUEST } from '../src/packet.js';
import { DESC_INDIRECT, DESC_NEXT, VsockDriver } from './driver.js';

const CID = 17;
const fdCount = () => readdirSync('/proc/self/fd').length;
const until = async (cond: () => boolean, what: string) => {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};
const settle = () => new Promise((r) => setTimeout(r, 100));

describe('vhost-vsock backend against a hostile guest', () => {
  let dir: string;
  let backend: VhostVsockBackend;
  let driver: VsockDriver;
  let fds0: number;

  beforeEach(async () => {
    fds0 = fdCount();
    dir = mkdtempSync(join(tmpdir(), 'vhv-h-'));
    backend = await createVhostVsockBackend({
      socketPath: join(dir, 'vhost.sock'),
      guestCid: CID,
      vsockDir: dir,
    });
    driver = new VsockDriver({ bufAlloc: 16 * 1024 });
    await driver.start(backend.socketPath);
    await until(() => backend.stats.frontEndConnected, 'the front-end');
  });

  afterEach(async () => {
    driver.close();
    await backend.close();
    rmSync(dir, { recursive: true, force: true });
    await until(() => fdCount() <= fds0, `fds back to ${fds0} (now ${fdCount()})`);
  });

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
});
