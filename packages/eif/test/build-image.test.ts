// buildEif from image sources (OCI layout, docker save tarball) built in the test, end to end.
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildEif, EifError } from '../src/index.js';
import { bytes, expectedPcrs, parseRaw } from './independent.js';
import {
  dockerSaveFiles,
  type ImageSpec,
  ociFiles,
  readNewc,
  tarFiles,
  tarOf,
  writeDir,
} from './rootfs-helpers.js';

let dir: string;
let blobs: string;
let spec: ImageSpec;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eif-build-image-'));
  blobs = join(dir, 'blobs');
  await mkdir(blobs);
  await writeFile(join(blobs, 'bzImage'), bytes(50_000, 61));
  await writeFile(join(blobs, 'cmdline'), 'console=ttyS0\n');
  await writeFile(join(blobs, 'init'), bytes(7_000, 62));
  await writeFile(join(blobs, 'nsm.ko'), bytes(2_000, 63));
  const base = await tarOf([
    { name: 'bin/', type: 'directory' },
    { name: 'bin/server', data: 'v1', mode: 0o755 },
    { name: 'etc/', type: 'directory' },
    { name: 'etc/old.conf', data: 'old' },
  ]);
  const top = await tarOf([
    { name: 'bin/server', data: 'v2', mode: 0o755 },
    { name: 'etc/.wh.old.conf', data: '' },
    { name: 'etc/new.conf', data: 'new' },
  ]);
  spec = {
    layers: [{ tar: base, gzip: true }, { tar: top }],
    config: {
      Entrypoint: ['/bin/server'],
      Cmd: ['--port', '8080'],
      Env: ['PATH=/bin', 'MODE=prod'],
    },
  };
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function customer(eif: Buffer) {
  const raw = parseRaw(eif);
  return { raw, entries: readNewc(raw.sections[4]!.data).entries };
}

describe('buildEif from images', () => {
  it('OCI layout dir, OCI tar and docker save tarballs give the same application (PCR2) with nitro-cli cmd/env', async () => {
    const oci = join(dir, 'oci');
    await writeDir(oci, ociFiles(spec));
    const ociTar = join(dir, 'oci.tar');
    await writeFile(ociTar, await tarFiles(ociFiles(spec)));
    const classic = join(dir, 'classic.tar');
    await writeFile(classic, await tarFiles(dockerSaveFiles(spec, 'classic')));
    const modern = join(dir, 'modern.tar');
    await writeFile(modern, await tarFiles(dockerSaveFiles(spec, 'oci')));
    const sources = [
      { type: 'oci-layout', path: oci },
      { type: 'oci-layout', path: ociTar },
      { type: 'docker-archive', path: classic },
      { type: 'docker-archive', path: modern },
    ] as const;
    const results = [];
    for (const [i, rootfs] of sources.entries()) {
      const r = await buildEif({ blobs, rootfs, output: join(dir, `img-${i}.eif`) });
      const file = await readFile(r.path);
      expect(r.measurements).toMatchObject(expectedPcrs(parseRaw(file)));
      results.push({ r, file });
    }
    for (const { r } of results) expect(r.measurements).toEqual(results[0]!.r.measurements);
    // nitro-cli: cmd is CMD when present (not ENTRYPOINT + CMD), env is ENV.
    expect(results[0]!.r.cmd).toEqual(['--port', '8080']);
    expect(results[0]!.r.env).toEqual(['PATH=/bin', 'MODE=prod']);
    const { entries } = customer(results[0]!.file);
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(byName.get('cmd')!.data.toString()).toBe('--port\n8080\n');
    expect(byName.get('env')!.data.toString()).toBe('PATH=/bin\nMODE=prod\n');
    expect(byName.get('rootfs/bin/server')!.data.toString()).toBe('v2');
    expect(byName.has('rootfs/etc/old.conf')).toBe(false);
    expect(byName.get('rootfs/etc/new.conf')!.data.toString()).toBe('new');
    // --cmd / --env overrides
    const o = await buildEif({
      blobs,
      rootfs: sources[0],
      cmd: ['/bin/server', '--debug'],
      env: ['MODE=dev'],
      output: join(dir, 'override.eif'),
    });
    expect(o.cmd).toEqual(['/bin/server', '--debug']);
    expect(o.env).toEqual(['PATH=/bin', 'MODE=dev']);
    expect(o.measurements.PCR1).toBe(results[0]!.r.measurements.PCR1);
    expect(o.measurements.PCR2).not.toBe(results[0]!.r.measurements.PCR2);
  });

  it('a traversal attempt in a layer is ERR_EIF_ROOTFS_TRAVERSAL and writes nothing', async () => {
    const evil = await tarOf([{ name: '../../etc/passwd', data: 'x' }]);
    const oci = join(dir, 'evil');
    await writeDir(oci, ociFiles({ layers: [{ tar: evil }], config: { Cmd: ['/x'] } }));
    const out = await mkdtemp(join(dir, 'evil-out-'));
    const err = await buildEif({
      blobs,
      rootfs: { type: 'oci-layout', path: oci },
      output: join(out, 'app.eif'),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EifError);
    expect((err as EifError).code).toBe('ERR_EIF_ROOTFS_TRAVERSAL');
    expect(await readdir(out)).toEqual([]);
  });

  it('an image whose architecture differs from --arch is refused', async () => {
    const oci = join(dir, 'oci-arch');
    await writeDir(oci, ociFiles(spec));
    const err = await buildEif({
      blobs,
      kernel: join(blobs, 'bzImage'),
      arch: 'aarch64',
      rootfs: { type: 'oci-layout', path: oci },
      output: join(dir, 'arch.eif'),
    }).catch((e: unknown) => e);
    expect((err as EifError).code).toBe('ERR_EIF_INVALID_ARGUMENT');
    expect((err as EifError).message).toContain('amd64');
  });
});
