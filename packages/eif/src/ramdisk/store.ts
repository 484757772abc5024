import { createReadStream } from 'node:fs';
import { type FileHandle, open, readFile, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { EifError } from '../errors.js';

/** Read access to the files of an image archive: a directory, or a tar of one (read in place). */
export interface BlobStore {
  readonly path: string;
  has(name: string): Promise<boolean>;
  size(name: string): Promise<number>;
  /** The whole (small) file: manifests and configs. */
  read(name: string): Promise<Buffer>;
  /** A stream of the file's bytes (layers). */
  stream(name: string): Readable;
  close(): Promise<void>;
}

const MAX_JSON = 64 * 1024 * 1024;

function normalize(name: string): string {
  return name
    .split('/')
    .filter((p) => p !== '' && p !== '.')
    .join('/');
}

export function missingBlob(store: string, name: string): EifError {
  return new EifError(
    'ERR_EIF_BLOB_MISSING',
    `${store}: ${JSON.stringify(name)} is missing from the image archive; it is referenced by the image's manifest. Export the image again (docker save / skopeo copy)`,
    { path: store, field: name },
  );
}

class DirStore implements BlobStore {
  constructor(readonly path: string) {}
  private resolve(name: string): string {
    const n = normalize(name);
    if (n.split('/').includes('..')) {
      throw new EifError(
        'ERR_EIF_ROOTFS_TRAVERSAL',
        `${this.path}: the manifest names ${JSON.stringify(name)}, outside the image directory`,
        { path: this.path, field: name },
      );
    }
    return join(this.path, n);
  }
  async has(name: string): Promise<boolean> {
    try {
      return (await stat(this.resolve(name))).isFile();
    } catch {
      return false;
    }
  }
  async size(name: string): Promise<number> {
    try {
      return (await stat(this.resolve(name))).size;
    } catch (err) {
      throw Object.assign(missingBlob(this.path, name), { cause: err });
    }
  }
  async read(name: string): Promise<Buffer> {
    if ((await this.size(name)) > MAX_JSON) {
      throw new EifError('ERR_EIF_ROOTFS_INVALID', `${this.path}: ${name} is too large for JSON`, {
        path: this.path,
        field: name,
      });
    }
    return readFile(this.resolve(name));
  }
  stream(name: string): Readable {
    return createReadStream(this.resolve(name), { highWaterMark: 1 << 20 });
  }
  async close(): Promise<void> {}
}

interface TarMember {
  offset: number;
  size: number;
}

function parseOctal(buf: Buffer, start: number, len: number): number {
  const field = buf.subarray(start, start + len);
  if ((field[0] ?? 0) & 0x80) {
    // GNU base-256
    let v = 0;
    for (let i = 1; i < field.length; i++) v = v * 256 + (field[i] as number);
    return v;
  }
  const s = field.toString('latin1').replace(/\0.*$/s, '').trim();
  return s === '' ? 0 : Number.parseInt(s, 8);
}

function cstr(buf: Buffer, start: number, len: number): string {
  const field = buf.subarray(start, start + len);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? field.length : end).toString('utf8');
}

function paxRecords(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < data.length) {
    const space = data.indexOf(0x20, i);
    if (space === -1) break;
    const len = Number.parseInt(data.subarray(i, space).toString('latin1'), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const rec = data.subarray(space + 1, i + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    i += len;
  }
  return out;
}

/**
 * A tar archive read in place: its member table is built by reading only the 512-byte headers
 * (seeking over contents), then each member is streamed by offset.
 */
class TarStore implements BlobStore {
  private constructor(
    readonly path: string,
    private readonly members: Map<string, TarMember>,
  ) {}

  static async open(path: string): Promise<TarStore> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw new EifError('ERR_EIF_BLOB_MISSING', `${path}: cannot open the image archive`, {
        path,
        cause: err,
      });
    }
    try {
      const { size: fileSize } = await fh.stat();
      const members = new Map<string, TarMember>();
      const header = Buffer.alloc(512);
      let pos = 0;
      let longName: string | undefined;
      let longLink: string | undefined;
      const links = new Map<string, string>();
      let pax: Map<string, string> | undefined;
      while (pos + 512 <= fileSize) {
        await fh.read(header, 0, 512, pos);
        if (header.every((b) => b === 0)) break;
        if (header.subarray(257, 262).toString('latin1') !== 'ustar') {
          throw new EifError(
            'ERR_EIF_ROOTFS_INVALID',
            `${path}: not a tar archive (no ustar header at offset ${pos}); pass an OCI layout / docker save tarball or directory`,
            { path, field: `offset ${pos}` },
          );
        }
        let size = parseOctal(header, 124, 12);
        const type = String.fromCharCode(header[156] as number);
        const dataStart = pos + 512;
        const readData = async (): Promise<Buffer> => {
          if (size > 1 << 20)
            throw new EifError(
              'ERR_EIF_ROOTFS_INVALID',
              `${path}: oversized tar extension header`,
              { path },
            );
          const b = Buffer.alloc(size);
          await fh.read(b, 0, size, dataStart);
          return b;
        };
        if (type === 'x') {
          pax = paxRecords(await readData());
        } else if (type === 'L') {
          longName = cstr(await readData(), 0, size);
        } else if (type === 'K') {
          longLink = cstr(await readData(), 0, size);
        } else if (type === 'g') {
          // global pax header: nothing this lookup needs
        } else {
          let name = cstr(header, 0, 100);
          const prefix = cstr(header, 345, 155);
          if (prefix !== '') name = `${prefix}/${name}`;
          if (longName !== undefined) name = longName;
          const paxPath = pax?.get('path');
          if (paxPath !== undefined) name = paxPath;
          const paxSize = pax?.get('size');
          if (paxSize !== undefined) size = Number.parseInt(paxSize, 10);
          if (type === '0' || type === '\0' || type === '7') {
            members.set(normalize(name), { offset: dataStart, size });
          } else if (type === '1' || type === '2') {
            // docker save writes a layer shared by two images once, the other as a link to it
            let target = pax?.get('linkpath') ?? longLink ?? cstr(header, 157, 100);
            if (type === '2' && !target.startsWith('/')) {
              target = posix.join(posix.dirname(normalize(name)), target);
            }
            links.set(normalize(name), normalize(target));
          }
          longLink = undefined;
          longName = undefined;
          pax = undefined;
        }
        pos = dataStart + Math.ceil(size / 512) * 512;
      }
      for (const [name, target] of links) {
        let t: string | undefined = target;
        for (let hops = 0; t !== undefined && hops < 8 && !members.has(t); hops++) t = links.get(t);
        const m = t === undefined ? undefined : members.get(t);
        if (m !== undefined && !members.has(name)) members.set(name, m);
      }
      return new TarStore(path, members);
    } catch (err) {
      if (err instanceof EifError) throw err;
      throw new EifError('ERR_EIF_READ', `${path}: reading the image archive failed`, {
        path,
        cause: err,
      });
    } finally {
      await fh.close();
    }
  }

  private member(name: string): TarMember {
    const m = this.members.get(normalize(name));
    if (m === undefined) throw missingBlob(this.path, name);
    return m;
  }
  async has(name: string): Promise<boolean> {
    return this.members.has(normalize(name));
  }
  async size(name: string): Promise<number> {
    return this.member(name).size;
  }
  async read(name: string): Promise<Buffer> {
    const m = this.member(name);
    if (m.size > MAX_JSON) {
      throw new EifError('ERR_EIF_ROOTFS_INVALID', `${this.path}: ${name} is too large for JSON`, {
        path: this.path,
        field: name,
      });
    }
    const fh = await open(this.path, 'r');
    try {
      const b = Buffer.alloc(m.size);
      await fh.read(b, 0, m.size, m.offset);
      return b;
    } finally {
      await fh.close();
    }
  }
  stream(name: string): Readable {
    const m = this.member(name);
    if (m.size === 0) return Readable.from([]);
    return createReadStream(this.path, {
      start: m.offset,
      end: m.offset + m.size - 1,
      highWaterMark: 1 << 20,
    });
  }
  async close(): Promise<void> {}
}

/** Opens a directory or a tar file as a {@link BlobStore}. */
export async function openStore(path: string): Promise<BlobStore> {
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(path);
  } catch (err) {
    throw new EifError(
      'ERR_EIF_BLOB_MISSING',
      `${path}: the root file system source does not exist`,
      {
        path,
        cause: err,
      },
    );
  }
  if (st.isDirectory()) return new DirStore(path);
  return TarStore.open(path);
}
