// The volumes hook of runEnclave: routes for volumes, and a volume that cannot be mounted stops
// the run before the app starts with the route closed again. Real sockets, no mounts (the
// failures here are decided before mount(2), so no root is needed).
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEmulatedTransport } from '@enclave-extras/vsock';
import { describe, expect, it } from 'vitest';
import { enclaveConfigSchema, loopbackAliases, runEnclave } from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'ee-runtime-volumes-'));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

describe('runEnclave with volumes', () => {
  it('adds the route and the loopback alias of each volume that names a route', () => {
    const c = enclaveConfigSchema.parse({
      volumes: [
        { name: 'data', mountPoint: '/data', server: { host: '127.0.0.5' }, route: {} },
        { name: 'own', mountPoint: '/own', server: { host: '127.0.0.6' } },
      ],
    });
    expect(loopbackAliases(c)).toEqual(['127.0.0.5']);
    expect(c.volumes[0]?.nfs.vers).toBe('4.2');
  });

  it('a server that never answers: ERR_VOLUME_SERVER_UNREACHABLE before the app runs, the volume route closed', async () => {
    const port = await freePort();
    const marker = join(dir, 'app-ran');
    const config = enclaveConfigSchema.parse({
      network: { setup: false },
      volumes: [
        {
          name: 'data',
          mountPoint: dir,
          server: { host: '127.0.0.1', port },
          route: { cid: 3, port: 2049 },
          readyTimeoutMs: 1500,
        },
      ],
    });
    // the parent side does not listen: the enclave route accepts, its vsock dial is refused
    const transport = createEmulatedTransport({ dir: mkdtempSync(join(tmpdir(), 'ee-vsock-')) });
    const err = await runEnclave(config, {
      command: process.execPath,
      args: ['-e', `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'x')`],
      skipNetwork: true,
      vsock: { transport },
    }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('ERR_VOLUME_SERVER_UNREACHABLE');
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
    expect(existsSync(marker)).toBe(false);
    // the route's listener is gone: the port can be bound again
    await new Promise<void>((resolve, reject) => {
      const s = net
        .createServer()
        .once('error', reject)
        .listen(port, '127.0.0.1', () => s.close(() => resolve()));
    });
  });

  it('a missing mount point: ERR_VOLUME_MOUNT_POINT_MISSING before the app runs', async () => {
    const marker = join(dir, 'app-ran-2');
    const config = enclaveConfigSchema.parse({
      network: { setup: false },
      volumes: [
        { name: 'data', mountPoint: join(dir, 'missing'), server: { port: await freePort() } },
      ],
    });
    const err = await runEnclave(config, {
      command: process.execPath,
      args: ['-e', `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'x')`],
      skipNetwork: true,
    }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('ERR_VOLUME_MOUNT_POINT_MISSING');
    expect(existsSync(marker)).toBe(false);
  });

  it('a SIGTERM while waiting for the NFS server stops the bring-up at once (not at readyTimeoutMs)', async () => {
    const port = await freePort();
    const marker = join(dir, 'app-ran-3');
    const config = enclaveConfigSchema.parse({
      network: { setup: false },
      volumes: [{ name: 'data', mountPoint: dir, server: { port }, readyTimeoutMs: 600_000 }],
    });
    const run = runEnclave(config, {
      command: process.execPath,
      args: ['-e', `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'x')`],
      skipNetwork: true,
    });
    setTimeout(() => process.emit('SIGTERM', 'SIGTERM'), 500);
    // like any signal before the app: the run ends with 128 + SIGTERM, the app never started
    expect(await run).toEqual({ status: 143, code: null, signal: 'SIGTERM' });
    expect(existsSync(marker)).toBe(false);
  });
});
