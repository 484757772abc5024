// The device transport on a machine WITHOUT /dev/nsm: the error paths, and the real koffi ioctl
// against a real file descriptor that is not an NSM (/dev/null answers ENOTTY). The device
// itself is exercised by the VM suite (test/vm, `pnpm test:vm`).
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { deviceTransport, NSM_IOCTL_REQUEST, NsmClient } from '../src/index.js';
import { cbor, rejectsWith } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'nsm-dev-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('device transport without a Nitro Enclave', () => {
  it('uses the NSM ioctl number _IOWR(0x0A, 0, struct nsm_raw)', () => {
    const ioc = (dir: number, type: number, nr: number, size: number) =>
      ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
    expect(NSM_IOCTL_REQUEST).toBe(ioc(3, 0x0a, 0, 32));
    expect(NSM_IOCTL_REQUEST).toBe(0xc0200a00);
  });

  it.skipIf(existsSync('/dev/nsm'))('no /dev/nsm -> ERR_NSM_NO_DEVICE with the hint', async () => {
    const e = await rejectsWith(NsmClient.open(), 'ERR_NSM_NO_DEVICE');
    expect(e.message).toBe(
      'no /dev/nsm: not inside a Nitro Enclave; use the simulator for development (NsmSimulator or socketTransport)',
    );
    expect(e.syscall).toBe('open');
    expect(e.address).toBe('/dev/nsm');
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('a missing custom path -> ERR_NSM_NO_DEVICE naming it', async () => {
    const e = await rejectsWith(deviceTransport({ path: join(tmp, 'nsm') }), 'ERR_NSM_NO_DEVICE');
    expect(e.message).toContain(join(tmp, 'nsm'));
  });

  it('an fd that is not an NSM -> the real ioctl fails with ENOTTY (ERR_NSM_IO)', async () => {
    const t = await deviceTransport({ path: '/dev/null' });
    expect(t.name).toBe('device:/dev/null');
    const e = await rejectsWith(t.request(cbor('GetRandom')), 'ERR_NSM_IO');
    expect(e.syscall).toBe('ioctl');
    expect(e.message).toContain('is not an NSM device');
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOTTY');
    // requests queue behind each other and each gets its own answer
    const many = await Promise.allSettled(
      Array.from({ length: 20 }, () => t.request(cbor('DescribeNSM'))),
    );
    expect(many.every((r) => r.status === 'rejected')).toBe(true);
    await rejectsWith(t.request(new Uint8Array(0)), 'ERR_NSM_INVALID_ARGUMENT');
    await rejectsWith(t.request(new Uint8Array(5000)), 'ERR_NSM_INPUT_TOO_LARGE');
    await t.close();
    await t.close();
    await rejectsWith(t.request(cbor('GetRandom')), 'ERR_NSM_CLOSED');
  });

  it('both dispatch modes reach the real ioctl; a bad mode is rejected', async () => {
    for (const dispatch of ['sync', 'async', 'auto'] as const) {
      const t = await deviceTransport({ path: '/dev/null', dispatch });
      const e = await rejectsWith(t.request(cbor('GetRandom')), 'ERR_NSM_IO');
      expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOTTY');
      // an Attestation request takes the worker-thread path under 'auto'
      const att = cbor({ Attestation: { user_data: null, nonce: null, public_key: null } });
      const e2 = await rejectsWith(t.request(att), 'ERR_NSM_IO');
      expect((e2.cause as NodeJS.ErrnoException).code).toBe('ENOTTY');
      await t.close();
    }
    await rejectsWith(
      deviceTransport({ path: '/dev/null', dispatch: 'threads' as 'sync' }),
      'ERR_NSM_INVALID_ARGUMENT',
    );
  });

  it('a library without ioctl -> ERR_NSM_FFI_UNAVAILABLE', async () => {
    const e = await rejectsWith(
      deviceTransport({ path: '/dev/null', library: join(tmp, 'missing-libc.so') }),
      'ERR_NSM_FFI_UNAVAILABLE',
    );
    expect(e.message).toContain('missing-libc.so');
    expect(e.cause).toBeInstanceOf(Error);
  });

  it.skipIf(process.getuid?.() !== 0)(
    'a device the user may not open -> ERR_NSM_PERMISSION (child process as uid 65534)',
    () => {
      const dev = join(tmp, 'nsm-0600');
      writeFileSync(dev, '');
      chmodSync(dev, 0o600);
      chmodSync(tmp, 0o755);
      const dist = resolve(import.meta.dirname, '../dist/index.js');
      expect(existsSync(dist), 'build the package first').toBe(true);
      const script = `import(${JSON.stringify(dist)}).then((m) => m.deviceTransport({ path: ${JSON.stringify(dev)} })).then(
        () => console.log('OPENED'), (e) => console.log(e.code + ' ' + e.message))`;
      const r = spawnSync(process.execPath, ['-e', script], {
        uid: 65534,
        gid: 65534,
        encoding: 'utf8',
      });
      expect(r.stdout).toContain(`ERR_NSM_PERMISSION ${dev}: permission denied (EACCES)`);
    },
  );
});
