// Runs INSIDE nsm-vm against a real /dev/nsm (QEMU virtio-nsm + Linux nsm.ko). Order matters:
// the fresh-device checks run before the shared behaviour suite changes the device's state.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { verifyDocument } from '@enclave-extras/attestation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceTransport, NsmClient } from '../../src/index.js';
import { describeBehaviour } from '../behaviour.js';
import { cbor, documentParts, hex, rejectsWith } from '../helpers.js';

const onDevice = existsSync('/dev/nsm');
if (!onDevice) console.log('device suite SKIPPED: no /dev/nsm (run it with `pnpm test:vm`)');

describe.skipIf(!onDevice)('device-specific (QEMU virtio-nsm): fresh device', () => {
  let nsm: NsmClient;
  beforeAll(async () => {
    nsm = await NsmClient.open();
  });
  afterAll(async () => nsm?.close());

  it('talks to the device through the koffi ioctl transport', () => {
    expect(nsm.transport.name).toBe('device:/dev/nsm');
  });

  it('starts with no PCR locked and every PCR zero (a real enclave starts with 0-15 locked)', async () => {
    expect((await nsm.describeNsm()).lockedPcrs).toEqual([]);
    for (let i = 0; i < 32; i++) {
      const pcr = await nsm.describePcr(i);
      expect(pcr.lock).toBe(false);
      expect(hex(pcr.data)).toBe(hex(new Uint8Array(48)));
    }
  });

  it('documents are unsigned (alg -1, zero signature, zero certificate) and never verify', async () => {
    const doc = await nsm.getAttestationDocument({ nonce: Uint8Array.of(1) });
    const { protectedHeader, payload, signature } = documentParts(doc);
    expect(protectedHeader.get(1)).toBe(-1);
    expect(signature.every((b) => b === 0)).toBe(true);
    expect((payload.get('certificate') as Uint8Array).every((b) => b === 0)).toBe(true);
    expect((payload.get('pcrs') as Map<number, Uint8Array>).size).toBe(0);
    expect(() => verifyDocument(doc)).toThrow();
  });

  it('QEMU parses indexes as u8: >= 256 answers InvalidOperation (the real NSM: InvalidIndex)', async () => {
    await rejectsWith(nsm.describePcr(255), 'ERR_NSM_INVALID_INDEX', 'InvalidIndex');
    await rejectsWith(nsm.describePcr(256), 'ERR_NSM_INVALID_OPERATION', 'InvalidOperation');
    await rejectsWith(nsm.describePcr(65535), 'ERR_NSM_INVALID_OPERATION', 'InvalidOperation');
  });

  it('an oversize request is refused by the kernel itself (EMSGSIZE from ioctl)', async () => {
    const e = await rejectsWith(
      nsm.transport.request(cbor({ ExtendPCR: { index: 16, data: new Uint8Array(4070) } })),
      'ERR_NSM_INPUT_TOO_LARGE',
    );
    expect(e.syscall).toBe('ioctl');
    expect((e.cause as { code?: string }).code).toBe('EMSGSIZE');
  });

  it('a user without access to /dev/nsm gets ERR_NSM_PERMISSION', () => {
    const dist = resolve(import.meta.dirname, '../../dist/index.js');
    chmodSync('/dev/nsm', 0o600);
    try {
      const script = `import(${JSON.stringify(dist)}).then((m) => m.deviceTransport()).then(
        () => console.log('OPENED'), (e) => console.log(e.code + ' ' + e.message))`;
      const r = spawnSync(process.execPath, ['-e', script], {
        uid: 65534,
        gid: 65534,
        encoding: 'utf8',
      });
      expect(r.stdout).toMatch(/^ERR_NSM_PERMISSION \/dev\/nsm: permission denied/);
    } finally {
      chmodSync('/dev/nsm', 0o666);
    }
  });

  it("dispatch 'async' (koffi worker thread) and 'sync' give the same answers", async () => {
    const a = await NsmClient.open({ transport: await deviceTransport({ dispatch: 'async' }) });
    const s = await NsmClient.open({ transport: await deviceTransport({ dispatch: 'sync' }) });
    expect(hex((await a.describePcr(31)).data)).toBe(hex((await s.describePcr(31)).data));
    expect((await a.getRandom(600)).length).toBe(600);
    await rejectsWith(a.describePcr(40), 'ERR_NSM_INVALID_INDEX');
    const doc = documentParts(await s.getAttestationDocument({ nonce: Uint8Array.of(5) }));
    expect(hex(doc.payload.get('nonce') as Uint8Array)).toBe('05');
    const e = await rejectsWith(
      a.transport.request(cbor({ ExtendPCR: { index: 16, data: new Uint8Array(4070) } })),
      'ERR_NSM_INPUT_TOO_LARGE',
    );
    expect((e.cause as { code?: string }).code).toBe('EMSGSIZE');
    await Promise.all([a.close(), s.close()]);
  });

  it('two transports on the device work side by side', async () => {
    const a = await deviceTransport();
    const b = await deviceTransport({ path: '/dev/nsm' });
    const [x, y] = await Promise.all([a.request(cbor('GetRandom')), b.request(cbor('GetRandom'))]);
    expect(x.length).toBeGreaterThan(256);
    expect(y.length).toBeGreaterThan(256);
    await Promise.all([a.close(), b.close()]);
    await rejectsWith(a.request(cbor('GetRandom')), 'ERR_NSM_CLOSED');
  });
});

if (onDevice) describeBehaviour('real /dev/nsm in nsm-vm', () => NsmClient.open());

describe.skipIf(!onDevice)('device-specific (QEMU virtio-nsm): after the shared suite', () => {
  it('the document lists every locked PCR with its current value', async () => {
    const nsm = await NsmClient.open();
    const { payload } = documentParts(await nsm.getAttestationDocument());
    const pcrs = payload.get('pcrs') as Map<number, Uint8Array>;
    expect(pcrs.size).toBe(32);
    expect(hex(pcrs.get(16)!)).toBe(hex((await nsm.describePcr(16)).data));
    await nsm.close();
  });
});
