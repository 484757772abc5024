// The backend serving QEMU's nitro-enclave machine (the one H7's runner starts): an EIF built by
// @enclave-extras/eif from the enclave kernel and a busybox + vt ramdisk, vsock on our socket.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEmulatedTransport, createServer } from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVhostVsockBackend, type VhostVsockBackend } from '../../src/index.js';
import {
  buildInitramfs,
  ENCLAVE_CMDLINE,
  type Guest,
  nitroAssets,
  runInGuest,
  startNitroEnclave,
  waitForAgent,
} from './guest.js';

const assets = nitroAssets();
const why = typeof assets === 'string' ? assets : null;
const CID = 16;
const MiB = 1024 * 1024;

describe.skipIf(why !== null)(`nitro-enclave machine${why ? ` (skipped: ${why})` : ''}`, () => {
  let dir: string;
  let backend: VhostVsockBackend;
  let guest: Guest;
  let heartbeat = '';
  const transport = () => createEmulatedTransport({ dir, localCid: 3 });
  const run = (cmd: string, input?: Buffer) => runInGuest(transport(), CID, cmd, input);

  beforeAll(async () => {
    if (typeof assets === 'string') return;
    dir = mkdtempSync(join(tmpdir(), 'vhvn-'));
    let eifModule: typeof import('@enclave-extras/eif');
    try {
      eifModule = await import('@enclave-extras/eif');
    } catch (err) {
      throw new Error(
        `@enclave-extras/eif is needed to build the test EIF (pnpm --filter @enclave-extras/eif build): ${err}`,
      );
    }
    const eif = join(dir, 'test.eif');
    await eifModule.writeEif({
      output: eif,
      kernel: { path: assets.kernel },
      cmdline: ENCLAVE_CMDLINE,
      metadata: {
        ImageName: 'vhost-vsock-test',
        ImageVersion: '0',
        BuildMetadata: {
          BuildTime: '1970-01-01T00:00:00+00:00',
          BuildTool: 'vhost-vsock test',
          BuildToolVersion: '0',
          OperatingSystem: 'Linux',
          KernelVersion: 'enclave-kernel',
        },
        DockerInfo: null,
        CustomMetadata: null,
      },
      ramdisks: [{ path: buildInitramfs(false) }],
    });
    backend = await createVhostVsockBackend({
      socketPath: join(dir, 'vhost.sock'),
      guestCid: CID,
      vsockDir: dir,
      hostCid: 3,
    });
    // the heartbeat convention of nitro-cli's init, served in-process
    await backend.listen(9000, (s) =>
      s.once('data', (b: Buffer) => {
        heartbeat = b.toString('hex');
        s.end(b);
      }),
    );
    guest = startNitroEnclave({
      qemu: assets.qemu,
      eif,
      socketPath: backend.socketPath,
      consoleLog: join(dir, 'console.log'),
    });
    await waitForAgent(transport(), CID, guest);
  });

  afterAll(async () => {
    await guest?.stop();
    await backend?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a host dial of vsock:16:7000 through the folder reaches the enclave (vm_16.sock)', async () => {
    expect((await run('echo hello from the enclave')).toString()).toBe('hello from the enclave\n');
  });

  it('guest -> CID 3 port 9000 reaches the in-process handler (heartbeat 0xB7 echoed)', async () => {
    const out = await run("printf '\\267' | vt connect 3 9000 | od -An -tx1");
    expect(out.toString().trim()).toBe('b7');
    expect(heartbeat).toBe('b7');
  });

  it('8 MiB hash-checked each way between the enclave and the vsock folder', async () => {
    const data = randomBytes(8 * MiB);
    const out = await run('sha256sum', data);
    expect(out.toString().split(' ')[0]).toBe(createHash('sha256').update(data).digest('hex'));
    let peerCid: number | undefined;
    const server = createServer({ transport: transport(), allowHalfOpen: true }, (s) => {
      peerCid = s.remoteCid;
      const h = createHash('sha256');
      s.on('data', (d: Buffer) => h.update(d));
      s.on('end', () => s.end(`${h.digest('hex')}\n`));
    });
    await new Promise<void>((ok) => server.listen({ port: 5005 }, () => ok()));
    const r = await run(
      'head -c 8388608 /dev/urandom > /tmp/d && sha256sum /tmp/d | cut -d" " -f1 && vt connect 3 5005 < /tmp/d',
    );
    const [guestHash, hostHash] = r.toString().trim().split('\n');
    expect(hostHash).toBe(guestHash);
    expect(peerCid).toBe(CID);
    await new Promise<void>((ok) => server.close(() => ok()));
  });
});
