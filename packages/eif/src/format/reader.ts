// EIF reader and validator: one sequential pass that checks the header and section table against
// the section headers actually in the file, the layout nitro-cli writes, the CRC32, and measures
// PCR0/1/2 (and PCR8 from the signature section) without holding large sections in memory.
import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, open } from 'node:fs/promises';
import { EifError } from '../errors.js';
import {
  EIF_CRC_OFFSET,
  EIF_FLAG_ARM64,
  EIF_HEADER_SIZE,
  EIF_READABLE_VERSIONS,
  isSectionType,
  MAX_SECTIONS,
  MAX_SMALL_SECTION,
  SECTION_HEADER_SIZE,
  SECTION_KIND,
  SectionType,
} from './constants.js';
import { crc32 } from './crc32.js';
import { decodeHeader, decodeSectionHeader, isMagic } from './header.js';
import { decodeMetadata, type EifMetadata } from './metadata.js';
import { ImageMeasurer, type Measurements, measurementsOf } from './pcr.js';
import { type ParsedSignature, parseSignatureSection } from './signature.js';
import { type EifArch, type EifSectionInfo, type Pcrs, pcrsOf } from './writer.js';

export interface ReadEifOptions {
  /** Throw ERR_EIF_BAD_CRC when the stored CRC32 does not match. Default true. */
  verifyCrc?: boolean;
  /** Also compute a SHA-384 of each section's data (for comparing images). Default false. */
  sectionDigests?: boolean;
  signal?: AbortSignal;
}

/** A read section; `sha384` (hex of the data) when `sectionDigests` was asked. */
export interface EifReadSection extends EifSectionInfo {
  flags: number;
  sha384?: string;
}

/** Everything the reader learnt about an EIF. */
export interface EifImage {
  path: string;
  size: number;
  version: number;
  flags: number;
  arch: EifArch;
  defaultMem: bigint;
  defaultCpus: bigint;
  sections: EifReadSection[];
  crc: { stored: number; computed: number; ok: boolean };
  /** The stored command line (UTF-8). */
  cmdline: string;
  /** The metadata section (absent in v2/v3 images). */
  metadata?: EifMetadata;
  /** The raw metadata bytes. */
  metadataBytes?: Buffer;
  /** The decoded signature section of a signed image (check it with `checkSignature`). */
  signature?: ParsedSignature;
  measurements: Measurements;
  pcrs: Pcrs;
}

const CHUNK = 1024 * 1024;

function fail(
  code: ConstructorParameters<typeof EifError>[0],
  path: string,
  message: string,
  field?: string,
): EifError {
  return new EifError(code, `${path}: ${message}`, field ? { path, field } : { path });
}

async function readExact(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) throw new Error(`unexpected end of file at ${pos + off}`);
    off += bytesRead;
  }
}

/** Reads, validates and measures an EIF. Throws an EifError for anything nitro-cli would not load. */
export async function readEif(path: string, options: ReadEifOptions = {}): Promise<EifImage> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new EifError(
      'ERR_EIF_READ',
      `${path}: ${code === 'ENOENT' ? 'no such file' : `cannot open: ${(err as Error).message}`}.`,
      { path, cause: err },
    );
  }
  try {
    return await readOpen(fh, path, options);
  } catch (err) {
    if (err instanceof EifError) throw err;
    throw new EifError('ERR_EIF_READ', `${path}: reading failed: ${(err as Error).message}`, {
      path,
      cause: err,
    });
  } finally {
    await fh.close().catch(() => {});
  }
}

async function readOpen(fh: FileHandle, path: string, options: ReadEifOptions): Promise<EifImage> {
  const { signal } = options;
  const fileSize = (await fh.stat()).size;
  const headBuf = Buffer.alloc(Math.min(EIF_HEADER_SIZE, fileSize));
  if (headBuf.length > 0) await readExact(fh, headBuf, 0);
  if (headBuf.length < 4 || !isMagic(headBuf)) {
    throw fail(
      'ERR_EIF_BAD_MAGIC',
      path,
      'not an EIF (the file does not start with ".eif").',
      'magic',
    );
  }
  if (fileSize < EIF_HEADER_SIZE) {
    throw fail(
      'ERR_EIF_TRUNCATED',
      path,
      `truncated: ${fileSize} bytes, shorter than the ${EIF_HEADER_SIZE}-byte header.`,
      'header',
    );
  }
  const h = decodeHeader(headBuf);
  if (!EIF_READABLE_VERSIONS.includes(h.version)) {
    throw fail(
      'ERR_EIF_UNSUPPORTED_VERSION',
      path,
      `EIF version ${h.version} is not supported (this reader handles ${EIF_READABLE_VERSIONS.join(', ')}).`,
      'version',
    );
  }
  if (h.numSections === 0 || h.numSections > MAX_SECTIONS) {
    throw fail(
      'ERR_EIF_BAD_SECTION_TABLE',
      path,
      `num_sections is ${h.numSections}; it must be 1..${MAX_SECTIONS}.`,
      'num_sections',
    );
  }
  for (let i = h.numSections; i < MAX_SECTIONS; i++) {
    if (h.sectionOffsets[i] !== 0n || h.sectionSizes[i] !== 0n) {
      throw fail(
        'ERR_EIF_BAD_SECTION_TABLE',
        path,
        `section table entry ${i} is set but num_sections is ${h.numSections} (section count mismatch).`,
        `section_offsets[${i}]`,
      );
    }
  }

  let crc = crc32(headBuf.subarray(0, EIF_CRC_OFFSET));
  const measurer = new ImageMeasurer();
  const sections: EifReadSection[] = [];
  const chunk = Buffer.alloc(CHUNK);
  const shBuf = Buffer.alloc(SECTION_HEADER_SIZE);
  let pos = EIF_HEADER_SIZE;
  let cmdline: Buffer | undefined;
  let metadataBytes: Buffer | undefined;
  let signatureBytes: Buffer | undefined;
  let ramdisks = 0;

  for (let i = 0; i < h.numSections; i++) {
    if (signal?.aborted) {
      throw new EifError('ERR_EIF_ABORTED', `${path}: reading was aborted.`, {
        path,
        cause: signal.reason,
      });
    }
    if (pos + SECTION_HEADER_SIZE > fileSize) {
      const code = pos === fileSize ? 'ERR_EIF_BAD_SECTION_TABLE' : 'ERR_EIF_TRUNCATED';
      throw fail(
        code,
        path,
        pos === fileSize
          ? `the header lists ${h.numSections} sections but the file ends after ${i} (section count mismatch).`
          : `truncated inside the header of section ${i} (offset ${pos}).`,
        `section[${i}]`,
      );
    }
    const tableOffset = h.sectionOffsets[i]!;
    if (tableOffset !== BigInt(pos)) {
      throw fail(
        'ERR_EIF_BAD_SECTION_TABLE',
        path,
        `section_offsets[${i}] is ${tableOffset} but section ${i}'s header is at ${pos}.`,
        `section_offsets[${i}]`,
      );
    }
    await readExact(fh, shBuf, pos);
    const sh = decodeSectionHeader(shBuf);
    if (!isSectionType(sh.type)) {
      throw fail(
        'ERR_EIF_UNKNOWN_SECTION',
        path,
        `section ${i} has type ${sh.type}, which is not a known EIF section type (1..5).`,
        `section[${i}].type`,
      );
    }
    const kind = SECTION_KIND[sh.type];
    if (h.sectionSizes[i] !== sh.size) {
      throw fail(
        'ERR_EIF_BAD_SECTION_TABLE',
        path,
        `section_sizes[${i}] is ${h.sectionSizes[i]} but section ${i} (${kind}) says ${sh.size}.`,
        `section_sizes[${i}]`,
      );
    }
    const dataOffset = pos + SECTION_HEADER_SIZE;
    if (sh.size > BigInt(fileSize - dataOffset)) {
      throw fail(
        'ERR_EIF_TRUNCATED',
        path,
        `section ${i} (${kind}) claims ${sh.size} bytes but only ${fileSize - dataOffset} remain in the file.`,
        `section[${i}].size`,
      );
    }
    const size = Number(sh.size);
    // Layout: kernel, cmdline, metadata (v4), ramdisk+, signature?
    const expected = layoutError(
      h.version,
      i,
      sh.type,
      ramdisks,
      signatureBytes !== undefined,
      metadataBytes !== undefined,
    );
    if (expected)
      throw fail(
        'ERR_EIF_BAD_LAYOUT',
        path,
        `section ${i} is a ${kind} section: ${expected}`,
        `section[${i}]`,
      );
    const small =
      sh.type === SectionType.Cmdline ||
      sh.type === SectionType.Metadata ||
      sh.type === SectionType.Signature;
    if (small && size > MAX_SMALL_SECTION) {
      throw fail(
        'ERR_EIF_BAD_SECTION_TABLE',
        path,
        `the ${kind} section is ${size} bytes; more than ${MAX_SMALL_SECTION} is not a real EIF.`,
        `section[${i}].size`,
      );
    }
    crc = crc32(shBuf, crc);
    const digest: Hash | undefined = options.sectionDigests ? createHash('sha384') : undefined;
    const kept: Buffer[] = [];
    if (sh.type === SectionType.Ramdisk) measurer.beginRamdisk();
    let done = 0;
    while (done < size) {
      const n = Math.min(CHUNK, size - done);
      const view = chunk.subarray(0, n);
      await readExact(fh, view, dataOffset + done);
      crc = crc32(view, crc);
      digest?.update(view);
      if (sh.type === SectionType.Kernel || sh.type === SectionType.Cmdline)
        measurer.kernelOrCmdline(view);
      else if (sh.type === SectionType.Ramdisk) measurer.ramdisk(view);
      if (small) kept.push(Buffer.from(view));
      done += n;
    }
    if (sh.type === SectionType.Ramdisk) {
      measurer.endRamdisk();
      ramdisks++;
    }
    if (sh.type === SectionType.Cmdline) cmdline = Buffer.concat(kept);
    if (sh.type === SectionType.Metadata) metadataBytes = Buffer.concat(kept);
    if (sh.type === SectionType.Signature) signatureBytes = Buffer.concat(kept);
    const info: EifReadSection = {
      index: i,
      type: sh.type,
      kind,
      flags: sh.flags,
      offset: pos,
      dataOffset,
      size,
    };
    if (digest) info.sha384 = digest.digest('hex');
    sections.push(info);
    pos = dataOffset + size;
  }
  if (pos !== fileSize) {
    throw fail(
      'ERR_EIF_BAD_SECTION_TABLE',
      path,
      `${fileSize - pos} bytes follow the last of the ${h.numSections} sections the header lists (section count mismatch or appended data).`,
      'num_sections',
    );
  }
  if (ramdisks === 0)
    throw fail('ERR_EIF_BAD_LAYOUT', path, 'the image has no ramdisk.', 'ramdisk');
  if (h.version >= 4 && !metadataBytes) {
    throw fail(
      'ERR_EIF_BAD_LAYOUT',
      path,
      'a version 4 image must have a metadata section.',
      'metadata',
    );
  }
  const computed = crc >>> 0;
  const crcOk = computed === h.crc32;
  if (!crcOk && options.verifyCrc !== false) {
    throw new EifError(
      'ERR_EIF_BAD_CRC',
      `${path}: CRC32 mismatch: the header says ${hex8(h.crc32)} but the file's bytes give ${hex8(computed)}; the image is corrupt or was modified.`,
      { path, field: 'eif_crc32', stored: h.crc32, computed },
    );
  }
  const metadata = metadataBytes ? decodeMetadata(metadataBytes) : undefined;
  const signature = signatureBytes ? parseSignatureSection(signatureBytes) : undefined;
  const p = measurer.finish(signature?.certificateDer);
  const measurements = measurementsOf(p.pcr0, p.pcr1, p.pcr2, p.pcr8);
  const image: EifImage = {
    path,
    size: fileSize,
    version: h.version,
    flags: h.flags,
    arch: h.flags & EIF_FLAG_ARM64 ? 'aarch64' : 'x86_64',
    defaultMem: h.defaultMem,
    defaultCpus: h.defaultCpus,
    sections,
    crc: { stored: h.crc32, computed, ok: crcOk },
    cmdline: (cmdline ?? Buffer.alloc(0)).toString('utf8'),
    measurements,
    pcrs: pcrsOf(measurements),
  };
  if (metadata) image.metadata = metadata;
  if (metadataBytes) image.metadataBytes = metadataBytes;
  if (signature) image.signature = signature;
  return image;
}

function hex8(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

function layoutError(
  version: number,
  i: number,
  type: number,
  ramdisksSoFar: number,
  signed: boolean,
  haveMetadata: boolean,
): string | undefined {
  if (signed) return 'nothing may follow the signature section.';
  if (i === 0)
    return type === SectionType.Kernel ? undefined : 'the first section must be the kernel.';
  if (i === 1)
    return type === SectionType.Cmdline ? undefined : 'the second section must be the cmdline.';
  switch (type) {
    case SectionType.Kernel:
      return 'an image has exactly one kernel.';
    case SectionType.Cmdline:
      return 'an image has exactly one cmdline.';
    case SectionType.Metadata:
      if (version < 4) return `version ${version} images have no metadata section.`;
      if (haveMetadata) return 'an image has at most one metadata section.';
      return i === 2 ? undefined : 'the metadata section must follow the cmdline.';
    case SectionType.Ramdisk:
      if (version >= 4 && !haveMetadata) return 'the metadata section must precede the ramdisks.';
      return undefined;
    case SectionType.Signature:
      return ramdisksSoFar === 0 ? 'the signature must follow the ramdisks.' : undefined;
    default:
      return 'unexpected section.';
  }
}
