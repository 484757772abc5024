import { describe, expect, it } from 'vitest';
import { volumeRoutes, volumeSchema, volumesSchema } from '../src/index.js';

describe('volumes config', () => {
  it('fills the defaults: NFS 4.2 on 127.0.0.1:2049, hard-mount timeouts, 60 s readiness', () => {
    const v = volumeSchema.parse({ name: 'data', mountPoint: '/data' });
    expect(v.server).toEqual({ host: '127.0.0.1', port: 2049, export: '/' });
    expect(v.nfs).toEqual({ vers: '4.2', timeo: 600, retrans: 2, options: [] });
    expect(v.readyTimeoutMs).toBe(60_000);
    expect(v.createMountPoint).toBe(false);
    expect(v.encryption).toBeUndefined();
  });

  it('parses sizes in MiB, GiB and plain numbers (MiB)', () => {
    const enc = (size: unknown) =>
      volumeSchema.parse({ name: 'e', mountPoint: '/e', encryption: { size, keyId: 'alias/v' } })
        .encryption?.size;
    expect(enc(64)).toBe(64 * 1024 * 1024);
    expect(enc('512MiB')).toBe(512 * 1024 * 1024);
    expect(enc('2GiB')).toBe(2 * 1024 ** 3);
    expect(() => enc('2GB')).toThrow(/2GB/);
    expect(() => enc(0)).toThrow();
  });

  it('rejects relative or root mount points, escaping image paths, unknown keys and bad options', () => {
    expect(() => volumeSchema.parse({ name: 'd', mountPoint: 'data' })).toThrow(/absolute/);
    expect(() => volumeSchema.parse({ name: 'd', mountPoint: '/' })).toThrow(/absolute/);
    expect(() => volumeSchema.parse({ name: 'd', mountPoint: '/a/../b' })).toThrow(/normalised/);
    expect(() =>
      volumeSchema.parse({
        name: 'd',
        mountPoint: '/d',
        encryption: { size: 1, keyId: 'k', image: '../x.img' },
      }),
    ).toThrow(/relative to the export/);
    expect(() => volumeSchema.parse({ name: 'd', mountPoint: '/d', mountpoint: '/x' })).toThrow();
    expect(() =>
      volumeSchema.parse({ name: 'd', mountPoint: '/d', nfs: { options: ['rw,soft'] } }),
    ).toThrow(/one mount option/);
    expect(() => volumeSchema.parse({ name: 'd', mountPoint: '/d', nfs: { vers: '3' } })).toThrow();
    expect(() => volumeSchema.parse({ name: 'a b', mountPoint: '/d' })).toThrow(/letters/);
  });

  it('refuses duplicate names, duplicate and nested mount points', () => {
    const r = volumesSchema.safeParse([
      { name: 'a', mountPoint: '/data' },
      { name: 'a', mountPoint: '/other' },
      { name: 'b', mountPoint: '/data' },
      { name: 'c', mountPoint: '/data/inner' },
    ]);
    expect(r.success).toBe(false);
    const messages = r.error?.issues.map((i) => i.message).join('\n');
    expect(messages).toMatch(/name a is also used/);
    expect(messages).toMatch(/mountPoint \/data is also used/);
    expect(messages).toMatch(/\/data\/inner is inside volume a/);
  });

  it('gives the route of each volume that names one, as proxy endpoints', () => {
    const list = volumesSchema.parse([
      { name: 'a', mountPoint: '/a', server: { host: '127.0.0.2', port: 2049 }, route: {} },
      { name: 'b', mountPoint: '/b', route: { cid: 3, port: 7049 }, server: { port: 12049 } },
      { name: 'c', mountPoint: '/c' },
    ]);
    expect(volumeRoutes(list)).toEqual([
      { name: 'volume:a', listen: 'tcp:127.0.0.2:2049', dial: 'vsock:3:2049' },
      { name: 'volume:b', listen: 'tcp:127.0.0.1:12049', dial: 'vsock:3:7049' },
    ]);
  });

  it('parses the kms block of an encrypted volume (what ee-enclave run reaches KMS with)', () => {
    const v = volumeSchema.parse({
      name: 'v',
      mountPoint: '/v',
      encryption: {
        size: '1GiB',
        keyId: 'alias/v',
        kms: { region: 'eu-west-1', credentials: 'parent:8002' },
      },
    });
    expect(v.encryption?.kms).toEqual({
      region: 'eu-west-1',
      credentials: 'parent:8002',
      nsm: 'device',
    });
    const bad = (kms: unknown) => () =>
      volumeSchema.parse({ name: 'v', mountPoint: '/v', encryption: { size: 1, keyId: 'k', kms } });
    expect(bad({ region: 'x', credentials: 'parent:abc' })).toThrow(/env or parent:PORT/);
    expect(bad({ region: 'x', nsm: 'file:/x' })).toThrow(/device or simulator/);
    expect(bad({ region: 'x', endpoint: 'not a url' })).toThrow();
    expect(bad({ credentials: 'env' })).toThrow();
  });
});
