import { createHash, type Hash } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { lstat, mkdtemp, open, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import * as zlib from 'node:zlib';
import { type Headers, extract as tarExtract } from 'tar-stream';
import { EifError } from '../errors.js';
import {
  type ImageConfig,
  type LayerRef,
  type ResolvedImage,
  resolveDockerArchive,
  resolveOciLayout,
} from './image.js';
import { type BlobStore, missingBlob, openStore } from './store.js';
import { dirInode, type EntryType, FlatTree, type Inode, type WalkEntry } from './tree.js';

export type RootfsSource =
  /** OCI image layout directory (index.json), or a .tar of one. */
  | { type: 'oci-layout'; path: string; ref?: string }
  /** `docker save` tarball (classic layer.tar layout or OCI-in-docker-save), or its extracted directory. */
  | { type: 'docker-archive'; path: string; ref?: string }
  /** Plain directory. */
  | { type: 'directory'; path: string };

export interface OpenRootfsOptions {
  signal?: AbortSignal;
  /**
   * Where the private spill directory goes (layer contents are decompressed into one temporary
   * file there while the layers are indexed; removed by `close()`). Default `os.tmpdir()`.
   */
  tmpDir?: string;
  /**
   * Directory sources only: keep the files' uid/gid (default false: uid/gid 0, so the build does
   * not depend on who owns the checkout). Image sources always keep the image's uid/gid.
   */
  keepOwnership?: boolean;
}

/** A flattened root file system, indexed and ready to be streamed into a ramdisk. */
export interface Rootfs {
  /** From the image config; `{ env: [] }` for a directory. */
  config: ImageConfig;
  /** Image architecture from its config (`amd64`, `arm64`), when known. */
  architecture?: string;
  /** Entries of the flattened tree (without the ramdisk's own `rootfs/` prefix entries). */
  entryCount: number;
  /** Regular-file bytes (each hardlinked inode once): the unit of `onProgress`. */
  totalBytes: number;
  close(): Promise<void>;
}

/** The six directories nitro-cli always creates (0755, root) under `rootfs/`. */
export const MOUNT_DIRS = ['dev', 'run', 'sys', 'var', 'proc', 'tmp'] as const;

/** linuxkit's /etc/hosts for init images (what nitro-cli's enclaves get). */
export const LINUXKIT_HOSTS = `127.0.0.1       localhost
::1     localhost ip6-localhost ip6-loopback
fe00::0 ip6-localnet
ff00::0 ip6-mcastprefix
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
`;
/** linuxkit points init images' /etc/resolv.conf here. */
export const LINUXKIT_RESOLV_LINK = '/run/resolvconf/resolv.conf';

const READ_CHUNK = 1 << 20;

function aborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new EifError('ERR_EIF_ABORTED', 'building the root file system was cancelled', {
      cause: signal.reason,
    });
  }
}

export class IndexedRootfs implements Rootfs {
  entryCount = 0;
  totalBytes = 0;
  architecture?: string;
  private closed = false;

  constructor(
    readonly config: ImageConfig,
    readonly tree: FlatTree,
    private readonly spillPath: string | undefined,
    private readonly tmp: string | undefined,
  ) {}

  finish(): this {
    const s = this.tree.stats();
    this.entryCount = s.entryCount;
    this.totalBytes = s.totalBytes;
    return this;
  }

  entries(prefix: string): Iterable<WalkEntry> {
    if (this.closed) {
      throw new EifError('ERR_EIF_INVALID_ARGUMENT', 'the root file system was already closed');
    }
    return this.tree.walk(prefix);
  }

  /** Streams the content of a regular file, exactly `inode.size` bytes. */
  async *content(inode: Inode, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const c = inode.content;
    if (inode.size === 0) return;
    if (c === undefined) throw new Error(`internal: no content for a ${inode.size}-byte file`);
    if (c.kind === 'bytes') {
      yield c.data;
      return;
    }
    const path = c.kind === 'spill' ? (this.spillPath as string) : c.path;
    const start = c.kind === 'spill' ? c.offset : 0;
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw new EifError('ERR_EIF_READ', `${path}: cannot open a root file system file`, {
        path,
        cause: err,
      });
    }
    try {
      let done = 0;
      while (done < inode.size) {
        aborted(signal);
        const n = Math.min(READ_CHUNK, inode.size - done);
        const buf = Buffer.allocUnsafe(n);
        const { bytesRead } = await fh.read(buf, 0, n, start + done);
        if (bytesRead === 0) {
          throw new EifError(
            'ERR_EIF_READ',
            `${path}: the file is shorter than when it was indexed (${done} of ${inode.size} bytes); do not change the root file system during a build`,
            { path },
          );
        }
        done += bytesRead;
        yield bytesRead === n ? buf : buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.tmp !== undefined) await rm(this.tmp, { recursive: true, force: true });
  }
}

/** Applies nitro-cli's fixed layout: the six mount points exist as 0755 root directories. */
function ensureMountDirs(tree: FlatTree): void {
  for (const d of MOUNT_DIRS) {
    const node = tree.get(d);
    if (node === undefined) tree.put(d, dirInode());
    else if (node.inode.type === 'dir') node.inode = { ...node.inode, perm: 0o755, uid: 0, gid: 0 };
    // a non-directory stays: nitro-cli's mkdir of it fails too
  }
}

/**
 * What linuxkit (the tool nitro-cli runs) does to an image it unpacks as an init image: drops
 * docker's runtime files, replaces /etc/hosts and /etc/resolv.conf, and makes sure the usual
 * mount points and /etc/mtab exist.
 */
function linuxkitAdjust(tree: FlatTree): void {
  for (const p of [
    '.dockerenv',
    'Dockerfile',
    'dev/console',
    'dev/pts',
    'dev/shm',
    'etc/hostname',
  ]) {
    tree.remove(p);
  }
  const file = (data: Buffer, perm: number, uid = 0, gid = 0): Inode => ({
    type: 'file',
    perm,
    uid,
    gid,
    size: data.length,
    rdevMajor: 0,
    rdevMinor: 0,
    content: { kind: 'bytes', data },
  });
  const symlink = (target: string, perm: number, uid = 0, gid = 0): Inode => ({
    type: 'symlink',
    perm,
    uid,
    gid,
    size: Buffer.byteLength(target),
    linkname: target,
    rdevMajor: 0,
    rdevMinor: 0,
  });
  for (const d of ['dev', 'dev/pts', 'dev/shm', 'etc', 'proc', 'sys']) {
    if (tree.get(d) === undefined) tree.put(d, dirInode());
  }
  const hosts = tree.get('etc/hosts');
  const hostsData = Buffer.from(LINUXKIT_HOSTS);
  if (hosts === undefined) tree.put('etc/hosts', file(hostsData, 0o644));
  else hosts.inode = { ...file(hostsData, hosts.inode.perm, hosts.inode.uid, hosts.inode.gid) };
  const resolv = tree.get('etc/resolv.conf');
  if (resolv === undefined) tree.put('etc/resolv.conf', symlink(LINUXKIT_RESOLV_LINK, 0o644));
  else {
    resolv.inode = symlink(
      LINUXKIT_RESOLV_LINK,
      resolv.inode.perm,
      resolv.inode.uid,
      resolv.inode.gid,
    );
  }
  if (tree.get('etc/mtab') === undefined) tree.put('etc/mtab', symlink('/proc/mounts', 0o755));
}

/** Resolves on `event` or on 'close', whichever comes first; errors are reported elsewhere. */
function settle(stream: NodeJS.EventEmitter, event: string): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off(event, done);
      stream.off('close', done);
      resolve();
    };
    stream.on(event, done);
    stream.on('close', done);
  });
}

class Spill {
  private ws: WriteStream;
  private error: unknown;
  offset = 0;
  constructor(readonly path: string) {
    this.ws = createWriteStream(path, { flags: 'wx', mode: 0o600, highWaterMark: 1 << 20 });
    this.ws.on('error', (err) => {
      this.error ??= err;
    });
  }
  private check(): void {
    if (this.error !== undefined) {
      throw new EifError('ERR_EIF_WRITE', `${this.path}: writing the spill file failed`, {
        path: this.path,
        cause: this.error,
      });
    }
  }
  async write(chunk: Buffer): Promise<void> {
    this.check();
    this.offset += chunk.length;
    if (!this.ws.write(chunk)) {
      await settle(this.ws, 'drain');
      this.check();
    }
  }
  async end(): Promise<void> {
    this.check();
    this.ws.end();
    await settle(this.ws, 'finish');
    this.check();
  }
  async destroy(): Promise<void> {
    if (this.ws.closed) return;
    const closed = settle(this.ws, 'close');
    this.ws.destroy();
    await closed;
  }
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

async function peek(store: BlobStore, name: string): Promise<Buffer> {
  const s = store.stream(name);
  try {
    for await (const chunk of s) return chunk as Buffer;
    return Buffer.alloc(0);
  } finally {
    s.destroy();
  }
}

function startsWith(buf: Buffer, magic: number[]): boolean {
  return magic.every((b, i) => buf[i] === b);
}

type TarEntryHeader = Headers & { pax?: Record<string, string> | null };

function entryType(h: TarEntryHeader, source: string): EntryType | 'link' {
  switch (h.type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
      return 'dir';
    case 'symlink':
      return 'symlink';
    case 'link':
      return 'link';
    case 'character-device':
      return 'char';
    case 'block-device':
      return 'block';
    case 'fifo':
      return 'fifo';
    default:
      throw new EifError(
        'ERR_EIF_ROOTFS_UNSUPPORTED',
        `${source}: entry ${JSON.stringify(h.name)} has tar type ${String(h.type)}, which a cpio ramdisk cannot hold`,
        { field: h.name, source },
      );
  }
}

function idOf(h: TarEntryHeader, key: 'uid' | 'gid'): number {
  const pax = h.pax?.[key];
  if (pax !== undefined) return Number.parseInt(pax, 10);
  return h[key] ?? 0;
}

/** Reads one layer (gzip / zstd / plain tar, sniffed from its first bytes) into the tree. */
async function indexLayer(
  store: BlobStore,
  layer: LayerRef,
  index: number,
  tree: FlatTree,
  spill: Spill,
  signal: AbortSignal | undefined,
): Promise<void> {
  const source = `${store.path}: layer ${index} (${layer.name})`;
  if (!(await store.has(layer.name))) throw missingBlob(store.path, layer.name);
  const head = await peek(store, layer.name);
  let decompress: Transform | undefined;
  if (startsWith(head, GZIP_MAGIC)) {
    decompress = zlib.createGunzip({ chunkSize: 256 * 1024 });
  } else if (startsWith(head, ZSTD_MAGIC)) {
    const z = zlib as unknown as { createZstdDecompress?: () => Transform };
    if (typeof z.createZstdDecompress !== 'function') {
      throw new EifError(
        'ERR_EIF_ROOTFS_UNSUPPORTED',
        `${source}: zstd layers unsupported on Node ${process.versions.node} (node:zlib has zstd from Node 22.15); ` +
          'run on a newer Node or export the image with gzip layers',
        { path: store.path, field: layer.name },
      );
    }
    decompress = z.createZstdDecompress();
  }
  const [alg, expected] = layer.digest?.split(':') ?? [];
  const hash: Hash | undefined = alg === 'sha256' || alg === 'sha512' ? createHash(alg) : undefined;
  const raw: Readable = store.stream(layer.name);
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash?.update(chunk);
      cb(null, chunk);
    },
  });
  const extract = tarExtract();
  let failed: unknown;
  const fail = (err: unknown): void => {
    failed ??= err;
    extract.destroy(err as Error);
  };
  raw.on('error', fail);
  tap.on('error', fail);
  decompress?.on('error', fail);
  let src: Readable = raw.pipe(tap);
  if (decompress !== undefined) src = src.pipe(decompress);
  src.pipe(extract as unknown as NodeJS.WritableStream);

  try {
    for await (const entry of extract) {
      aborted(signal);
      const h = entry.header as TarEntryHeader;
      const name = h.name;
      if (name.includes('\uFFFD') || (h.linkname ?? '').includes('\uFFFD')) {
        throw new EifError(
          'ERR_EIF_ROOTFS_UNSUPPORTED',
          `${source}: entry ${JSON.stringify(name)} has a name or link target that is not UTF-8; rename it in the image`,
          { field: name, source },
        );
      }
      const slash = name.replace(/\/+$/, '').lastIndexOf('/');
      const base = name.replace(/\/+$/, '').slice(slash + 1);
      const dir = slash === -1 ? '' : name.slice(0, slash);
      if (base.startsWith('.wh.')) {
        if (base === '.wh..wh..opq') tree.opaque(dir, index, source);
        else tree.whiteout(dir, base.slice(4), source);
        entry.resume();
        continue;
      }
      const type = entryType(h, source);
      if (type === 'link') {
        tree.link(name, h.linkname ?? '', index, source);
        entry.resume();
        continue;
      }
      const inode: Inode = {
        type,
        perm: (h.mode ?? 0o644) & 0o7777,
        uid: idOf(h, 'uid'),
        gid: idOf(h, 'gid'),
        size: 0,
        rdevMajor: type === 'char' || type === 'block' ? (h.devmajor ?? 0) : 0,
        rdevMinor: type === 'char' || type === 'block' ? (h.devminor ?? 0) : 0,
      };
      if (type === 'symlink') {
        inode.linkname = h.linkname ?? '';
        inode.size = Buffer.byteLength(inode.linkname);
      }
      if (type === 'file' && (h.size ?? 0) > 0) {
        inode.size = h.size as number;
        inode.content = { kind: 'spill', offset: spill.offset };
      }
      // add before copying, so a refused path never reaches the spill file
      tree.add(name, inode, index, source);
      if (inode.content !== undefined) {
        let copied = 0;
        for await (const chunk of entry) {
          copied += (chunk as Buffer).length;
          await spill.write(chunk as Buffer);
        }
        if (copied !== inode.size) {
          throw new EifError('ERR_EIF_ROOTFS_INVALID', `${source}: entry ${name} is truncated`, {
            field: name,
          });
        }
      } else entry.resume();
    }
  } catch (err) {
    raw.destroy();
    if (err instanceof EifError) throw err;
    throw new EifError(
      'ERR_EIF_ROOTFS_INVALID',
      `${source}: cannot read the layer as a tar archive${decompress === undefined ? '' : ' (after decompressing)'}: ${(failed ?? err) instanceof Error ? ((failed ?? err) as Error).message : String(failed ?? err)}`,
      { path: store.path, field: layer.name, cause: failed ?? err },
    );
  }
  if (failed !== undefined) {
    throw new EifError('ERR_EIF_ROOTFS_INVALID', `${source}: reading the layer failed`, {
      path: store.path,
      field: layer.name,
      cause: failed,
    });
  }
  // drain what follows the tar's end-of-archive blocks so the digest covers the whole blob
  if (hash !== undefined) {
    if (!raw.readableEnded) {
      src.unpipe();
      src.resume();
      await settle(raw, 'end');
    }
    const actual = hash.digest('hex');
    if (actual !== expected) {
      throw new EifError(
        'ERR_EIF_ROOTFS_INVALID',
        `${source}: the layer does not match its digest ${layer.digest} (got ${alg}:${actual}); the archive is corrupt or was tampered with`,
        { path: store.path, field: layer.name },
      );
    }
  }
}

async function openImage(
  source: Extract<RootfsSource, { type: 'oci-layout' | 'docker-archive' }>,
  opts: OpenRootfsOptions,
): Promise<IndexedRootfs> {
  const store = await openStore(source.path);
  const image: ResolvedImage =
    source.type === 'oci-layout'
      ? await resolveOciLayout(store, source.ref)
      : await resolveDockerArchive(store, source.ref);
  const tmp = await mkdtemp(join(opts.tmpDir ?? tmpdir(), 'ee-eif-rootfs-'));
  const spill = new Spill(join(tmp, 'contents'));
  try {
    const tree = new FlatTree();
    for (let i = 0; i < image.layers.length; i++) {
      aborted(opts.signal);
      await indexLayer(store, image.layers[i] as LayerRef, i, tree, spill, opts.signal);
    }
    await spill.end();
    linuxkitAdjust(tree);
    ensureMountDirs(tree);
    const rootfs = new IndexedRootfs(image.config, tree, spill.path, tmp);
    if (image.architecture !== undefined) rootfs.architecture = image.architecture;
    return rootfs.finish();
  } catch (err) {
    await spill.destroy();
    await rm(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    await store.close();
  }
}

function devMajor(rdev: number): number {
  return ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
}
function devMinor(rdev: number): number {
  return (rdev & 0xff) | ((rdev >>> 12) & 0xfff00);
}

async function openDirectory(path: string, opts: OpenRootfsOptions): Promise<IndexedRootfs> {
  const source = path;
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch (err) {
    throw new EifError(
      'ERR_EIF_BLOB_MISSING',
      `${path}: the root file system directory does not exist`,
      {
        path,
        cause: err,
      },
    );
  }
  if (!st.isDirectory()) {
    throw new EifError('ERR_EIF_ROOTFS_INVALID', `${path}: not a directory`, { path });
  }
  const tree = new FlatTree();
  /** (dev, ino) of multiply-linked files -> the first path seen, to link the others to it. */
  const links = new Map<string, string>();
  const keep = opts.keepOwnership === true;
  const walk = async (abs: string, rel: string): Promise<void> => {
    aborted(opts.signal);
    let raw: Buffer[];
    try {
      raw = await readdir(abs, { encoding: 'buffer' });
    } catch (err) {
      throw new EifError('ERR_EIF_READ', `${abs}: cannot list the directory`, {
        path: abs,
        cause: err,
      });
    }
    for (const bytes of raw) {
      const name = bytes.toString('utf8');
      if (!Buffer.from(name, 'utf8').equals(bytes)) {
        throw new EifError(
          'ERR_EIF_ROOTFS_UNSUPPORTED',
          `${join(abs, name)}: the file name is not UTF-8; rename it`,
          { path: join(abs, name) },
        );
      }
      const a = join(abs, name);
      const r = rel === '' ? name : `${rel}/${name}`;
      const s = await lstat(a);
      const base = {
        perm: s.mode & 0o7777,
        uid: keep ? s.uid : 0,
        gid: keep ? s.gid : 0,
        size: 0,
        rdevMajor: 0,
        rdevMinor: 0,
      };
      if (s.isFile() && s.nlink > 1) {
        const key = `${s.dev}:${s.ino}`;
        const first = links.get(key);
        if (first !== undefined) {
          tree.link(r, first, 0, source);
          continue;
        }
        links.set(key, r);
      }
      if (s.isDirectory()) {
        tree.add(r, { ...base, type: 'dir' }, 0, source);
        await walk(a, r);
      } else if (s.isFile()) {
        const inode: Inode = {
          ...base,
          type: 'file',
          size: s.size,
          content: { kind: 'file', path: a },
        };
        tree.add(r, inode, 0, source);
      } else if (s.isSymbolicLink()) {
        const target = (await readlink(a, { encoding: 'buffer' })).toString('utf8');
        tree.add(
          r,
          { ...base, type: 'symlink', linkname: target, size: Buffer.byteLength(target) },
          0,
          source,
        );
      } else if (s.isCharacterDevice() || s.isBlockDevice()) {
        tree.add(
          r,
          {
            ...base,
            type: s.isCharacterDevice() ? 'char' : 'block',
            rdevMajor: devMajor(s.rdev),
            rdevMinor: devMinor(s.rdev),
          },
          0,
          source,
        );
      } else if (s.isFIFO()) {
        tree.add(r, { ...base, type: 'fifo' }, 0, source);
      } else {
        throw new EifError(
          'ERR_EIF_ROOTFS_UNSUPPORTED',
          `${a}: sockets cannot be put in a ramdisk; remove it from the root file system directory`,
          { path: a },
        );
      }
    }
  };
  await walk(path, '');
  ensureMountDirs(tree);
  return new IndexedRootfs({ env: [] }, tree, undefined, undefined).finish();
}

/**
 * Indexes a root file system: an OCI image layout (directory or tar), a `docker save` tarball,
 * or a directory. Layers are read once, as streams; regular-file contents of image layers are
 * decompressed into one private temporary file (removed by `close()`), so that the ramdisk can
 * later be written in sorted order with flat memory.
 */
export async function openRootfs(
  source: RootfsSource,
  opts: OpenRootfsOptions = {},
): Promise<Rootfs> {
  aborted(opts.signal);
  switch (source.type) {
    case 'directory':
      return openDirectory(source.path, opts);
    case 'oci-layout':
    case 'docker-archive':
      return openImage(source, opts);
    default:
      throw new EifError(
        'ERR_EIF_INVALID_ARGUMENT',
        `unknown root file system source type ${JSON.stringify((source as { type: unknown }).type)}: use oci-layout, docker-archive or directory`,
        { field: 'source.type' },
      );
  }
}
