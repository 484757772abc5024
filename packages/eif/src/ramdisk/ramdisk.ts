import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline, Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { EifError } from '../errors.js';
import {
  CANONICAL_FLAVOR,
  type CpioFlavor,
  dataPadding,
  encodeHeader,
  encodeTrailer,
  LINUXKIT_FLAVOR,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
} from './cpio.js';
import type { ImageConfig } from './image.js';
import { IndexedRootfs, type Rootfs } from './rootfs.js';
import type { EntryType, Inode } from './tree.js';

/** linuxkit's fixed time stamp for the files it adds (2017-04-18T16:30:00Z). */
export const LINUXKIT_MTIME = 1492533000;

export interface RamdiskCompression {
  /**
   * `gzip` (default): deterministic gzip (no name, time stamp 0) at `level`. `none`: the raw cpio
   * archive, as nitro-cli writes its ramdisks (linuxkit's `kernel+initrd-nogz`); the kernel accepts
   * both and an uncompressed ramdisk needs no memory to decompress at boot.
   */
  compression?: 'gzip' | 'none';
  /** gzip level 0-9; default 6 (zlib's default, what linuxkit's gzip'd initrds use). */
  level?: number;
}

export interface BootstrapRamdiskOptions extends RamdiskCompression {
  /** Path of the enclave init (aws-nitro-enclaves-sdk-bootstrap's static init). */
  init: string;
  /** Path of nsm.ko; omit for kernels with the NSM driver built in. */
  nsmKo?: string;
  /** Time stamp of every entry: SOURCE_DATE_EPOCH or 0. */
  mtime: number;
  /**
   * Write the bootstrap ramdisk exactly as nitro-cli does (linuxkit 1.5.2 with AWS's patches, see
   * the README): uncompressed, linuxkit's cpio conventions (inodes from 721, device 3:1) and
   * linuxkit's fixed time stamp; `mtime` and compression are then ignored. With the same kernel,
   * cmdline, init and nsm.ko this gives nitro-cli's PCR1.
   */
  nitroCliCompatible?: boolean;
  signal?: AbortSignal;
}

export interface CustomerRamdiskOptions extends RamdiskCompression {
  rootfs: Rootfs;
  /** Lines of the `cmd` file (see {@link commandAndEnv}). */
  cmd: string[];
  /** Lines of the `env` file (`KEY=value`). */
  env: string[];
  /** Time stamp of every entry: SOURCE_DATE_EPOCH or 0. */
  mtime: number;
  /** Called with the number of file-content bytes written so far (compare with `rootfs.totalBytes`). */
  onProgress?: (bytes: number) => void;
  signal?: AbortSignal;
}

const TYPE_BITS: Record<EntryType, number> = {
  file: S_IFREG,
  dir: S_IFDIR,
  symlink: S_IFLNK,
  char: S_IFCHR,
  block: S_IFBLK,
  fifo: S_IFIFO,
};

interface OutEntry {
  path: string;
  inode: Inode;
}

interface WriterOptions {
  flavor: CpioFlavor;
  mtime: number;
  signal?: AbortSignal;
  onProgress?: (bytes: number) => void;
  content: (inode: Inode, signal?: AbortSignal) => AsyncIterable<Buffer>;
}

const COALESCE = 256 * 1024;

function abortedError(signal: AbortSignal): EifError {
  return new EifError('ERR_EIF_ABORTED', 'writing the ramdisk was cancelled', {
    cause: signal.reason,
  });
}

/**
 * Streams a newc archive of `entries` (already in output order). Hardlinks (paths sharing one
 * inode) get one inode number and nlink = number of paths; the data goes with the last of them,
 * as GNU cpio writes it and the kernel's initramfs unpacker expects.
 */
async function* newcStream(
  entries: () => Iterable<OutEntry>,
  opts: WriterOptions,
): AsyncGenerator<Buffer> {
  const { flavor, mtime, signal } = opts;
  // pass 1: paths per inode, and which path is the last one (the one that carries the data)
  const paths = new Map<Inode, { count: number; last: string }>();
  for (const e of entries()) {
    if (e.inode.type !== 'file') continue;
    const p = paths.get(e.inode);
    if (p === undefined) paths.set(e.inode, { count: 1, last: e.path });
    else {
      p.count++;
      p.last = e.path;
    }
  }
  const inos = new Map<Inode, number>();
  let nextIno = flavor.firstIno;
  let length = 0;
  let written = 0;
  let pending: Buffer[] = [];
  let pendingLen = 0;
  const flush = (): Buffer => {
    const out = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingLen);
    pending = [];
    pendingLen = 0;
    return out;
  };
  const push = (b: Buffer): void => {
    if (b.length === 0) return;
    pending.push(b);
    pendingLen += b.length;
    length += b.length;
  };
  for (const e of entries()) {
    if (signal?.aborted) throw abortedError(signal);
    const { inode } = e;
    // only regular files are hardlinked in the archive; any other inode shared by several paths
    // (a tar hardlink to a symlink or device) is written as independent entries
    const group = paths.get(inode);
    let ino = group === undefined ? undefined : inos.get(inode);
    if (ino === undefined) {
      ino = nextIno++;
      if (group !== undefined) inos.set(inode, ino);
    }
    const nlink = inode.type === 'dir' ? 2 : (group?.count ?? 1);
    const carriesData = group === undefined || group.last === e.path;
    const size = carriesData ? inode.size : 0;
    push(
      encodeHeader({
        name: e.path,
        ino,
        mode: TYPE_BITS[inode.type] | (inode.perm & 0o7777),
        uid: inode.uid,
        gid: inode.gid,
        nlink,
        mtime,
        size,
        devMajor: flavor.devMajor,
        devMinor: flavor.devMinor,
        rdevMajor: inode.rdevMajor,
        rdevMinor: inode.rdevMinor,
      }),
    );
    if (size === 0) continue;
    if (inode.type === 'symlink') {
      push(Buffer.from(inode.linkname ?? '', 'utf8'));
    } else if (inode.type === 'file') {
      let got = 0;
      for await (const chunk of opts.content(inode, signal)) {
        got += chunk.length;
        if (chunk.length >= COALESCE) {
          if (pendingLen > 0) yield flush();
          length += chunk.length;
          yield chunk;
        } else {
          push(chunk);
          if (pendingLen >= COALESCE) yield flush();
        }
        written += chunk.length;
        opts.onProgress?.(written);
      }
      if (got !== inode.size) {
        throw new EifError(
          'ERR_EIF_READ',
          `${e.path}: read ${got} bytes, expected ${inode.size}; the file changed during the build`,
          { field: e.path },
        );
      }
    }
    push(dataPadding(size));
    if (pendingLen >= COALESCE) yield flush();
  }
  push(encodeTrailer(flavor, nextIno, length));
  yield flush();
}

function validateMtime(mtime: number): void {
  if (!Number.isInteger(mtime) || mtime < 0 || mtime > 0xffffffff) {
    throw new EifError(
      'ERR_EIF_INVALID_ARGUMENT',
      `mtime ${mtime} is not a 32-bit unsigned number of seconds; set SOURCE_DATE_EPOCH to a Unix time`,
      { field: 'mtime' },
    );
  }
}

function output(gen: AsyncGenerator<Buffer>, compression: RamdiskCompression): Readable {
  const raw = Readable.from(gen, { objectMode: false, highWaterMark: 1 << 20 });
  if (compression.compression === 'none') return raw;
  if (compression.compression !== undefined && compression.compression !== 'gzip') {
    throw new EifError(
      'ERR_EIF_INVALID_ARGUMENT',
      `compression ${JSON.stringify(compression.compression)} is not gzip or none`,
      { field: 'compression' },
    );
  }
  const level = compression.level ?? 6;
  if (!Number.isInteger(level) || level < 0 || level > 9) {
    throw new EifError('ERR_EIF_INVALID_ARGUMENT', `gzip level ${level} is not 0-9`, {
      field: 'level',
    });
  }
  // node:zlib's gzip header has no name and mtime 0: the output depends on the bytes only
  const gz = zlib.createGzip({ level, chunkSize: 256 * 1024 });
  return pipeline(raw, gz, () => {
    // errors reach the consumer through gz
  });
}

function fileInode(data: Buffer, perm: number): Inode {
  return {
    type: 'file',
    perm,
    uid: 0,
    gid: 0,
    size: data.length,
    rdevMajor: 0,
    rdevMinor: 0,
    content: { kind: 'bytes', data },
  };
}

function dirEntry(path: string): OutEntry {
  return {
    path,
    inode: { type: 'dir', perm: 0o755, uid: 0, gid: 0, size: 0, rdevMajor: 0, rdevMinor: 0 },
  };
}

async function* readPath(path: string, size: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
  let got = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20, signal })) {
    const b = chunk as Buffer;
    got += b.length;
    if (got > size) {
      throw new EifError('ERR_EIF_READ', `${path}: the file grew during the build`, { path });
    }
    yield b;
  }
}

async function blobSize(path: string, what: string): Promise<number> {
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new Error('not a regular file');
    return s.size;
  } catch (err) {
    throw new EifError(
      'ERR_EIF_BLOB_MISSING',
      `${what} ${path} is missing or not a file; point at nitro-cli's blobs folder (/usr/share/nitro_enclaves/blobs/<arch>) or pass the file`,
      { path, field: what, cause: err },
    );
  }
}

/**
 * The bootstrap ramdisk (nitro-cli's first ramdisk, measured in PCR1): `dev/` (0755), `init`
 * (0755) and `nsm.ko` (0755, when given), as a deterministic newc cpio, gzip'd unless
 * `compression: 'none'`.
 */
export function bootstrapRamdisk(opts: BootstrapRamdiskOptions): Readable {
  const compat = opts.nitroCliCompatible === true;
  const mtime = compat ? LINUXKIT_MTIME : opts.mtime;
  validateMtime(mtime);
  async function* gen(): AsyncGenerator<Buffer> {
    const files: OutEntry[] = [dirEntry('dev')];
    const blobs: [string, string][] = [['init', opts.init]];
    if (opts.nsmKo !== undefined) blobs.push(['nsm.ko', opts.nsmKo]);
    const paths = new Map<Inode, string>();
    for (const [name, path] of blobs) {
      const size = await blobSize(path, name);
      const inode: Inode = {
        type: 'file',
        perm: 0o755,
        uid: 0,
        gid: 0,
        size,
        rdevMajor: 0,
        rdevMinor: 0,
        content: { kind: 'file', path },
      };
      paths.set(inode, path);
      files.push({ path: name, inode });
    }
    yield* newcStream(() => files, {
      flavor: compat ? LINUXKIT_FLAVOR : CANONICAL_FLAVOR,
      mtime,
      ...(opts.signal === undefined ? {} : { signal: opts.signal }),
      content: (inode, signal) => readPath(paths.get(inode) as string, inode.size, signal),
    });
  }
  return output(gen(), compat ? { compression: 'none' } : opts);
}

function lines(values: string[], what: 'cmd' | 'env'): Buffer {
  for (const [i, v] of values.entries()) {
    if (typeof v !== 'string' || v.includes('\n') || v.includes('\0')) {
      throw new EifError(
        'ERR_EIF_INVALID_ARGUMENT',
        `${what}[${i}] contains a newline or NUL: the enclave init reads ${what} one entry per line`,
        { field: `${what}[${i}]` },
      );
    }
  }
  return Buffer.from(values.map((v) => `${v}\n`).join(''), 'utf8');
}

/**
 * The customer ramdisk (PCR2): `cmd` and `env` (0644, one entry per line), `rootfs/` (0755) with
 * the flattened image below it, including the empty `rootfs/{dev,run,sys,var,proc,tmp}` nitro-cli
 * adds. Entries in byte order, depth-first; every entry has time stamp `mtime`.
 */
export function customerRamdisk(opts: CustomerRamdiskOptions): Readable {
  validateMtime(opts.mtime);
  const rootfs = opts.rootfs;
  if (!(rootfs instanceof IndexedRootfs)) {
    throw new EifError(
      'ERR_EIF_INVALID_ARGUMENT',
      'customerRamdisk needs a root file system from openRootfs()',
      { field: 'rootfs' },
    );
  }
  const cmdFile = fileInode(lines(opts.cmd, 'cmd'), 0o644);
  const envFile = fileInode(lines(opts.env, 'env'), 0o644);
  // cmd and env come first; progress counts the root file system's bytes only (totalBytes)
  const own = cmdFile.size + envFile.size;
  const rootfsProgress =
    (report: (bytes: number) => void) =>
    (n: number): void => {
      if (n > own) report(n - own);
    };
  const entries = function* (): Generator<OutEntry> {
    yield { path: 'cmd', inode: cmdFile };
    yield { path: 'env', inode: envFile };
    yield dirEntry('rootfs');
    yield* rootfs.entries('rootfs');
  };
  const gen = newcStream(entries, {
    flavor: CANONICAL_FLAVOR,
    mtime: opts.mtime,
    ...(opts.signal === undefined ? {} : { signal: opts.signal }),
    ...(opts.onProgress === undefined ? {} : { onProgress: rootfsProgress(opts.onProgress) }),
    content: (inode, signal) => rootfs.content(inode, signal),
  });
  return output(gen, opts);
}

/**
 * nitro-cli's `cmd` and `env` from an image config (enclave_build/src/docker.rs): `cmd` is the
 * image's CMD when it has one, otherwise its ENTRYPOINT — never ENTRYPOINT + CMD, unlike
 * `docker run`; `env` is the image's ENV. WorkingDir and User are not applied (the init runs cmd
 * as root in `/`).
 *
 * `override.cmd` replaces the command; `override.env` entries (`KEY=value`) replace the image's
 * value of KEY or are appended, in order.
 */
export function commandAndEnv(
  config: ImageConfig,
  override: { cmd?: string[]; env?: string[] } = {},
): { cmd: string[]; env: string[] } {
  let cmd: string[] | undefined;
  if (override.cmd !== undefined && override.cmd.length > 0) cmd = [...override.cmd];
  else if (config.cmd !== undefined && config.cmd.length > 0) cmd = [...config.cmd];
  else if (config.entrypoint !== undefined && config.entrypoint.length > 0) {
    cmd = [...config.entrypoint];
  }
  if (cmd === undefined) {
    throw new EifError(
      'ERR_EIF_ROOTFS_INVALID',
      'the image config has neither CMD nor ENTRYPOINT, so the enclave would have nothing to run: pass a command (--cmd)',
      { field: 'config.Cmd' },
    );
  }
  const env = [...config.env];
  for (const [i, kv] of (override.env ?? []).entries()) {
    const eq = kv.indexOf('=');
    if (eq <= 0) {
      throw new EifError(
        'ERR_EIF_INVALID_ARGUMENT',
        `env override ${JSON.stringify(kv)} is not KEY=value`,
        { field: `env[${i}]` },
      );
    }
    const key = kv.slice(0, eq + 1);
    const at = env.findIndex((e) => e.startsWith(key));
    if (at === -1) env.push(kv);
    else env[at] = kv;
  }
  lines(cmd, 'cmd');
  lines(env, 'env');
  return { cmd, env };
}
