import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEifError } from '../src/errors.js';
import {
  commandAndEnv,
  customerRamdisk,
  openRootfs,
  type Rootfs,
  type RootfsSource,
} from '../src/ramdisk/index.js';
import { LINUXKIT_HOSTS } from '../src/ramdisk/rootfs.js';
import {
  collect,
  dockerSaveFiles,
  type ImageSpec,
  ociFiles,
  readNewc,
  type TarSpec,
  tarFiles,
  tarOf,
  typeOf,
  writeDir,
} from './rootfs-helpers.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'eif-rootfs-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

let seq = 0;
async function fresh(): Promise<string> {
  const d = join(work, `t${seq++}`);
  return d;
}

const layer0: TarSpec[] = [
  { name: 'etc/', type: 'directory' },
  { name: 'etc/passwd', data: 'root:x:0:0\n' },
  { name: 'etc/hostname', data: 'builder\n' },
  { name: 'bin/', type: 'directory' },
  { name: 'bin/su', data: 'su', mode: 0o4755 },
  { name: './usr/', type: 'directory' },
  { name: './usr/lib/', type: 'directory' },
  { name: './usr/lib/a', data: 'AAAA' },
  { name: './usr/lib/b', data: 'BBBB' },
  { name: './usr/lib/hl', type: 'link', linkname: './usr/lib/a' },
  { name: 'lib', type: 'symlink', linkname: 'usr/lib', mode: 0o777 },
  { name: 'opt/x/', type: 'directory' },
  { name: 'opt/x/old', data: 'old' },
  { name: 'tmp/', type: 'directory', mode: 0o1777 },
  { name: 'home/user/', type: 'directory', mode: 0o700, uid: 1000, gid: 1000 },
  { name: 'home/user/.profile', data: 'export A=1\n', uid: 1000, gid: 1000 },
  { name: '.dockerenv', data: '' },
  { name: 'app/', type: 'directory' },
  { name: 'app/dev-null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
  { name: 'app/fifo', type: 'fifo', mode: 0o600 },
];
const layer1: TarSpec[] = [
  { name: 'usr/lib/.wh.b', data: '' },
  { name: 'opt/x/.wh..wh..opq', data: '' },
  { name: 'opt/x/new', data: 'new' },
  { name: 'etc/passwd', data: 'root:x:0:0:root\n' },
  { name: 'usr/lib/a', data: 'A2' },
  { name: 'lib/c', data: 'C' },
  { name: 'app/.wh.fifo', data: '' },
];
const layer2: TarSpec[] = [
  { name: 'usr/lib/hl2', type: 'link', linkname: 'usr/lib/hl' },
  { name: 'bin/sh', data: 'sh', mode: 0o755 },
  { name: 'bin/bash', type: 'link', linkname: 'bin/sh' },
  { name: 'etc/hosts', data: 'custom hosts\n' },
];

async function spec(): Promise<ImageSpec> {
  return {
    layers: [
      { tar: await tarOf(layer0), gzip: true },
      { tar: await tarOf(layer1) },
      { tar: await tarOf(layer2), gzip: true },
    ],
    config: {
      Cmd: ['/bin/sh', '-c', 'echo hi'],
      Entrypoint: ['/entry'],
      Env: ['PATH=/usr/bin:/bin', 'GREETING=hello world'],
      WorkingDir: '/app',
    },
  };
}

const MTIME = 1_234_567_890;

async function ramdiskOf(
  source: RootfsSource,
  opts: { tmpDir?: string } = {},
): Promise<{
  bytes: Buffer;
  rootfs: Rootfs;
}> {
  const rootfs = await openRootfs(source, opts);
  try {
    const { cmd, env } = commandAndEnv(rootfs.config);
    const bytes = await collect(customerRamdisk({ rootfs, cmd, env, mtime: MTIME }));
    return { bytes, rootfs };
  } finally {
    await rootfs.close();
  }
}

describe('image sources flatten to the expected tree', () => {
  let reference: Buffer;

  it('OCI layout directory: layers, whiteouts, opaque dirs, hardlinks, symlinks, modes, owners', async () => {
    const dir = await fresh();
    await writeDir(dir, ociFiles(await spec()));
    const { bytes, rootfs } = await ramdiskOf({ type: 'oci-layout', path: dir });
    reference = bytes;
    expect(rootfs.config).toEqual({
      cmd: ['/bin/sh', '-c', 'echo hi'],
      entrypoint: ['/entry'],
      env: ['PATH=/usr/bin:/bin', 'GREETING=hello world'],
      workingDir: '/app',
    });
    expect(rootfs.architecture).toBe('amd64');
    const { entries } = readNewc(bytes);
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(entries.map((e) => `${typeOf(e.mode)} ${e.name}`)).toEqual([
      'file cmd',
      'file env',
      'dir rootfs',
      'dir rootfs/app',
      'char rootfs/app/dev-null',
      'dir rootfs/bin',
      'file rootfs/bin/bash',
      'file rootfs/bin/sh',
      'file rootfs/bin/su',
      'dir rootfs/dev',
      'dir rootfs/dev/pts',
      'dir rootfs/dev/shm',
      'dir rootfs/etc',
      'file rootfs/etc/hosts',
      'symlink rootfs/etc/mtab',
      'file rootfs/etc/passwd',
      'symlink rootfs/etc/resolv.conf',
      'dir rootfs/home',
      'dir rootfs/home/user',
      'file rootfs/home/user/.profile',
      'symlink rootfs/lib',
      'dir rootfs/opt',
      'dir rootfs/opt/x',
      'file rootfs/opt/x/new',
      'dir rootfs/proc',
      'dir rootfs/run',
      'dir rootfs/sys',
      'dir rootfs/tmp',
      'dir rootfs/usr',
      'dir rootfs/usr/lib',
      'file rootfs/usr/lib/a',
      'file rootfs/usr/lib/c',
      'file rootfs/usr/lib/hl',
      'file rootfs/usr/lib/hl2',
      'dir rootfs/var',
    ]);
    const get = (n: string) => {
      const e = byName.get(n);
      if (e === undefined) throw new Error(`no ${n}`);
      return e;
    };
    expect(get('cmd').data.toString()).toBe('/bin/sh\n-c\necho hi\n');
    expect(get('env').data.toString()).toBe('PATH=/usr/bin:/bin\nGREETING=hello world\n');
    expect(get('cmd').mode).toBe(0o100644);
    expect(get('rootfs').mode).toBe(0o40755);
    // every entry carries the fixed time stamp
    expect(new Set(entries.map((e) => e.mtime))).toEqual(new Set([MTIME]));
    // modes incl. setuid; owners as in the image
    expect(get('rootfs/bin/su').mode).toBe(0o104755);
    expect(get('rootfs/home/user').mode).toBe(0o40700);
    expect([get('rootfs/home/user').uid, get('rootfs/home/user').gid]).toEqual([1000, 1000]);
    expect(get('rootfs/home/user/.profile').uid).toBe(1000);
    // nitro-cli forces its six mount points to 0755 root (its files: section comes last)
    expect(get('rootfs/tmp').mode).toBe(0o40755);
    // device numbers
    expect([get('rootfs/app/dev-null').rdevMajor, get('rootfs/app/dev-null').rdevMinor]).toEqual([
      1, 3,
    ]);
    // replaced file, whiteout and opaque dir
    expect(get('rootfs/etc/passwd').data.toString()).toBe('root:x:0:0:root\n');
    expect(get('rootfs/usr/lib/a').data.toString()).toBe('A2');
    expect(get('rootfs/usr/lib/a').nlink).toBe(1);
    // entry written through the relative symlink lib -> usr/lib
    expect(get('rootfs/usr/lib/c').data.toString()).toBe('C');
    expect(get('rootfs/lib').data.toString()).toBe('usr/lib');
    // hardlinks: one inode, nlink = paths, data with the last path only
    const hl = get('rootfs/usr/lib/hl');
    const hl2 = get('rootfs/usr/lib/hl2');
    expect(hl.ino).toBe(hl2.ino);
    expect([hl.nlink, hl2.nlink]).toEqual([2, 2]);
    expect(hl.data.length).toBe(0);
    expect(hl2.data.toString()).toBe('AAAA');
    expect(get('rootfs/bin/bash').ino).toBe(get('rootfs/bin/sh').ino);
    expect(get('rootfs/bin/sh').data.toString()).toBe('sh');
    // linuxkit's adjustments, as in nitro-cli's enclaves
    expect(get('rootfs/etc/hosts').data.toString()).toBe(LINUXKIT_HOSTS);
    expect(get('rootfs/etc/resolv.conf').data.toString()).toBe('/run/resolvconf/resolv.conf');
    expect(get('rootfs/etc/mtab').data.toString()).toBe('/proc/mounts');
    // inode numbers unique per inode
    const inos = entries.filter((e) => e.nlink < 2 || typeOf(e.mode) !== 'file').map((e) => e.ino);
    expect(new Set(inos).size).toBe(inos.length);
    expect(rootfs.entryCount).toBe(entries.length - 3);
  });

  it.each([
    ['OCI layout tarball', 'oci-tar'],
    ['docker save tarball (classic layer.tar)', 'docker-classic'],
    ['docker save tarball (Docker >= 25, OCI blobs)', 'docker-oci'],
    ['extracted docker save directory', 'docker-dir'],
  ])('%s gives the same bytes as the OCI layout directory', async (_label, kind) => {
    const s = await spec();
    const d = await fresh();
    let source: RootfsSource;
    if (kind === 'oci-tar') {
      await writeFile(d, await tarFiles(ociFiles(s)));
      source = { type: 'oci-layout', path: d };
    } else if (kind === 'docker-dir') {
      await writeDir(d, dockerSaveFiles(s, 'classic'));
      source = { type: 'docker-archive', path: d, ref: 'example' };
    } else {
      await writeFile(
        d,
        await tarFiles(dockerSaveFiles(s, kind === 'docker-oci' ? 'oci' : 'classic')),
      );
      source = { type: 'docker-archive', path: d, ref: 'example:latest' };
    }
    const { bytes } = await ramdiskOf(source);
    expect(sha(bytes)).toBe(sha(reference));
  });

  it('file times, layer compression and entry order inside a layer do not change the bytes', async () => {
    const shuffled = async (layer: TarSpec[], t: number): Promise<Buffer> => {
      // same entries, later times; independent entries of a layer reordered where order is free
      const withTime = layer.map((e) => ({ ...e, mtime: new Date(t) }));
      return tarOf(withTime);
    };
    const s: ImageSpec = {
      layers: [
        { tar: await shuffled(layer0, 1_000), gzip: false },
        { tar: await shuffled(layer1, 2_000_000_000), gzip: true },
        {
          tar: await shuffled(
            [...layer2]
              .reverse()
              .sort((a, b) => (a.type === 'link' ? 1 : b.type === 'link' ? -1 : 0)),
            5,
          ),
          gzip: false,
        },
      ],
      config: (await spec()).config,
    };
    const dir = await fresh();
    await writeDir(dir, ociFiles(s));
    const { bytes } = await ramdiskOf({ type: 'oci-layout', path: dir });
    expect(sha(bytes)).toBe(sha(reference));
  });

  it('the cpio binary extracts the ramdisk to the same tree (hardlinks share an inode)', async () => {
    if (spawnSync('cpio', ['--version']).status !== 0) {
      throw new Error('cpio is not installed: apt-get install cpio');
    }
    const out = await fresh();
    await import('node:fs/promises').then((fs) => fs.mkdir(out));
    execFileSync('cpio', ['-idm', '--no-absolute-filenames', '--quiet'], {
      cwd: out,
      input: zlib.gunzipSync(reference),
    });
    expect(await readFile(join(out, 'rootfs/usr/lib/hl2'), 'utf8')).toBe('AAAA');
    const a = await lstat(join(out, 'rootfs/usr/lib/hl'));
    const b = await lstat(join(out, 'rootfs/usr/lib/hl2'));
    expect(a.ino).toBe(b.ino);
    expect(a.nlink).toBe(2);
    expect(await readFile(join(out, 'rootfs/bin/bash'), 'utf8')).toBe('sh');
    expect((await lstat(join(out, 'rootfs/bin/su'))).mode & 0o7777).toBe(0o4755);
    expect(await readlink(join(out, 'rootfs/lib'))).toBe('usr/lib');
    expect((await readdir(join(out, 'rootfs/opt/x'))).sort()).toEqual(['new']);
    expect(await readFile(join(out, 'cmd'), 'utf8')).toBe('/bin/sh\n-c\necho hi\n');
    expect((await lstat(join(out, 'rootfs/etc/passwd'))).mtimeMs).toBe(MTIME * 1000);
  });
});

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function ociDir(layers: TarSpec[][], gzip = false): Promise<string> {
  const dir = await fresh();
  const s: ImageSpec = {
    layers: await Promise.all(layers.map(async (l) => ({ tar: await tarOf(l), gzip }))),
    config: { Cmd: ['/x'] },
  };
  await writeDir(dir, ociFiles(s));
  return dir;
}

async function expectCode(source: RootfsSource, code: string, match?: RegExp): Promise<void> {
  const tmp = await fresh();
  await import('node:fs/promises').then((fs) => fs.mkdir(tmp));
  let caught: unknown;
  try {
    const r = await openRootfs(source, { tmpDir: tmp });
    await r.close();
  } catch (err) {
    caught = err;
  }
  expect(isEifError(caught), String(caught)).toBe(true);
  expect((caught as { code: string }).code).toBe(code);
  if (match) expect((caught as Error).message).toMatch(match);
  // the private spill directory is gone on failure
  expect(await readdir(tmp)).toEqual([]);
}

describe('hostile and broken images are refused with typed errors', () => {
  it('../ in a name', async () => {
    const dir = await ociDir([[{ name: 'a/../../evil', data: 'x' }]]);
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_TRAVERSAL', /"\.\."/);
  });
  it('absolute name', async () => {
    const dir = await ociDir([[{ name: '/etc/shadow', data: 'x' }]], true);
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_TRAVERSAL', /absolute/);
  });
  it('absolute symlink used as a parent directory by a later layer', async () => {
    const dir = await ociDir([
      [{ name: 'evil', type: 'symlink', linkname: '/etc' }],
      [{ name: 'evil/passwd', data: 'x' }],
    ]);
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_TRAVERSAL', /evil/);
  });
  it('relative symlink climbing above the root used as a parent directory', async () => {
    const dir = await ociDir([
      [
        { name: 'a/', type: 'directory' },
        { name: 'a/up', type: 'symlink', linkname: '../../..' },
        { name: 'a/up/etc/cron.d/x', data: 'x' },
      ],
    ]);
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_TRAVERSAL', /climbs/);
  });
  it('hardlink to a path outside the root', async () => {
    const dir = await ociDir([[{ name: 'h', type: 'link', linkname: '../../etc/shadow' }]]);
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_TRAVERSAL', /hardlink/);
  });
  it('hardlink to a target that does not exist yet', async () => {
    const dir = await ociDir([
      [
        { name: 'h', type: 'link', linkname: 'later' },
        { name: 'later', data: 'x' },
      ],
    ]);
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_INVALID', /does not exist/);
  });
  it('a layer that does not match its digest', async () => {
    const dir = await ociDir([[{ name: 'f', data: 'x' }]]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    const manifest = JSON.parse(
      await readFile(join(dir, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'),
    );
    const layerPath = join(dir, 'blobs/sha256', manifest.layers[0].digest.slice(7));
    await writeFile(layerPath, await tarOf([{ name: 'f', data: 'y' }]));
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_INVALID', /digest/);
  });
  it('a missing layer blob', async () => {
    const dir = await ociDir([[{ name: 'f', data: 'x' }]]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    const manifest = JSON.parse(
      await readFile(join(dir, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'),
    );
    await rm(join(dir, 'blobs/sha256', manifest.layers[0].digest.slice(7)));
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_BLOB_MISSING');
  });
  it('a layer that is not a tar archive', async () => {
    const dir = await fresh();
    const files = ociFiles({ layers: [{ tar: Buffer.alloc(1024, 7) }], config: {} });
    await writeDir(dir, files);
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_INVALID', /tar/);
  });
  it('not an image at all', async () => {
    const dir = await fresh();
    await writeDir(dir, new Map([['hello.txt', Buffer.from('hi')]]));
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_INVALID', /index\.json/);
    await expectCode(
      { type: 'docker-archive', path: dir },
      'ERR_EIF_ROOTFS_INVALID',
      /manifest\.json/,
    );
  });
  it('a docker save tarball without the requested tag', async () => {
    const d = await fresh();
    await writeFile(d, await tarFiles(dockerSaveFiles(await spec(), 'classic')));
    await expectCode(
      { type: 'docker-archive', path: d, ref: 'other' },
      'ERR_EIF_ROOTFS_INVALID',
      /other/,
    );
  });
  it('zstd layers: flattened where node:zlib has zstd, else a typed error', async () => {
    const z = zlib as unknown as { zstdCompressSync?: (b: Buffer) => Buffer };
    const dir = await fresh();
    const tar = await tarOf([{ name: 'f', data: 'zstd content' }]);
    // a real zstd frame when this Node can make one; else a frame header is enough to be sniffed
    const frame =
      typeof z.zstdCompressSync === 'function'
        ? z.zstdCompressSync(tar)
        : Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(64)]);
    await writeDir(dir, ociFiles({ layers: [{ tar: frame }], config: { Cmd: ['/f'] } }));
    if (typeof z.zstdCompressSync === 'function') {
      const { bytes } = await ramdiskOf({ type: 'oci-layout', path: dir });
      const f = readNewc(bytes).entries.find((e) => e.name === 'rootfs/f');
      expect(f?.data.toString()).toBe('zstd content');
    } else {
      await expectCode(
        { type: 'oci-layout', path: dir },
        'ERR_EIF_ROOTFS_UNSUPPORTED',
        /zstd layers unsupported/,
      );
    }
  });
});

describe('commandAndEnv: nitro-cli semantics', () => {
  it('CMD wins over ENTRYPOINT (never both), ENTRYPOINT when there is no CMD', () => {
    expect(commandAndEnv({ cmd: ['a', 'b'], entrypoint: ['e'], env: [] }).cmd).toEqual(['a', 'b']);
    expect(commandAndEnv({ entrypoint: ['e', '--x'], env: ['A=1'] })).toEqual({
      cmd: ['e', '--x'],
      env: ['A=1'],
    });
  });
  it('overrides: --cmd replaces, --env replaces a key or appends', () => {
    expect(
      commandAndEnv(
        { cmd: ['a'], env: ['A=1', 'B=2'] },
        { cmd: ['/bin/app', '--port', '80'], env: ['B=3', 'C=x=y'] },
      ),
    ).toEqual({ cmd: ['/bin/app', '--port', '80'], env: ['A=1', 'B=3', 'C=x=y'] });
  });
  it('no command at all, a newline in an argument, a bad env entry: typed errors', () => {
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (err) {
        return isEifError(err) ? err.code : String(err);
      }
      return undefined;
    };
    expect(code(() => commandAndEnv({ env: [] }))).toBe('ERR_EIF_ROOTFS_INVALID');
    expect(code(() => commandAndEnv({ cmd: ['a\nb'], env: [] }))).toBe('ERR_EIF_INVALID_ARGUMENT');
    expect(code(() => commandAndEnv({ cmd: ['a'], env: [] }, { env: ['NOEQUALS'] }))).toBe(
      'ERR_EIF_INVALID_ARGUMENT',
    );
  });
});

describe('choosing the image in an OCI layout', () => {
  async function twoArchLayout(): Promise<string> {
    const amd = ociFiles({
      layers: [{ tar: await tarOf([{ name: 'arch', data: 'amd64' }]) }],
      config: { Cmd: ['/a'] },
    });
    const arm = ociFiles({
      layers: [{ tar: await tarOf([{ name: 'arch', data: 'arm64' }]) }],
      config: { Cmd: ['/b'] },
    });
    const files = new Map<string, Buffer>();
    const manifestOf = (f: Map<string, Buffer>) =>
      JSON.parse((f.get('index.json') as Buffer).toString()).manifests[0];
    for (const [k, v] of [...amd, ...arm]) if (k.startsWith('blobs/')) files.set(k, v);
    const inner = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { ...manifestOf(arm), annotations: {}, platform: { os: 'linux', architecture: 'arm64' } },
          { ...manifestOf(amd), annotations: {}, platform: { os: 'linux', architecture: 'amd64' } },
          // buildx's attestation manifest: never an image to run
          {
            ...manifestOf(arm),
            annotations: {},
            platform: { os: 'unknown', architecture: 'unknown' },
          },
        ],
      }),
    );
    const innerDigest = createHash('sha256').update(inner).digest('hex');
    files.set(`blobs/sha256/${innerDigest}`, inner);
    files.set('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
    files.set(
      'index.json',
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          manifests: [
            {
              mediaType: 'application/vnd.oci.image.index.v1+json',
              digest: `sha256:${innerDigest}`,
              size: inner.length,
              annotations: { 'org.opencontainers.image.ref.name': 'app:v1' },
            },
          ],
        }),
      ),
    );
    const dir = await fresh();
    await writeDir(dir, files);
    return dir;
  }

  it("follows a nested index to this machine's architecture, skipping attestation manifests", async () => {
    const dir = await twoArchLayout();
    const want = process.arch === 'arm64' ? 'arm64' : 'amd64';
    for (const ref of [undefined, 'app:v1', 'v1']) {
      const { bytes } = await ramdiskOf({ type: 'oci-layout', path: dir, ...(ref ? { ref } : {}) });
      const arch = readNewc(bytes).entries.find((e) => e.name === 'rootfs/arch');
      expect(arch?.data.toString(), String(ref)).toBe(want);
    }
    await expectCode(
      { type: 'oci-layout', path: dir, ref: 'other:v2' },
      'ERR_EIF_ROOTFS_INVALID',
      /other:v2/,
    );
  });

  it('a tampered manifest is refused (digest of every blob checked)', async () => {
    const dir = await twoArchLayout();
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    const innerPath = join(dir, 'blobs/sha256', index.manifests[0].digest.slice(7));
    const inner = JSON.parse(await readFile(innerPath, 'utf8'));
    inner.manifests.reverse();
    await writeFile(innerPath, JSON.stringify(inner));
    await expectCode({ type: 'oci-layout', path: dir }, 'ERR_EIF_ROOTFS_INVALID', /digest/);
  });
});

describe('names a ramdisk cannot hold', () => {
  it('a path the kernel would refuse (>= 4096 bytes) fails the ramdisk with ERR_EIF_ROOTFS_UNSUPPORTED', async () => {
    const long = `${'d'.repeat(200)}/`.repeat(21);
    const dir = await ociDir([[{ name: `${long}file`, data: 'x' }]]);
    const rootfs = await openRootfs({ type: 'oci-layout', path: dir });
    try {
      const s = customerRamdisk({ rootfs, cmd: ['/x'], env: [], mtime: 0 });
      await expect(collect(s)).rejects.toMatchObject({ code: 'ERR_EIF_ROOTFS_UNSUPPORTED' });
    } finally {
      await rootfs.close();
    }
  });

  it('a file name that is not UTF-8 in a directory source', async () => {
    const dir = await fresh();
    await import('node:fs/promises').then((fs) => fs.mkdir(dir));
    await writeFile(Buffer.concat([Buffer.from(`${dir}/bad-`), Buffer.from([0xff, 0xfe])]), 'x');
    await expectCode({ type: 'directory', path: dir }, 'ERR_EIF_ROOTFS_UNSUPPORTED', /UTF-8/);
  });
});

describe('docker save details', () => {
  it('a layer stored as a symlink to another image layer (how docker save writes shared layers)', async () => {
    const files = dockerSaveFiles(await spec(), 'classic');
    const manifest = JSON.parse((files.get('manifest.json') as Buffer).toString());
    const first = manifest[0].Layers[0] as string;
    manifest[0].Layers[0] = 'alias/layer.tar';
    files.set('manifest.json', Buffer.from(JSON.stringify(manifest)));
    const entries: TarSpec[] = [...files].map(([name, data]) => ({ name, data }));
    entries.push({ name: 'alias/', type: 'directory' });
    entries.push({ name: 'alias/layer.tar', type: 'symlink', linkname: `../${first}` });
    const d = await fresh();
    await writeFile(d, await tarOf(entries));
    const { bytes } = await ramdiskOf({ type: 'docker-archive', path: d });
    const oci = await fresh();
    await writeDir(oci, ociFiles(await spec()));
    expect(sha(bytes)).toBe(sha((await ramdiskOf({ type: 'oci-layout', path: oci })).bytes));
  });
});
