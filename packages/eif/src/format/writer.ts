// Streaming EIF writer: sections are streamed into a temporary file beside the output (placeholder
// headers patched once sizes are known), measured (PCR0/1/2) and CRC'd on the fly; the header CRC
// is folded in with crc32_combine, so there is no read-back pass. The temporary file is renamed
// over the output only when everything succeeded.
import { randomBytes } from 'node:crypto';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { EifError } from '../errors.js';
import {
  DEFAULT_CPUS,
  DEFAULT_MEM,
  EIF_CRC_OFFSET,
  EIF_FLAG_ARM64,
  EIF_HEADER_SIZE,
  EIF_MAGIC,
  EIF_VERSION,
  MAX_SECTIONS,
  SECTION_HEADER_SIZE,
  SECTION_KIND,
  type SectionKind,
  SectionType,
} from './constants.js';
import { crc32, crc32Combine } from './crc32.js';
import { encodeHeader, encodeSectionHeader } from './header.js';
import { type EifMetadata, encodeMetadata } from './metadata.js';
import { ImageMeasurer, type Measurements, measurementsOf } from './pcr.js';
import {
  type EifSigningKey,
  loadSigningKey,
  type SigningInput,
  signatureSection,
} from './signature.js';
import { discardSource, openSource, type SectionSource, sourceError } from './source.js';

export type EifArch = 'x86_64' | 'aarch64';

/** One section of a written or read EIF. */
export interface EifSectionInfo {
  /** Position in the section table. */
  index: number;
  type: number;
  kind: SectionKind;
  /** File offset of the 12-byte section header (what the header's table holds). */
  offset: number;
  /** File offset of the data (offset + 12). */
  dataOffset: number;
  /** Data size in bytes. */
  size: number;
}

/** Progress of a write: bytes of section data written so far. */
export interface WriteProgress {
  section: SectionKind;
  /** Index of the section in the table. */
  index: number;
  /** Bytes of this section written so far. */
  sectionBytes: number;
  /** Bytes of the whole file written so far. */
  totalBytes: number;
}

export interface WriteEifOptions {
  /** Path of the EIF to create (replaced atomically; untouched on failure). */
  output: string;
  /** The kernel (bzImage on x86_64, Image on aarch64). */
  kernel: SectionSource;
  /** The kernel command line exactly as stored (no trimming here; see `trimCmdline`). */
  cmdline: string | Uint8Array;
  /** The metadata object (or its bytes, written verbatim). */
  metadata: EifMetadata | Uint8Array;
  /** Ramdisks in order: the bootstrap ramdisk first (PCR1), then the application's (PCR2). */
  ramdisks: SectionSource[];
  /** Sign the image (adds the signature section; PCR8). */
  signing?: SigningInput | EifSigningKey;
  /** Sets header flag bit 0 for aarch64. Default x86_64. */
  arch?: EifArch;
  signal?: AbortSignal;
  onProgress?: (progress: WriteProgress) => void;
}

/** PCR values by index, lower-case hex. */
export interface Pcrs {
  0: string;
  1: string;
  2: string;
  8?: string;
}

export interface WriteEifResult {
  path: string;
  /** File size in bytes. */
  size: number;
  /** As `nitro-cli build-enclave` prints them under "Measurements". */
  measurements: Measurements;
  pcrs: Pcrs;
  sections: EifSectionInfo[];
  crc32: number;
  signed: boolean;
}

export function pcrsOf(m: Measurements): Pcrs {
  const p: Pcrs = { 0: m.PCR0, 1: m.PCR1, 2: m.PCR2 };
  if (m.PCR8) p[8] = m.PCR8;
  return p;
}

const FLUSH_BYTES = 1024 * 1024;
const FLUSH_CHUNKS = 256;

function writeError(path: string, err: unknown): EifError {
  if (err instanceof EifError) return err;
  const code = (err as { code?: string })?.code;
  const hint =
    code === 'ENOENT'
      ? `the directory ${dirname(path)} does not exist; create it first`
      : code === 'EACCES' || code === 'EPERM'
        ? `no permission to write in ${dirname(path)}`
        : code === 'ENOSPC'
          ? 'the disk is full'
          : ((err as Error)?.message ?? String(err));
  return new EifError('ERR_EIF_WRITE', `cannot write ${path}: ${hint}.`, { path, cause: err });
}

/** A temporary path in the output's directory (same file system, so the rename is atomic). */
export function temporaryPathFor(output: string): string {
  return join(
    dirname(output),
    `.${basename(output)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`,
  );
}

class Sink {
  pos = EIF_HEADER_SIZE;
  bodyCrc = 0;
  readonly sections: EifSectionInfo[] = [];
  constructor(
    readonly fh: FileHandle,
    readonly output: string,
    readonly signal: AbortSignal | undefined,
    readonly onProgress: ProgressFn | undefined,
  ) {}

  async section(
    type: SectionType,
    source: SectionSource,
    what: string,
    feed: (chunk: Uint8Array) => void,
  ): Promise<void> {
    const index = this.sections.length;
    const offset = this.pos;
    const dataOffset = offset + SECTION_HEADER_SIZE;
    let at = dataOffset;
    let size = 0;
    let crc = 0;
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    // One write in flight while the next chunks are hashed: disk I/O (thread pool) overlaps the
    // SHA-384 work on the main thread.
    let inFlight: Promise<void> | undefined;
    const flush = async (): Promise<void> => {
      if (inFlight) await inFlight;
      inFlight = undefined;
      if (pendingBytes === 0) return;
      const bufs = pending;
      const n = pendingBytes;
      const where = at;
      pending = [];
      pendingBytes = 0;
      at += n;
      const write = this.fh.writev(bufs, where).then(
        () => {
          this.onProgress?.({
            section: SECTION_KIND[type],
            index,
            sectionBytes: where + n - dataOffset,
            totalBytes: where + n,
          });
        },
        (err: unknown) => {
          throw writeError(this.output, err);
        },
      );
      // Never an unhandled rejection: the error is rethrown when awaited below.
      write.catch(() => {});
      inFlight = write;
    };
    try {
      for await (const raw of openSource(source, this.signal)) {
        if (this.signal?.aborted) throw this.signal.reason ?? new Error('aborted');
        const chunk = raw instanceof Uint8Array ? raw : Buffer.from(raw as unknown as string);
        if (chunk.length === 0) continue;
        crc = crc32(chunk, crc);
        feed(chunk);
        size += chunk.length;
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= FLUSH_BYTES || pending.length >= FLUSH_CHUNKS) await flush();
      }
      await flush();
      if (inFlight) await inFlight;
    } catch (err) {
      if (inFlight) await inFlight.catch(() => {});
      discardSource(source);
      if (err instanceof EifError && err.code === 'ERR_EIF_WRITE') throw err;
      throw sourceError(err, what, this.signal);
    }
    const header = encodeSectionHeader({ type, flags: 0, size: BigInt(size) });
    try {
      await this.fh.write(header, 0, SECTION_HEADER_SIZE, offset);
    } catch (err) {
      throw writeError(this.output, err);
    }
    const sectionCrc = crc32Combine(crc32(header), crc, size);
    this.bodyCrc = crc32Combine(this.bodyCrc, sectionCrc, SECTION_HEADER_SIZE + size);
    this.pos = dataOffset + size;
    this.sections.push({ index, type, kind: SECTION_KIND[type], offset, dataOffset, size });
  }
}
type ProgressFn = (p: WriteProgress) => void;

function invalid(message: string, field: string): EifError {
  return new EifError('ERR_EIF_INVALID_ARGUMENT', message, { field });
}

/**
 * Writes an EIF v4 exactly as aws-nitro-enclaves-image-format's EifBuilder lays it out: header,
 * kernel, cmdline, metadata, ramdisks, then the signature when signing. Returns the measurements.
 */
export async function writeEif(options: WriteEifOptions): Promise<WriteEifResult> {
  const { output, ramdisks, signal } = options;
  if (typeof output !== 'string' || output === '')
    throw invalid('output must be a file path.', 'output');
  if (!Array.isArray(ramdisks) || ramdisks.length === 0) {
    throw invalid('ramdisks: give at least one ramdisk (the bootstrap ramdisk).', 'ramdisks');
  }
  const numSections = 3 + ramdisks.length + (options.signing ? 1 : 0);
  if (numSections > MAX_SECTIONS) {
    throw invalid(
      `ramdisks: ${ramdisks.length} ramdisks make ${numSections} sections; an EIF holds at most ${MAX_SECTIONS}.`,
      'ramdisks',
    );
  }
  const cmdline =
    typeof options.cmdline === 'string'
      ? Buffer.from(options.cmdline, 'utf8')
      : Buffer.from(options.cmdline);
  if (cmdline.includes(0)) {
    throw new EifError(
      'ERR_EIF_BAD_CMDLINE',
      'cmdline contains a NUL byte; nitro-cli rejects it too.',
      {
        field: 'cmdline',
      },
    );
  }
  const arch = options.arch ?? 'x86_64';
  if (arch !== 'x86_64' && arch !== 'aarch64')
    throw invalid(`arch must be x86_64 or aarch64.`, 'arch');
  const signer = options.signing ? loadSigningKey(options.signing) : undefined;
  const metadata =
    options.metadata instanceof Uint8Array
      ? Buffer.from(options.metadata)
      : encodeMetadata(options.metadata);
  if (signal?.aborted) {
    throw new EifError('ERR_EIF_ABORTED', 'writing the EIF was aborted before it started.', {
      cause: signal.reason,
    });
  }

  const tmp = temporaryPathFor(output);
  let fh: FileHandle;
  try {
    fh = await open(tmp, 'wx', 0o644);
  } catch (err) {
    for (const r of ramdisks) discardSource(r);
    discardSource(options.kernel);
    throw writeError(output, err);
  }
  let done = false;
  try {
    const sink = new Sink(fh, output, signal, options.onProgress);
    const m = new ImageMeasurer();
    await sink.section(SectionType.Kernel, options.kernel, 'kernel', (c) => m.kernelOrCmdline(c));
    await sink.section(SectionType.Cmdline, cmdline, 'cmdline', (c) => m.kernelOrCmdline(c));
    await sink.section(SectionType.Metadata, metadata, 'metadata', () => {});
    for (let i = 0; i < ramdisks.length; i++) {
      m.beginRamdisk();
      await sink.section(SectionType.Ramdisk, ramdisks[i]!, `ramdisk[${i}]`, (c) => m.ramdisk(c));
      m.endRamdisk();
    }
    const pcrs = m.finish(signer?.certificateDer);
    if (signer) {
      const sig = signatureSection(pcrs.pcr0, signer);
      await sink.section(SectionType.Signature, sig, 'signature', () => {});
    }
    const header = encodeHeader({
      magic: EIF_MAGIC,
      version: EIF_VERSION,
      flags: arch === 'aarch64' ? EIF_FLAG_ARM64 : 0,
      defaultMem: DEFAULT_MEM,
      defaultCpus: DEFAULT_CPUS,
      reserved: 0,
      numSections: sink.sections.length,
      sectionOffsets: sink.sections.map((s) => BigInt(s.offset)),
      sectionSizes: sink.sections.map((s) => BigInt(s.size)),
      unused: 0,
      crc32: 0,
    });
    const crc = crc32Combine(
      crc32(header.subarray(0, EIF_CRC_OFFSET)),
      sink.bodyCrc,
      sink.pos - EIF_HEADER_SIZE,
    );
    header.writeUInt32BE(crc, EIF_CRC_OFFSET);
    try {
      await fh.write(header, 0, EIF_HEADER_SIZE, 0);
      await fh.sync();
      await fh.close();
    } catch (err) {
      throw writeError(output, err);
    }
    if (signal?.aborted) {
      throw new EifError('ERR_EIF_ABORTED', 'writing the EIF was aborted.', {
        cause: signal.reason,
      });
    }
    try {
      await rename(tmp, output);
    } catch (err) {
      throw writeError(output, err);
    }
    done = true;
    const measurements = measurementsOf(pcrs.pcr0, pcrs.pcr1, pcrs.pcr2, pcrs.pcr8);
    return {
      path: output,
      size: sink.pos,
      measurements,
      pcrs: pcrsOf(measurements),
      sections: sink.sections,
      crc32: crc,
      signed: signer !== undefined,
    };
  } finally {
    if (!done) {
      discardSource(options.kernel);
      for (const r of ramdisks) discardSource(r);
      await fh.close().catch(() => {});
      await rm(tmp, { force: true }).catch(() => {});
    }
  }
}
