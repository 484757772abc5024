// Error paths that are decided before anything is mounted: they run as any user, on real sockets.
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  mountVolume,
  probeNfs,
  VolumeError,
  volumeSchema,
  waitForNfsServer,
} from '../src/index.js';

const servers: net.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

function listen(onConn: (s: net.Socket) => void): Promise<number> {
  const srv = net.createServer(onConn);
  servers.push(srv);
  return new Promise((resolve) =>
    srv.listen(0, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port)),
  );
}

/** A minimal ONC RPC server: answers NULL calls with an accepted reply (what nfsd does). */
function rpcNullServer(acceptStat = 0): Promise<number> {
  return listen((s) => {
    s.on('data', (d: Buffer) => {
      const xid = d.subarray(4, 8);
      const reply = Buffer.alloc(24);
      xid.copy(reply, 0);
      reply.writeUInt32BE(1, 4); // REPLY
      reply.writeUInt32BE(0, 8); // MSG_ACCEPTED
      reply.writeUInt32BE(0, 12); // verf flavor
      reply.writeUInt32BE(0, 16); // verf length
      reply.writeUInt32BE(acceptStat, 20);
      const mark = Buffer.alloc(4);
      mark.writeUInt32BE((0x80000000 | reply.length) >>> 0, 0);
      s.end(Buffer.concat([mark, reply]));
    });
    s.on('error', () => {});
  });
}

describe('NFS readiness', () => {
  it('an RPC NULL reply from the server means ready', async () => {
    const port = await rpcNullServer();
    await expect(probeNfs('127.0.0.1', port, 2000)).resolves.toBeUndefined();
  });

  it('a proxy that accepts and closes (parent not listening) is not ready', async () => {
    const port = await listen((s) => s.destroy());
    await expect(probeNfs('127.0.0.1', port, 2000)).rejects.toThrow(/closed before an RPC reply/);
  });

  it('a server that does not serve NFSv4 (PROG_MISMATCH) is not ready', async () => {
    const port = await rpcNullServer(2);
    await expect(probeNfs('127.0.0.1', port, 2000)).rejects.toThrow(/accept_stat 2/);
  });

  it('retries until the server answers', async () => {
    // the port is reserved first, the server comes up after a few failed attempts
    const srv = net.createServer();
    const port = await new Promise<number>((r) =>
      srv.listen(0, '127.0.0.1', () => r((srv.address() as net.AddressInfo).port)),
    );
    await new Promise((r) => srv.close(r));
    let retries = 0;
    const ready = waitForNfsServer({
      host: '127.0.0.1',
      port,
      readyTimeoutMs: 20_000,
      retryDelayMs: 100,
      onRetry: () => {
        retries++;
        if (retries === 3) {
          const late = net.createServer((s) =>
            s.on('data', (d: Buffer) => {
              const reply = Buffer.alloc(28);
              reply.writeUInt32BE((0x80000000 | 24) >>> 0, 0);
              d.subarray(4, 8).copy(reply, 4);
              reply.writeUInt32BE(1, 8);
              s.end(reply);
            }),
          );
          servers.push(late);
          late.listen(port, '127.0.0.1');
        }
      },
    });
    await expect(ready).resolves.toBeUndefined();
    expect(retries).toBeGreaterThanOrEqual(3);
  });

  it('gives up at the deadline with ERR_VOLUME_SERVER_UNREACHABLE naming the address', async () => {
    const port = await listen((s) => s.destroy());
    const err = await waitForNfsServer({
      host: '127.0.0.1',
      port,
      readyTimeoutMs: 600,
      retryDelayMs: 100,
      volume: 'data',
    }).catch((e) => e);
    expect(err).toBeInstanceOf(VolumeError);
    expect(err.code).toBe('ERR_VOLUME_SERVER_UNREACHABLE');
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(err.message).toMatch(/ee-parent nfs-exports/);
    expect(err.cause).toBeInstanceOf(Error);
  });

  it('stops when aborted', async () => {
    const port = await listen((s) => s.destroy());
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('shutdown')), 200);
    const err = await waitForNfsServer({
      host: '127.0.0.1',
      port,
      readyTimeoutMs: 60_000,
      retryDelayMs: 100,
      signal: ac.signal,
    }).catch((e) => e);
    expect(err.code).toBe('ERR_VOLUME_ABORTED');
  });
});

describe('mountVolume refuses before mounting anything', () => {
  const dir = mkdtempSync(join(tmpdir(), 'volumes-unit-'));

  it('a missing mount point', async () => {
    const v = volumeSchema.parse({ name: 'data', mountPoint: join(dir, 'nope') });
    const err = await mountVolume(v).catch((e) => e);
    expect(err.code).toBe('ERR_VOLUME_MOUNT_POINT_MISSING');
    expect(err.volume).toBe('data');
    expect(err.message).toContain(join(dir, 'nope'));
    expect(err.message).toMatch(/createMountPoint/);
  });

  it('a mount point that is a file', async () => {
    writeFileSync(join(dir, 'file'), 'x');
    const v = volumeSchema.parse({ name: 'data', mountPoint: join(dir, 'file') });
    expect((await mountVolume(v).catch((e) => e)).code).toBe('ERR_VOLUME_MOUNT_POINT_MISSING');
  });

  it('a mount point that is already mounted', async () => {
    const v = volumeSchema.parse({ name: 'data', mountPoint: '/proc' });
    const err = await mountVolume(v).catch((e) => e);
    expect(err.code).toBe('ERR_VOLUME_ALREADY_MOUNTED');
    expect(err.path).toBe('/proc');
  });

  it('a server that never becomes ready (nothing mounted, no directory left)', async () => {
    const port = await listen((s) => s.destroy());
    const v = volumeSchema.parse({
      name: 'data',
      mountPoint: join(dir, 'mp'),
      createMountPoint: true,
      server: { port },
      readyTimeoutMs: 500,
    });
    const err = await mountVolume(v).catch((e) => e);
    expect(err.code).toBe('ERR_VOLUME_SERVER_UNREACHABLE');
    expect(existsSync(join(dir, 'mp'))).toBe(false);
  });
});
