// The NSM behaviour suite, written once and run against the simulator (unit tests, in process
// and through the daemon) and against the real /dev/nsm (QEMU virtio-nsm + Linux nsm driver) in
// nsm-vm. It asserts only what both do; target-specific expectations live in the test files.
// Tests run in order and share one NSM: PCR locks cannot be undone, so each test uses its own
// PCRs (16 extend, 18 lock, 20 concurrency) and LockPCRs(32) comes last.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmClient } from '../src/index.js';
import { expectResponse } from '../src/protocol.js';
import { cbor, documentParts, hex, rejectsWith, sha384 } from './helpers.js';

export function describeBehaviour(name: string, open: () => Promise<NsmClient>): void {
  describe(`NSM behaviour (${name})`, () => {
    let nsm: NsmClient;
    beforeAll(async () => {
      nsm = await open();
    });
    afterAll(async () => {
      await nsm?.close();
    });

    it('DescribeNSM reports version 1, 32 SHA-384 PCRs and a module id', async () => {
      const d = await nsm.describeNsm();
      expect(d.versionMajor).toBe(1);
      expect(d.maxPcrs).toBe(32);
      expect(d.digest).toBe('SHA384');
      expect(d.moduleId).toMatch(/^i-[0-9a-z]+-enc[0-9a-z]+$/);
      expect(d.lockedPcrs).toEqual([...d.lockedPcrs].sort((a, b) => a - b));
      for (const i of d.lockedPcrs) expect(i).toBeLessThan(32);
    });

    it('DescribePCR answers every index 0..31 with 48 bytes, lock matching DescribeNSM', async () => {
      const { lockedPcrs } = await nsm.describeNsm();
      for (let i = 0; i < 32; i++) {
        const pcr = await nsm.describePcr(i);
        expect(pcr.data).toBeInstanceOf(Uint8Array);
        expect(pcr.data.length).toBe(48);
        expect(pcr.lock).toBe(lockedPcrs.includes(i));
      }
    });

    it('LockPCRs(16) brings the NSM to the enclave start state (0..15 locked) and is idempotent', async () => {
      await nsm.lockPcrs(16);
      await nsm.lockPcrs(16);
      await nsm.lockPcrs(0);
      const { lockedPcrs } = await nsm.describeNsm();
      for (let i = 0; i < 16; i++) expect(lockedPcrs).toContain(i);
      expect((await nsm.describePcr(5)).lock).toBe(true);
    });

    it('ExtendPCR sets PCR = SHA-384(PCR || data) and returns it', async () => {
      const before = (await nsm.describePcr(16)).data;
      const data = new TextEncoder().encode('behaviour measurement');
      const after = await nsm.extendPcr(16, data);
      expect(hex(after)).toBe(hex(sha384(before, data)));
      const now = await nsm.describePcr(16);
      expect(hex(now.data)).toBe(hex(after));
      expect(now.lock).toBe(false);
      // empty data and data up to the request limit extend too
      const empty = await nsm.extendPcr(16, new Uint8Array(0));
      expect(hex(empty)).toBe(hex(sha384(after, new Uint8Array(0))));
      const big = new Uint8Array(4000).fill(7);
      expect(hex(await nsm.extendPcr(16, big))).toBe(hex(sha384(empty, big)));
    });

    it('a locked PCR answers ReadOnlyIndex to ExtendPCR and LockPCR', async () => {
      await rejectsWith(
        nsm.extendPcr(3, Uint8Array.of(1)),
        'ERR_NSM_READ_ONLY_INDEX',
        'ReadOnlyIndex',
      );
      const value = (await nsm.describePcr(18)).data;
      await nsm.lockPcr(18);
      const pcr = await nsm.describePcr(18);
      expect(pcr.lock).toBe(true);
      expect(hex(pcr.data)).toBe(hex(value));
      expect((await nsm.describeNsm()).lockedPcrs).toContain(18);
      const e = await rejectsWith(nsm.extendPcr(18, Uint8Array.of(1)), 'ERR_NSM_READ_ONLY_INDEX');
      expect(e.message).toContain('extendPcr(18)');
      await rejectsWith(nsm.lockPcr(18), 'ERR_NSM_READ_ONLY_INDEX', 'ReadOnlyIndex');
      await rejectsWith(nsm.lockPcr(7), 'ERR_NSM_READ_ONLY_INDEX', 'ReadOnlyIndex');
      expect(hex((await nsm.describePcr(18)).data)).toBe(hex(value));
    });

    it('indexes 32 and 40 answer InvalidIndex (the client only checks u16)', async () => {
      for (const i of [32, 40]) {
        await rejectsWith(nsm.describePcr(i), 'ERR_NSM_INVALID_INDEX', 'InvalidIndex');
        await rejectsWith(
          nsm.extendPcr(i, Uint8Array.of(1)),
          'ERR_NSM_INVALID_INDEX',
          'InvalidIndex',
        );
        await rejectsWith(nsm.lockPcr(i), 'ERR_NSM_INVALID_INDEX', 'InvalidIndex');
      }
      await rejectsWith(nsm.lockPcrs(33), 'ERR_NSM_INVALID_INDEX', 'InvalidIndex');
      await rejectsWith(nsm.lockPcrs(40), 'ERR_NSM_INVALID_INDEX', 'InvalidIndex');
    });

    it('invalid arguments are rejected before anything is sent', async () => {
      const before = hex((await nsm.describePcr(16)).data);
      for (const bad of [-1, 1.5, 65536, Number.NaN, '3' as unknown as number]) {
        const e = await rejectsWith(nsm.describePcr(bad), 'ERR_NSM_INVALID_ARGUMENT');
        expect(e.field).toBe(`describePcr(${String(bad)})`);
      }
      await rejectsWith(
        nsm.extendPcr(16, 'text' as unknown as Uint8Array),
        'ERR_NSM_INVALID_ARGUMENT',
      );
      await rejectsWith(nsm.extendPcr(16, new Uint8Array(5000)), 'ERR_NSM_INPUT_TOO_LARGE');
      await rejectsWith(nsm.lockPcrs(-1), 'ERR_NSM_INVALID_ARGUMENT');
      for (const field of ['userData', 'nonce', 'publicKey'] as const) {
        const e = await rejectsWith(
          nsm.getAttestationDocument({ [field]: new Uint8Array(1025) }),
          'ERR_NSM_INPUT_TOO_LARGE',
        );
        expect(e.field).toBe(field);
      }
      await rejectsWith(nsm.getRandom(-1), 'ERR_NSM_INVALID_ARGUMENT');
      await rejectsWith(nsm.getRandom(2.5), 'ERR_NSM_INVALID_ARGUMENT');
      expect(hex((await nsm.describePcr(16)).data)).toBe(before);
    });

    it('a raw request over 4096 bytes fails with ERR_NSM_INPUT_TOO_LARGE, an empty one is never sent', async () => {
      const oversize = cbor({ ExtendPCR: { index: 16, data: new Uint8Array(4097 - 27) } });
      expect(oversize.length).toBe(4097);
      await rejectsWith(nsm.transport.request(oversize), 'ERR_NSM_INPUT_TOO_LARGE');
      const atLimit = cbor({ ExtendPCR: { index: 17, data: new Uint8Array(4096 - 27) } });
      expect(atLimit.length).toBe(4096);
      expectResponse(await nsm.transport.request(atLimit), 'ExtendPCR', 'raw');
      await rejectsWith(nsm.transport.request(new Uint8Array(0)), 'ERR_NSM_INVALID_ARGUMENT');
      // the NSM still answers afterwards
      expect((await nsm.describeNsm()).maxPcrs).toBe(32);
    });

    it('malformed or unknown requests answer InvalidOperation', async () => {
      const raw = [
        cbor('NoSuchRequest'),
        Uint8Array.of(0xff, 0xff),
        cbor({}),
        cbor('Attestation'),
        cbor({ GetRandom: {} }),
        cbor({ DescribePCR: { index: 'a' } }),
        cbor({ DescribePCR: { index: -1 } }),
        cbor({ DescribePCR: { index: 70000 } }),
      ];
      for (const req of raw) {
        const res = await nsm.transport.request(req);
        const e = await rejectsWith(
          Promise.resolve().then(() => expectResponse(res, 'DescribePCR', 'raw')),
          'ERR_NSM_INVALID_OPERATION',
          'InvalidOperation',
        );
        expect(e.message).toContain('InvalidOperation');
      }
    });

    it('Attestation echoes user_data, nonce and public_key and lists the locked PCRs', async () => {
      const { lockedPcrs, moduleId } = await nsm.describeNsm();
      const userData = new TextEncoder().encode('user data');
      const nonce = Uint8Array.from({ length: 16 }, (_, i) => i);
      const publicKey = new Uint8Array(300).fill(0x30);
      const doc = await nsm.getAttestationDocument({ userData, nonce, publicKey });
      const { payload } = documentParts(doc);
      expect([...payload.keys()]).toEqual([
        'module_id',
        'digest',
        'timestamp',
        'pcrs',
        'certificate',
        'cabundle',
        'public_key',
        'user_data',
        'nonce',
      ]);
      expect(payload.get('module_id')).toBe(moduleId);
      expect(payload.get('digest')).toBe('SHA384');
      expect(Math.abs(Number(payload.get('timestamp')) - Date.now())).toBeLessThan(10 * 60_000);
      expect(hex(payload.get('user_data') as Uint8Array)).toBe(hex(userData));
      expect(hex(payload.get('nonce') as Uint8Array)).toBe(hex(nonce));
      expect(hex(payload.get('public_key') as Uint8Array)).toBe(hex(publicKey));
      const pcrs = payload.get('pcrs') as Map<number, Uint8Array>;
      expect([...pcrs.keys()].sort((a, b) => a - b)).toEqual(lockedPcrs);
      for (const [i, v] of pcrs) expect(hex(v)).toBe(hex((await nsm.describePcr(i)).data));
      expect(payload.get('certificate')).toBeInstanceOf(Uint8Array);
      expect(Array.isArray(payload.get('cabundle'))).toBe(true);

      const bare = documentParts(await nsm.getAttestationDocument()).payload;
      expect(bare.get('user_data')).toBeNull();
      expect(bare.get('nonce')).toBeNull();
      expect(bare.get('public_key')).toBeNull();

      const full = new Uint8Array(1024).fill(1);
      const max = documentParts(
        await nsm.getAttestationDocument({ userData: full, nonce: full, publicKey: full }),
      ).payload;
      expect((max.get('nonce') as Uint8Array).length).toBe(1024);
    });

    it('GetRandom returns 256 bytes per request and getRandom(n) loops past it', async () => {
      const one = await nsm.getRandom(256);
      expect(one.length).toBe(256);
      const big = await nsm.getRandom(1000);
      expect(big.length).toBe(1000);
      expect(big.some((b) => b !== 0)).toBe(true);
      // 1000 bytes come from 4 requests: their 256-byte blocks must differ from each other
      const blocks = new Set([0, 256, 512].map((o) => hex(big.subarray(o, o + 256))));
      expect(blocks.size).toBe(3);
      expect(hex(await nsm.getRandom(32))).not.toBe(hex(await nsm.getRandom(32)));
      expect((await nsm.getRandom(0)).length).toBe(0);
      const buf = await nsm.randomBytes(40);
      expect(Buffer.isBuffer(buf)).toBe(true);
      expect(buf.length).toBe(40);
    });

    it('many concurrent requests all succeed and extends apply in call order', async () => {
      const start = (await nsm.describePcr(20)).data;
      const calls: Promise<unknown>[] = [];
      const datas: Uint8Array[] = [];
      for (let i = 0; i < 60; i++) {
        if (i % 3 === 0) {
          const d = Uint8Array.of(i);
          datas.push(d);
          calls.push(nsm.extendPcr(20, d));
        } else if (i % 3 === 1) {
          // Attestation goes to a worker thread on the device ('auto' dispatch), the rest not
          calls.push(
            i % 12 === 1
              ? nsm.getAttestationDocument({ nonce: Uint8Array.of(i) })
              : nsm.getRandom(300),
          );
        } else {
          calls.push(nsm.describePcr(i % 32));
        }
      }
      const results = await Promise.all(calls);
      let expected = start;
      for (const d of datas) expected = sha384(expected, d);
      expect(hex((await nsm.describePcr(20)).data)).toBe(hex(expected));
      expect(hex(results[57] as Uint8Array)).toBe(hex(expected));
      expect((results[4] as Uint8Array).length).toBe(300);
      // each document echoes its own nonce: answers were not mixed up
      for (const i of [1, 13, 25, 37, 49]) {
        const nonce = documentParts(results[i] as Uint8Array).payload.get('nonce') as Uint8Array;
        expect([...nonce]).toEqual([i]);
      }
    });

    it('a closed client rejects with ERR_NSM_CLOSED; close is idempotent', async () => {
      const other = await open();
      expect((await other.describePcr(0)).data.length).toBe(48);
      await other[Symbol.asyncDispose]();
      await other.close();
      await rejectsWith(other.describeNsm(), 'ERR_NSM_CLOSED');
      await rejectsWith(other.getRandom(1), 'ERR_NSM_CLOSED');
      // the shared NSM is still there for everyone else
      expect((await nsm.describeNsm()).maxPcrs).toBe(32);
    });

    it('LockPCRs(32) locks every PCR; nothing can be extended afterwards', async () => {
      await nsm.lockPcrs(32);
      const { lockedPcrs } = await nsm.describeNsm();
      expect(lockedPcrs).toEqual(Array.from({ length: 32 }, (_, i) => i));
      for (const i of [16, 17, 31]) {
        await rejectsWith(nsm.extendPcr(i, Uint8Array.of(1)), 'ERR_NSM_READ_ONLY_INDEX');
      }
      const pcrs = documentParts(await nsm.getAttestationDocument()).payload.get('pcrs') as Map<
        number,
        Uint8Array
      >;
      expect(pcrs.size).toBe(32);
    });
  });
}
