// EIF v4 layout constants, as defined by aws-nitro-enclaves-image-format (src/defs/mod.rs).

/** `.eif` in ASCII. */
export const EIF_MAGIC = Buffer.from([0x2e, 0x65, 0x69, 0x66]);
/** The version this package writes (V3 -> V4 added the metadata section). */
export const EIF_VERSION = 4;
/** Versions this package reads: 2 (CRC) and 3 (signature) have no metadata section. */
export const EIF_READABLE_VERSIONS: readonly number[] = [2, 3, 4];
/** Size of the file header: magic, version, flags, default_mem, default_cpus, reserved,
 * num_sections, section_offsets[32], section_sizes[32], unused, eif_crc32. */
export const EIF_HEADER_SIZE = 548;
/** Offset of the header's `eif_crc32` field (its last 4 bytes). */
export const EIF_CRC_OFFSET = EIF_HEADER_SIZE - 4;
/** Size of a section header: section_type u16, flags u16, section_size u64. */
export const SECTION_HEADER_SIZE = 12;
/** Entries in the header's section tables. */
export const MAX_SECTIONS = 32;
/** Header flag bit 0: the image is for aarch64 (cleared for x86_64). */
export const EIF_FLAG_ARM64 = 0x1;
/** default_mem and default_cpus the image-format builder writes (unused by Nitro). */
export const DEFAULT_MEM = 1024n * 1024n * 1024n;
export const DEFAULT_CPUS = 2n;

/** Section types (EifSectionType). 0 is "invalid" and never appears in a valid file. */
export const SectionType = {
  Kernel: 1,
  Cmdline: 2,
  Ramdisk: 3,
  Signature: 4,
  Metadata: 5,
} as const;
export type SectionType = (typeof SectionType)[keyof typeof SectionType];

/** Lower-case names used in messages and in {@link EifSectionInfo}. */
export type SectionKind = 'kernel' | 'cmdline' | 'ramdisk' | 'signature' | 'metadata';

export const SECTION_KIND: Record<SectionType, SectionKind> = {
  1: 'kernel',
  2: 'cmdline',
  3: 'ramdisk',
  4: 'signature',
  5: 'metadata',
};

export function isSectionType(n: number): n is SectionType {
  return n >= 1 && n <= 5;
}

/** Sections held in memory when read (cmdline, metadata, signature) are capped at this size. */
export const MAX_SMALL_SECTION = 16 * 1024 * 1024;
