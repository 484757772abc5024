import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmod,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEifError } from '../src/errors.js';
import {
  bootstrapRamdisk,
  customerRamdisk,
  LINUXKIT_MTIME,
  openRootfs,
} from '../src/ramdisk/index.js';
import { collect, readNewc, typeOf } from './rootfs-helpers.js';

let work: string;
let init: string;
let nsm: string;
const initBytes = randomBytes(5001);
const nsmBytes = randomBytes(2050);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'eif-ramdisk-test-'));
  init = join(work, 'init');
  nsm = join(work, 'nsm.ko');
  await writeFile(init, initBytes);
  await writeFile(nsm, nsmBytes);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('bootstrap ramdisk', () => {
  it('dev/ 0755, init 0755, nsm.ko 0755; gzip without name or time stamp', async () => {
    const gz = await collect(bootstrapRamdisk({ init, nsmKo: nsm, mtime: 42 }));
    // gzip header: magic, deflate, no FNAME flag, MTIME bytes 4..7 all zero
    expect([gz[0], gz[1], gz[2]]).toEqual([0x1f, 0x8b, 8]);
    expect(gz[3]).toBe(0);
    expect([...gz.subarray(4, 8)]).toEqual([0, 0, 0, 0]);
    const raw = gunzipSync(gz);
    expect(raw.length % 512).toBe(0);
    const { entries } = readNewc(gz);
    expect(entries.map((e) => [e.name, e.mode, e.uid, e.gid, e.mtime])).toEqual([
      ['dev', 0o40755, 0, 0, 42],
      ['init', 0o100755, 0, 0, 42],
      ['nsm.ko', 0o100755, 0, 0, 42],
    ]);
    expect(sha(entries[1]?.data as Buffer)).toBe(sha(initBytes));
    expect(sha(entries[2]?.data as Buffer)).toBe(sha(nsmBytes));
    expect(entries.map((e) => e.ino)).toEqual([1, 2, 3]);
  });

  it('without nsm.ko (kernels with NSM built in), and uncompressed on request', async () => {
    const raw = await collect(bootstrapRamdisk({ init, mtime: 0, compression: 'none' }));
    expect(raw.subarray(0, 6).toString()).toBe('070701');
    expect(readNewc(raw).entries.map((e) => e.name)).toEqual(['dev', 'init']);
  });

  it('nitroCliCompatible: linuxkit conventions (inodes from 721, dev 3:1, 2017-04-18 time stamp, no gzip)', async () => {
    const raw = await collect(
      bootstrapRamdisk({ init, nsmKo: nsm, mtime: 7, nitroCliCompatible: true }),
    );
    expect(raw.subarray(0, 6).toString()).toBe('070701');
    expect(raw.length % 512).toBe(0);
    const { entries } = readNewc(raw);
    expect(
      entries.map((e) => [e.name, e.ino, e.mode, e.nlink, e.mtime, e.devMajor, e.devMinor]),
    ).toEqual([
      ['dev', 721, 0o40755, 2, LINUXKIT_MTIME, 3, 1],
      ['init', 722, 0o100755, 1, LINUXKIT_MTIME, 3, 1],
      ['nsm.ko', 723, 0o100755, 1, LINUXKIT_MTIME, 3, 1],
    ]);
    // the trailer takes the next inode number and the device 3:1, like gocpio's Close()
    const trailerAt = raw.lastIndexOf(Buffer.from('070701'));
    const trailer = raw.subarray(trailerAt, trailerAt + 110).toString();
    expect(trailer.slice(6, 14)).toBe((724).toString(16).padStart(8, '0'));
    expect(trailer.slice(62, 78)).toBe('0000000300000001');
  });

  it('a missing blob is ERR_EIF_BLOB_MISSING', async () => {
    const s = bootstrapRamdisk({ init: join(work, 'nope'), mtime: 0 });
    await expect(collect(s)).rejects.toMatchObject({ code: 'ERR_EIF_BLOB_MISSING' });
  });
});

/** Builds the same tree in `dir`; `order` and `mtime` vary what must not matter. */
async function makeTree(dir: string, reverse: boolean, mtime: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  const steps: (() => Promise<void>)[] = [
    async () => {
      await mkdir(join(dir, 'bin'), { recursive: true });
      await writeFile(join(dir, 'bin/app'), 'app binary');
      await chmod(join(dir, 'bin/app'), 0o4755);
    },
    async () => {
      await mkdir(join(dir, 'etc'), { recursive: true });
      await writeFile(join(dir, 'etc/config.json'), '{"a":1}');
      await chmod(join(dir, 'etc/config.json'), 0o600);
    },
    async () => {
      await mkdir(join(dir, 'data/nested/deeper'), { recursive: true });
      await writeFile(join(dir, 'data/nested/deeper/big'), Buffer.alloc(3_000_000, 'x'));
      await writeFile(join(dir, 'data/ä-unicode'), 'ü');
    },
    async () => {
      await mkdir(join(dir, 'shared'), { recursive: true });
      await writeFile(join(dir, 'shared/one'), 'same inode');
      await link(join(dir, 'shared/one'), join(dir, 'shared/two'));
    },
    async () => {
      await symlink('bin/app', join(dir, 'entry'));
      await mkdir(join(dir, 'tmp'), { recursive: true });
      await chmod(join(dir, 'tmp'), 0o1777);
    },
  ];
  for (const s of reverse ? [...steps].reverse() : steps) await s();
  const t = new Date(mtime * 1000);
  for (const p of ['bin/app', 'etc/config.json', 'data', 'shared/one', 'bin', '.']) {
    await utimes(join(dir, p), t, t);
  }
}

describe('customer ramdisk from a directory', () => {
  it('is byte-identical for the same tree built in different folders, orders and times', async () => {
    const a = join(work, 'tree-a');
    const b = join(work, 'elsewhere', 'tree-b');
    await makeTree(a, false, 1_000_000);
    await makeTree(b, true, 1_700_000_000);
    const build = async (dir: string): Promise<Buffer> => {
      const rootfs = await openRootfs({ type: 'directory', path: dir });
      try {
        return await collect(
          customerRamdisk({ rootfs, cmd: ['/entry', '--flag'], env: ['A=b c'], mtime: 99 }),
        );
      } finally {
        await rootfs.close();
      }
    };
    const [ra, rb] = [await build(a), await build(b)];
    expect(ra.length).toBeGreaterThan(100);
    expect(sha(ra)).toBe(sha(rb));

    const { entries } = readNewc(ra);
    const get = (n: string) => entries.find((e) => e.name === n);
    expect(entries.map((e) => e.name).slice(0, 4)).toEqual(['cmd', 'env', 'rootfs', 'rootfs/bin']);
    expect(get('cmd')?.data.toString()).toBe('/entry\n--flag\n');
    expect(get('env')?.data.toString()).toBe('A=b c\n');
    expect(get('rootfs/bin/app')?.mode).toBe(0o104755);
    expect(get('rootfs/etc/config.json')?.mode).toBe(0o100600);
    expect(get('rootfs/data/ä-unicode')?.data.toString()).toBe('ü');
    expect(get('rootfs/data/nested/deeper/big')?.data.length).toBe(3_000_000);
    expect(typeOf(get('rootfs/entry')?.mode ?? 0)).toBe('symlink');
    expect(get('rootfs/entry')?.data.toString()).toBe('bin/app');
    // directory sources get uid/gid 0 (the owner of a checkout is not an input)
    expect(new Set(entries.map((e) => `${e.uid}:${e.gid}`))).toEqual(new Set(['0:0']));
    // hardlinked files in the directory stay hardlinked
    const one = get('rootfs/shared/one');
    const two = get('rootfs/shared/two');
    expect(one?.ino).toBe(two?.ino);
    expect([one?.nlink, one?.data.length, two?.data.toString()]).toEqual([2, 0, 'same inode']);
    // the six mount points, 0755 root even where the tree had 1777
    for (const d of ['dev', 'run', 'sys', 'var', 'proc', 'tmp']) {
      expect(get(`rootfs/${d}`)?.mode, d).toBe(0o40755);
    }
    // a directory comes before what it contains
    const names = entries.map((e) => e.name);
    for (const [i, n] of names.entries()) {
      const parent = n.split('/').slice(0, -1).join('/');
      if (parent !== '') expect(names.indexOf(parent), n).toBeLessThan(i);
    }
  });

  it('extracts with the cpio binary', async () => {
    const rootfs = await openRootfs({ type: 'directory', path: join(work, 'tree-a') });
    const gz = await collect(customerRamdisk({ rootfs, cmd: ['/entry'], env: [], mtime: 5 }));
    await rootfs.close();
    const out = join(work, 'extract');
    await mkdir(out);
    execFileSync('cpio', ['-idm', '--quiet'], { cwd: out, input: gunzipSync(gz) });
    expect(await readFile(join(out, 'rootfs/shared/two'), 'utf8')).toBe('same inode');
    expect((await lstat(join(out, 'rootfs/shared/one'))).ino).toBe(
      (await lstat(join(out, 'rootfs/shared/two'))).ino,
    );
    expect((await readFile(join(out, 'rootfs/data/nested/deeper/big'))).length).toBe(3_000_000);
  });

  it('reports progress up to totalBytes and stops on abort with ERR_EIF_ABORTED', async () => {
    const rootfs = await openRootfs({ type: 'directory', path: join(work, 'tree-a') });
    const seen: number[] = [];
    await collect(
      customerRamdisk({ rootfs, cmd: ['/x'], env: [], mtime: 0, onProgress: (n) => seen.push(n) }),
    );
    expect(seen.at(-1)).toBe(rootfs.totalBytes);
    const ac = new AbortController();
    const s = customerRamdisk({
      rootfs,
      cmd: ['/x'],
      env: [],
      mtime: 0,
      signal: ac.signal,
      onProgress: () => ac.abort(new Error('stop')),
    });
    let caught: unknown;
    try {
      await collect(s);
    } catch (err) {
      caught = err;
    }
    expect(isEifError(caught, 'ERR_EIF_ABORTED')).toBe(true);
    await rootfs.close();
  });

  it('rejects a bad mtime, a bad gzip level, and a missing directory with typed errors', async () => {
    const rootfs = await openRootfs({ type: 'directory', path: join(work, 'tree-a') });
    expect(() => customerRamdisk({ rootfs, cmd: ['/x'], env: [], mtime: -1 })).toThrow(
      expect.objectContaining({ code: 'ERR_EIF_INVALID_ARGUMENT' }),
    );
    expect(() => customerRamdisk({ rootfs, cmd: ['/x'], env: [], mtime: 0, level: 12 })).toThrow(
      expect.objectContaining({ code: 'ERR_EIF_INVALID_ARGUMENT' }),
    );
    await rootfs.close();
    await expect(
      openRootfs({ type: 'directory', path: join(work, 'missing') }),
    ).rejects.toMatchObject({
      code: 'ERR_EIF_BLOB_MISSING',
    });
  });
});
