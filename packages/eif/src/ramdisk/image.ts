import { EifError } from '../errors.js';
import type { BlobStore } from './store.js';

/** The parts of an image config (`config` object of the OCI / Docker image JSON) the build uses. */
export interface ImageConfig {
  cmd?: string[];
  entrypoint?: string[];
  env: string[];
  workingDir?: string;
  user?: string;
}

export interface LayerRef {
  /** Path of the layer inside the archive. */
  name: string;
  /** `sha256:<hex>` when the archive names it (OCI layout); checked while reading. */
  digest?: string;
  mediaType?: string;
}

export interface ResolvedImage {
  config: ImageConfig;
  layers: LayerRef[];
  /** Architecture from the image config (`amd64`, `arm64`), when present. */
  architecture?: string;
}

function invalid(store: BlobStore, field: string, what: string, cause?: unknown): EifError {
  return new EifError('ERR_EIF_ROOTFS_INVALID', `${store.path}: ${field} ${what}`, {
    path: store.path,
    field,
    ...(cause === undefined ? {} : { cause }),
  });
}

async function readJson(store: BlobStore, name: string): Promise<unknown> {
  const bytes = await store.read(name);
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw invalid(store, name, 'is not valid JSON', err);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringArray(store: BlobStore, field: string, v: unknown): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    throw invalid(store, field, 'must be an array of strings');
  }
  return v as string[];
}

/** Extracts {@link ImageConfig} from an image config JSON (OCI and Docker share the shape). */
export function parseImageConfig(store: BlobStore, name: string, json: unknown): ResolvedImage {
  if (!isObject(json)) throw invalid(store, name, 'is not an image config object');
  const c = json.config;
  const out: ImageConfig = { env: [] };
  if (isObject(c)) {
    const cmd = stringArray(store, `${name}: config.Cmd`, c.Cmd);
    if (cmd !== undefined) out.cmd = cmd;
    const ep = stringArray(store, `${name}: config.Entrypoint`, c.Entrypoint);
    if (ep !== undefined) out.entrypoint = ep;
    out.env = stringArray(store, `${name}: config.Env`, c.Env) ?? [];
    if (typeof c.WorkingDir === 'string' && c.WorkingDir !== '') out.workingDir = c.WorkingDir;
    if (typeof c.User === 'string' && c.User !== '') out.user = c.User;
  }
  return {
    config: out,
    layers: [],
    ...(typeof json.architecture === 'string' ? { architecture: json.architecture } : {}),
  };
}

function blobPath(store: BlobStore, field: string, digest: unknown): string {
  if (typeof digest !== 'string') throw invalid(store, field, 'has no digest');
  const m = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/.exec(digest);
  if (m === null) throw invalid(store, field, `has a malformed digest ${JSON.stringify(digest)}`);
  return `blobs/${m[1]}/${m[2]}`;
}

const INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);

function goArch(): string {
  return process.arch === 'x64' ? 'amd64' : process.arch;
}

interface Descriptor {
  mediaType?: string;
  digest?: string;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string };
}

function refNames(d: Descriptor): string[] {
  const a = d.annotations ?? {};
  const out: string[] = [];
  for (const k of ['org.opencontainers.image.ref.name', 'io.containerd.image.name']) {
    const v = a[k];
    if (typeof v === 'string') out.push(v);
  }
  return out;
}

function refMatches(d: Descriptor, ref: string): boolean {
  return refNames(d).some((n) => n === ref || n.endsWith(`:${ref}`) || n === `${ref}:latest`);
}

/**
 * Picks the image manifest of an OCI layout: by `ref` (the `org.opencontainers.image.ref.name`
 * or `io.containerd.image.name` annotation, full name or tag), else the only manifest, else the
 * one for this machine's architecture (nested indexes are followed; attestation manifests with
 * platform unknown/unknown are skipped).
 */
export async function resolveOciLayout(store: BlobStore, ref?: string): Promise<ResolvedImage> {
  if (!(await store.has('index.json'))) {
    throw invalid(store, 'index.json', 'is missing: this is not an OCI image layout');
  }
  let index = await readJson(store, 'index.json');
  let where = 'index.json';
  let refUsed = ref === undefined;
  for (let depth = 0; depth < 4; depth++) {
    if (!isObject(index) || !Array.isArray(index.manifests)) {
      throw invalid(store, where, 'has no manifests array');
    }
    let candidates = (index.manifests as Descriptor[]).filter(
      (d) => isObject(d) && (d as Descriptor).platform?.architecture !== 'unknown',
    );
    if (!refUsed && ref !== undefined) {
      const byRef = candidates.filter((d) => refMatches(d, ref));
      if (byRef.length > 0) {
        candidates = byRef;
        refUsed = true;
      }
    }
    if (candidates.length > 1) {
      const arch = candidates.filter(
        (d) => d.platform?.architecture === goArch() && (d.platform?.os ?? 'linux') === 'linux',
      );
      if (arch.length >= 1) candidates = arch;
    }
    if (candidates.length !== 1) {
      const names = (index.manifests as Descriptor[]).map(
        (d) => refNames(d)[0] ?? `${d.platform?.os ?? '?'}/${d.platform?.architecture ?? '?'}`,
      );
      throw invalid(
        store,
        where,
        candidates.length === 0
          ? `has no image manifest${ref === undefined ? '' : ` for ref ${JSON.stringify(ref)}`}`
          : `lists several images (${names.join(', ')}): choose one with ref`,
      );
    }
    const d = candidates[0] as Descriptor;
    const path = blobPath(store, `${where}: manifests[]`, d.digest);
    await verifySmallBlob(store, path, d.digest as string);
    const doc = await readJson(store, path);
    const mediaType = d.mediaType ?? (isObject(doc) ? doc.mediaType : undefined);
    if (
      (typeof mediaType === 'string' && INDEX_TYPES.has(mediaType)) ||
      (isObject(doc) && Array.isArray(doc.manifests))
    ) {
      index = doc;
      where = path;
      continue;
    }
    if (!refUsed) {
      throw invalid(store, 'index.json', `has no image named ${JSON.stringify(ref)}`);
    }
    return imageFromManifest(store, path, doc);
  }
  throw invalid(store, where, 'nests image indexes too deeply');
}

async function verifySmallBlob(store: BlobStore, path: string, digest: string): Promise<void> {
  const { createHash } = await import('node:crypto');
  const [alg, hex] = digest.split(':');
  if (alg !== 'sha256' && alg !== 'sha512') return;
  const actual = createHash(alg)
    .update(await store.read(path))
    .digest('hex');
  if (actual !== hex) {
    throw invalid(
      store,
      path,
      `does not match its digest ${digest} (sha: ${actual}): the archive is corrupt or was tampered with`,
    );
  }
}

async function imageFromManifest(
  store: BlobStore,
  path: string,
  doc: unknown,
): Promise<ResolvedImage> {
  if (!isObject(doc) || !isObject(doc.config) || !Array.isArray(doc.layers)) {
    throw invalid(store, path, 'is not an image manifest (config and layers)');
  }
  const configDigest = doc.config.digest as string;
  const configPath = blobPath(store, `${path}: config`, configDigest);
  await verifySmallBlob(store, configPath, configDigest);
  const image = parseImageConfig(store, configPath, await readJson(store, configPath));
  image.layers = (doc.layers as Descriptor[]).map((l, i) => ({
    name: blobPath(store, `${path}: layers[${i}]`, l.digest),
    digest: l.digest as string,
    ...(typeof l.mediaType === 'string' ? { mediaType: l.mediaType } : {}),
  }));
  return image;
}

/**
 * `docker save` tarballs: `manifest.json` lists `{Config, RepoTags, Layers}`; layers are either
 * `<id>/layer.tar` (classic) or `blobs/sha256/<hex>` (Docker >= 25, OCI inside). `ref` picks an
 * entry by repo tag (`name:tag`, or `name` meaning `name:latest`).
 */
export async function resolveDockerArchive(store: BlobStore, ref?: string): Promise<ResolvedImage> {
  if (!(await store.has('manifest.json'))) {
    throw invalid(store, 'manifest.json', 'is missing: this is not a `docker save` tarball');
  }
  const manifest = await readJson(store, 'manifest.json');
  if (!Array.isArray(manifest) || manifest.length === 0) {
    throw invalid(store, 'manifest.json', 'is not a non-empty array');
  }
  let entries = manifest.filter(isObject);
  if (ref !== undefined) {
    const want = ref.includes(':') ? ref : `${ref}:latest`;
    entries = entries.filter(
      (e) =>
        Array.isArray(e.RepoTags) && (e.RepoTags as unknown[]).some((t) => t === want || t === ref),
    );
    if (entries.length === 0) {
      throw invalid(store, 'manifest.json', `has no image tagged ${JSON.stringify(ref)}`);
    }
  }
  if (entries.length !== 1) {
    const tags = entries.flatMap((e) => (Array.isArray(e.RepoTags) ? e.RepoTags : ['<untagged>']));
    throw invalid(
      store,
      'manifest.json',
      `lists several images (${tags.join(', ')}): choose one with ref`,
    );
  }
  const e = entries[0] as Record<string, unknown>;
  if (typeof e.Config !== 'string' || !Array.isArray(e.Layers)) {
    throw invalid(store, 'manifest.json', 'entry has no Config / Layers');
  }
  const image = parseImageConfig(store, e.Config, await readJson(store, e.Config));
  image.layers = (e.Layers as unknown[]).map((l, i) => {
    if (typeof l !== 'string') throw invalid(store, `manifest.json: Layers[${i}]`, 'is not a path');
    const m = /^blobs\/(sha256|sha512)\/([0-9a-f]+)$/.exec(l);
    return { name: l, ...(m === null ? {} : { digest: `${m[1]}:${m[2]}` }) };
  });
  return image;
}
