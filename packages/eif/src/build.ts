// buildEif: blobs (kernel, cmdline, init, nsm.ko) + a root file system -> EIF, the way
// `nitro-cli build-enclave` composes it (bootstrap ramdisk, customer ramdisk), with the
// measurements returned. The ramdisks come from ./ramdisk (deterministic newc cpio streams).
import { open, readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { version as packageVersion } from '../package.json';
import { trimCmdline } from './cmdline.js';
import { EifError } from './errors.js';
import { type EifMetadata, type JsonValue, rfc3339 } from './format/metadata.js';
import type { EifSigningKey, SigningInput } from './format/signature.js';
import { loadSigningKey } from './format/signature.js';
import { type EifArch, type WriteEifResult, writeEif } from './format/writer.js';
import {
  bootstrapRamdisk,
  commandAndEnv,
  customerRamdisk,
  openRootfs,
  type Rootfs,
  type RootfsSource,
} from './ramdisk/index.js';

/** The build tool name written into the metadata section. */
export const BUILD_TOOL = 'ee-eif';
export const BUILD_TOOL_VERSION: string = packageVersion;

/** Pino-compatible logger (only `info`/`debug` are used). */
export interface EifLogger {
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** Build progress: `bytes` of root file system content streamed so far, of `totalBytes`. */
export interface BuildProgress {
  phase: 'rootfs' | 'write';
  bytes: number;
  totalBytes: number;
}

export interface BlobOptions {
  /**
   * A nitro-cli blobs directory (`/usr/share/nitro_enclaves/blobs`): `bzImage` (x86_64) or
   * `Image` (aarch64) with its `.config`, `cmdline`, `init`, `nsm.ko`. Individual options below
   * override its files.
   */
  blobs?: string;
  /** Kernel file (bzImage / Image). */
  kernel?: string;
  /** Kernel config (`bzImage.config`): gives the metadata's OperatingSystem/KernelVersion. */
  kernelConfig?: string;
  /** The kernel command line text (trimmed like nitro-cli). Default: the blobs' `cmdline` file. */
  cmdline?: string;
  /** File holding the command line (instead of `cmdline`). */
  cmdlineFile?: string;
  /** The enclave init (static binary). */
  init?: string;
  /** nsm.ko; `false` for kernels with the NSM driver built in (no module in the bootstrap ramdisk). */
  nsmKo?: string | false;
  /** Image architecture; default: the rootfs image's, else from the kernel name, else x86_64. */
  arch?: EifArch;
}

/** Blob paths after resolution (every file checked to exist). */
export interface ResolvedBlobs {
  kernel: string;
  kernelConfig?: string;
  /** Trimmed command line text. */
  cmdline: string;
  init: string;
  nsmKo?: string;
  arch?: EifArch;
}

export interface BuildEifOptions extends BlobOptions {
  /** The application's root file system: OCI layout, `docker save` tarball or directory. */
  rootfs: RootfsSource;
  /** Overrides the image's command (CMD/ENTRYPOINT): one argument per entry. */
  cmd?: string[];
  /** `KEY=value` entries replacing/adding to the image's ENV. */
  env?: string[];
  /** Path of the EIF to write (atomically; nothing is written there on failure). */
  output: string;
  /**
   * Time stamp of ramdisk entries and the metadata's BuildTime (seconds). Default: the
   * SOURCE_DATE_EPOCH environment variable, else 0.
   */
  sourceDateEpoch?: number;
  /** Sign the image (PCR8). */
  signing?: SigningInput | EifSigningKey;
  /** Metadata ImageName. Default: the output's file name without `.eif`. */
  name?: string;
  /** Metadata ImageVersion. Default `1.0` (nitro-cli's default tag). */
  version?: string;
  /** Metadata CustomMetadata (nitro-cli's `--metadata` JSON). */
  customMetadata?: JsonValue;
  /** Ramdisk compression: `gzip` (default) or `none` (nitro-cli's ramdisks are uncompressed). */
  compression?: 'gzip' | 'none';
  /** Write the bootstrap ramdisk byte for byte as nitro-cli does (same PCR1 for the same blobs). */
  nitroCliCompatible?: boolean;
  /** Where the root file system indexer may spill layer contents. Default os.tmpdir(). */
  tmpDir?: string;
  signal?: AbortSignal;
  onProgress?: (progress: BuildProgress) => void;
  logger?: EifLogger;
}

export interface BuildEifResult extends WriteEifResult {
  /** The `cmd` file lines the enclave init runs. */
  cmd: string[];
  /** The `env` file lines. */
  env: string[];
  metadata: EifMetadata;
  arch: EifArch;
}

function missing(what: string, path: string, hint: string, cause?: unknown): EifError {
  return new EifError('ERR_EIF_BLOB_MISSING', `${what}: ${path} ${hint}`, {
    field: what,
    path,
    ...(cause === undefined ? {} : { cause }),
  });
}

async function checkFile(what: string, path: string): Promise<void> {
  let s: Awaited<ReturnType<typeof stat>>;
  try {
    s = await stat(path);
  } catch (err) {
    throw missing(what, path, 'does not exist.', err);
  }
  if (!s.isFile()) throw missing(what, path, 'is not a regular file.');
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

/**
 * Resolves and checks the blobs: a missing or unreadable one is an ERR_EIF_BLOB_MISSING naming it.
 */
export async function resolveBlobs(o: BlobOptions): Promise<ResolvedBlobs> {
  const dir = o.blobs;
  if (dir !== undefined) {
    const s = await stat(dir).catch(() => undefined);
    if (!s?.isDirectory()) {
      throw missing(
        'blobs',
        dir,
        "is not a directory (nitro-cli's blobs folder, e.g. /usr/share/nitro_enclaves/blobs).",
      );
    }
  }
  let arch = o.arch;
  let kernel = o.kernel;
  if (kernel === undefined) {
    if (dir === undefined) {
      throw new EifError(
        'ERR_EIF_BLOB_MISSING',
        'kernel: give a blobs directory (--blobs) or a kernel file (--kernel).',
        {
          field: 'kernel',
        },
      );
    }
    const names =
      arch === 'aarch64' ? ['Image'] : arch === 'x86_64' ? ['bzImage'] : ['bzImage', 'Image'];
    for (const n of names) {
      if (await exists(join(dir, n))) {
        kernel = join(dir, n);
        arch ??= n === 'Image' ? 'aarch64' : 'x86_64';
        break;
      }
    }
    if (kernel === undefined)
      throw missing(
        'kernel',
        join(dir, names[0]!),
        'does not exist (the blobs directory has no kernel).',
      );
  }
  await checkFile('kernel', kernel);
  let kernelConfig = o.kernelConfig;
  if (kernelConfig !== undefined) await checkFile('kernel config', kernelConfig);
  else if (await exists(`${kernel}.config`)) kernelConfig = `${kernel}.config`;

  let cmdlineText: string | Uint8Array;
  if (o.cmdline !== undefined) cmdlineText = o.cmdline;
  else {
    const file = o.cmdlineFile ?? (dir !== undefined ? join(dir, 'cmdline') : undefined);
    if (file === undefined) {
      throw new EifError(
        'ERR_EIF_BLOB_MISSING',
        'cmdline: give a blobs directory, a cmdline file or the cmdline text.',
        {
          field: 'cmdline',
        },
      );
    }
    await checkFile('cmdline', file);
    cmdlineText = await readFile(file);
  }
  const cmdline = trimCmdline(cmdlineText);

  const init = o.init ?? (dir !== undefined ? join(dir, 'init') : undefined);
  if (init === undefined) {
    throw new EifError(
      'ERR_EIF_BLOB_MISSING',
      'init: give a blobs directory (--blobs) or the init file (--init).',
      {
        field: 'init',
      },
    );
  }
  await checkFile('init', init);
  let nsmKo: string | undefined;
  if (o.nsmKo !== false) {
    nsmKo = o.nsmKo ?? (dir !== undefined ? join(dir, 'nsm.ko') : undefined);
    if (nsmKo !== undefined) {
      try {
        await checkFile('nsm.ko', nsmKo);
      } catch (err) {
        if (o.nsmKo === undefined && err instanceof EifError) {
          throw new EifError(
            'ERR_EIF_BLOB_MISSING',
            `${err.message} Pass nsmKo: false (--no-nsm-ko) for a kernel with the NSM driver built in.`,
            { field: 'nsm.ko', path: nsmKo, cause: err },
          );
        }
        throw err;
      }
    }
  }
  const out: ResolvedBlobs = { kernel, cmdline, init };
  if (kernelConfig !== undefined) out.kernelConfig = kernelConfig;
  if (nsmKo !== undefined) out.nsmKo = nsmKo;
  if (arch !== undefined) out.arch = arch;
  return out;
}

/**
 * OperatingSystem / KernelVersion as nitro-cli derives them from the kernel config's third line
 * (`# Linux/x86_64 4.14.256-209.484.amzn2 Kernel Configuration` -> Linux, 4.14.256), else from
 * the bzImage's version string, else `Unknown`.
 */
export async function kernelIdentity(
  kernel: string,
  kernelConfig?: string,
): Promise<{ os: string; version: string }> {
  const split = (line: string) => line.split(/[ /-]/);
  if (kernelConfig) {
    const line = (await readFile(kernelConfig, 'utf8')).split('\n')[2];
    if (line !== undefined) {
      const w = split(line);
      return { os: w[1] ?? 'Unknown', version: w[3] ?? 'Unknown' };
    }
  }
  const fh = await open(kernel, 'r');
  try {
    const head = Buffer.alloc(64 * 1024);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const b = head.subarray(0, bytesRead);
    if (b.length > 0x210 && b.toString('latin1', 0x202, 0x206) === 'HdrS') {
      const ptr = b.readUInt16LE(0x20e) + 0x200;
      if (ptr < b.length) {
        const end = b.indexOf(0, ptr);
        const s = b.toString('latin1', ptr, end < 0 ? Math.min(b.length, ptr + 256) : end);
        const v = split(s)[0];
        if (v && /^\d+\.\d+/.test(v)) return { os: 'Linux', version: v };
      }
    }
  } finally {
    await fh.close();
  }
  return { os: 'Unknown', version: 'Unknown' };
}

function epochFrom(o: { sourceDateEpoch?: number }): number {
  let v: number | undefined = o.sourceDateEpoch;
  if (v === undefined) {
    const env = process.env.SOURCE_DATE_EPOCH;
    if (env !== undefined && env !== '') {
      if (!/^\d+$/.test(env)) {
        throw new EifError(
          'ERR_EIF_INVALID_ARGUMENT',
          `SOURCE_DATE_EPOCH=${env} is not a number of seconds.`,
          {
            field: 'SOURCE_DATE_EPOCH',
          },
        );
      }
      v = Number(env);
    }
  }
  v ??= 0;
  if (!Number.isSafeInteger(v) || v < 0 || v > 0xffffffff) {
    throw new EifError(
      'ERR_EIF_INVALID_ARGUMENT',
      `sourceDateEpoch ${v} must be 0..4294967295 seconds.`,
      {
        field: 'sourceDateEpoch',
      },
    );
  }
  return v;
}

const IMAGE_ARCH: Record<string, EifArch> = { amd64: 'x86_64', arm64: 'aarch64' };

/**
 * Builds an EIF from blobs and a root file system, deterministically: the same inputs give the
 * same bytes (and PCRs). Returns the measurements (PCR0/1/2, PCR8 when signed).
 */
export async function buildEif(options: BuildEifOptions): Promise<BuildEifResult> {
  if (!options || typeof options.output !== 'string' || options.output === '') {
    throw new EifError('ERR_EIF_INVALID_ARGUMENT', 'output: give the path of the EIF to write.', {
      field: 'output',
    });
  }
  if (!options.rootfs || typeof options.rootfs !== 'object') {
    throw new EifError(
      'ERR_EIF_INVALID_ARGUMENT',
      'rootfs: give a root file system source ({ type, path }).',
      {
        field: 'rootfs',
      },
    );
  }
  const mtime = epochFrom(options);
  const blobs = await resolveBlobs(options);
  const signing = options.signing ? loadSigningKey(options.signing) : undefined;
  const identity = await kernelIdentity(blobs.kernel, blobs.kernelConfig);
  const { signal, logger } = options;
  const rootfs: Rootfs = await openRootfs(options.rootfs, {
    ...(signal ? { signal } : {}),
    ...(options.tmpDir ? { tmpDir: options.tmpDir } : {}),
  });
  try {
    const imageArch = rootfs.architecture ? IMAGE_ARCH[rootfs.architecture] : undefined;
    if (imageArch && options.arch && imageArch !== options.arch) {
      throw new EifError(
        'ERR_EIF_INVALID_ARGUMENT',
        `arch: the image is ${rootfs.architecture} but ${options.arch} was asked for; build the image for the enclave's architecture.`,
        { field: 'arch' },
      );
    }
    const arch: EifArch = options.arch ?? imageArch ?? blobs.arch ?? 'x86_64';
    const { cmd, env } = commandAndEnv(rootfs.config, {
      ...(options.cmd ? { cmd: options.cmd } : {}),
      ...(options.env ? { env: options.env } : {}),
    });
    const metadata: EifMetadata = {
      ImageName: options.name ?? basename(options.output).replace(/\.eif$/i, ''),
      ImageVersion: options.version ?? '1.0',
      BuildMetadata: {
        BuildTime: rfc3339(mtime),
        BuildTool: BUILD_TOOL,
        BuildToolVersion: BUILD_TOOL_VERSION,
        OperatingSystem: identity.os,
        KernelVersion: identity.version,
      },
      DockerInfo: null,
      CustomMetadata: options.customMetadata ?? null,
    };
    const compression = options.compression ?? 'gzip';
    const totalBytes = rootfs.totalBytes;
    const progress = options.onProgress;
    logger?.debug({ blobs, arch, cmd, entries: rootfs.entryCount, totalBytes }, 'building EIF');
    const result = await writeEif({
      output: options.output,
      kernel: { path: blobs.kernel },
      cmdline: blobs.cmdline,
      metadata,
      arch,
      ramdisks: [
        () =>
          bootstrapRamdisk({
            init: blobs.init,
            ...(blobs.nsmKo !== undefined ? { nsmKo: blobs.nsmKo } : {}),
            mtime,
            compression,
            ...(options.nitroCliCompatible ? { nitroCliCompatible: true } : {}),
            ...(signal ? { signal } : {}),
          }),
        () =>
          customerRamdisk({
            rootfs,
            cmd,
            env,
            mtime,
            compression,
            ...(signal ? { signal } : {}),
            ...(progress
              ? { onProgress: (bytes: number) => progress({ phase: 'rootfs', bytes, totalBytes }) }
              : {}),
          }),
      ],
      ...(signing ? { signing } : {}),
      ...(signal ? { signal } : {}),
    });
    logger?.info(
      { output: result.path, size: result.size, measurements: result.measurements },
      'EIF written',
    );
    return { ...result, cmd, env, metadata, arch };
  } finally {
    await rootfs.close();
  }
}
