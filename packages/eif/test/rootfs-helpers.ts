// Test-only builders for OCI layouts / docker save tarballs, and an independent newc reader.
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';

export interface TarSpec {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'fifo';
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  data?: string | Buffer;
  devmajor?: number;
  devminor?: number;
  mtime?: Date;
}

/** A tar archive of the given entries (tar-stream's writer, not the code under test). */
export async function tarOf(entries: TarSpec[]): Promise<Buffer> {
  const p = tarPack();
  const chunks: Buffer[] = [];
  p.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise<void>((resolve, reject) => {
    p.on('end', () => resolve());
    p.on('error', reject);
  });
  for (const e of entries) {
    const type = e.type ?? 'file';
    const data = e.data === undefined ? undefined : Buffer.from(e.data);
    await new Promise<void>((resolve, reject) => {
      p.entry(
        {
          name: e.name,
          type,
          mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
          uid: e.uid ?? 0,
          gid: e.gid ?? 0,
          mtime: e.mtime ?? new Date(1_700_000_000_000),
          ...(e.linkname === undefined ? {} : { linkname: e.linkname }),
          ...(e.devmajor === undefined ? {} : { devmajor: e.devmajor, devminor: e.devminor ?? 0 }),
          ...(type === 'file' ? { size: data?.length ?? 0 } : {}),
        },
        type === 'file' ? (data ?? Buffer.alloc(0)) : undefined,
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export interface ImageSpec {
  layers: { tar: Buffer; gzip?: boolean }[];
  config: Record<string, unknown>;
}

function configJson(spec: ImageSpec): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: spec.config,
      rootfs: { type: 'layers', diff_ids: spec.layers.map((l) => `sha256:${sha256(l.tar)}`) },
    }),
  );
}

/** Files of an OCI image layout for `spec` (path -> bytes). */
export function ociFiles(spec: ImageSpec, refName = 'example:latest'): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const blob = (b: Buffer): string => {
    const h = sha256(b);
    files.set(`blobs/sha256/${h}`, b);
    return `sha256:${h}`;
  };
  const config = configJson(spec);
  const layers = spec.layers.map((l) => {
    const bytes = l.gzip ? gzipSync(l.tar) : l.tar;
    return {
      mediaType: l.gzip
        ? 'application/vnd.oci.image.layer.v1.tar+gzip'
        : 'application/vnd.oci.image.layer.v1.tar',
      digest: blob(bytes),
      size: bytes.length,
    };
  });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: blob(config),
        size: config.length,
      },
      layers,
    }),
  );
  const md = blob(manifest);
  files.set('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
  files.set(
    'index.json',
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: md,
            size: manifest.length,
            annotations: { 'org.opencontainers.image.ref.name': refName },
          },
        ],
      }),
    ),
  );
  return files;
}

/** Files of a `docker save` tarball: classic (`<id>/layer.tar`) or Docker >= 25 (OCI inside). */
export function dockerSaveFiles(spec: ImageSpec, layout: 'classic' | 'oci'): Map<string, Buffer> {
  if (layout === 'oci') {
    const files = ociFiles(spec, 'example:latest');
    const index = JSON.parse((files.get('index.json') as Buffer).toString());
    const manifest = JSON.parse(
      (files.get(`blobs/sha256/${index.manifests[0].digest.slice(7)}`) as Buffer).toString(),
    );
    files.set(
      'manifest.json',
      Buffer.from(
        JSON.stringify([
          {
            Config: `blobs/sha256/${manifest.config.digest.slice(7)}`,
            RepoTags: ['example:latest'],
            Layers: manifest.layers.map(
              (l: { digest: string }) => `blobs/sha256/${l.digest.slice(7)}`,
            ),
          },
        ]),
      ),
    );
    return files;
  }
  const files = new Map<string, Buffer>();
  const config = configJson(spec);
  const configName = `${sha256(config)}.json`;
  files.set(configName, config);
  const layerNames = spec.layers.map((l, i) => {
    const bytes = l.gzip ? gzipSync(l.tar) : l.tar;
    const name = `${sha256(Buffer.from(String(i)))}/layer.tar`;
    files.set(name, bytes);
    return name;
  });
  files.set(
    'manifest.json',
    Buffer.from(
      JSON.stringify([{ Config: configName, RepoTags: ['example:latest'], Layers: layerNames }]),
    ),
  );
  return files;
}

export async function writeDir(dir: string, files: Map<string, Buffer>): Promise<void> {
  for (const [name, data] of files) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), data);
  }
}

export async function tarFiles(files: Map<string, Buffer>): Promise<Buffer> {
  return tarOf([...files].map(([name, data]) => ({ name, data })));
}

export interface NewcEntry {
  name: string;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  devMajor: number;
  devMinor: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Buffer;
}

/** Minimal independent newc reader (gunzips first when the bytes are gzip). */
export function readNewc(input: Buffer): { entries: NewcEntry[]; trailerEnd: number } {
  const buf = input[0] === 0x1f && input[1] === 0x8b ? gunzipSync(input) : input;
  const entries: NewcEntry[] = [];
  let pos = 0;
  const align = (n: number): number => (n + 3) & ~3;
  for (;;) {
    const magic = buf.subarray(pos, pos + 6).toString('latin1');
    if (magic !== '070701') throw new Error(`bad magic at ${pos}: ${magic}`);
    const f = (i: number): number =>
      Number.parseInt(buf.subarray(pos + 6 + i * 8, pos + 14 + i * 8).toString('latin1'), 16);
    const namesize = f(11);
    const size = f(6);
    const name = buf.subarray(pos + 110, pos + 110 + namesize - 1).toString('utf8');
    if (buf[pos + 110 + namesize - 1] !== 0) throw new Error(`name of ${name} not NUL-terminated`);
    const dataStart = align(pos + 110 + namesize);
    const e: NewcEntry = {
      name,
      ino: f(0),
      mode: f(1),
      uid: f(2),
      gid: f(3),
      nlink: f(4),
      mtime: f(5),
      devMajor: f(7),
      devMinor: f(8),
      rdevMajor: f(9),
      rdevMinor: f(10),
      data: buf.subarray(dataStart, dataStart + size),
    };
    pos = align(dataStart + size);
    if (name === 'TRAILER!!!') {
      const rest = buf.subarray(pos);
      if (rest.some((b) => b !== 0)) throw new Error('non-zero bytes after the trailer');
      return { entries, trailerEnd: buf.length };
    }
    entries.push(e);
  }
}

export async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function typeOf(mode: number): string {
  switch (mode & 0o170000) {
    case 0o040000:
      return 'dir';
    case 0o100000:
      return 'file';
    case 0o120000:
      return 'symlink';
    case 0o020000:
      return 'char';
    case 0o060000:
      return 'block';
    case 0o010000:
      return 'fifo';
    default:
      return `?${mode.toString(8)}`;
  }
}
