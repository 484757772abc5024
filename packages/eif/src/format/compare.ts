// Compares two EIFs section by section (verify-reproducible): which section differs, and for
// the metadata which keys.
import { EifError } from '../errors.js';
import type { SectionKind } from './constants.js';
import { type EifImage, readEif } from './reader.js';

export interface SectionDifference {
  /** Table index of the section (in the first image when both have it). */
  index: number;
  /** e.g. `kernel`, `cmdline`, `metadata`, `ramdisk[0]` (bootstrap), `ramdisk[1]`, `signature`. */
  section: string;
  kind: SectionKind | 'missing';
  /** What differs: `size`, `content`, `missing in a` / `missing in b`. */
  what: string;
  sizeA?: number;
  sizeB?: number;
  /** For the metadata section: the differing keys (e.g. `BuildMetadata.BuildTime`). */
  keys?: string[];
}

export interface EifComparison {
  identical: boolean;
  /** Same PCR0/1/2/8. */
  samePcrs: boolean;
  a: { path: string; measurements: EifImage['measurements'] };
  b: { path: string; measurements: EifImage['measurements'] };
  /** Header fields that differ (version, flags, section count). */
  header: string[];
  sections: SectionDifference[];
}

function labels(img: EifImage): string[] {
  let r = 0;
  return img.sections.map((s) => (s.kind === 'ramdisk' ? `ramdisk[${r++}]` : s.kind));
}

function flatten(v: unknown, prefix: string, out: Map<string, string>): void {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, JSON.stringify(v));
}

function metadataKeys(a: EifImage, b: EifImage): string[] {
  const fa = new Map<string, string>();
  const fb = new Map<string, string>();
  flatten(a.metadata ?? null, '', fa);
  flatten(b.metadata ?? null, '', fb);
  const keys = new Set([...fa.keys(), ...fb.keys()]);
  return [...keys].filter((k) => fa.get(k) !== fb.get(k)).sort();
}

/** Compares two read images (read them with `sectionDigests: true`). */
export function compareImages(a: EifImage, b: EifImage): EifComparison {
  const header: string[] = [];
  if (a.version !== b.version) header.push(`version ${a.version} vs ${b.version}`);
  if (a.flags !== b.flags) header.push(`flags ${a.flags} vs ${b.flags}`);
  if (a.defaultMem !== b.defaultMem) header.push('default_mem');
  if (a.defaultCpus !== b.defaultCpus) header.push('default_cpus');
  if (a.sections.length !== b.sections.length)
    header.push(`num_sections ${a.sections.length} vs ${b.sections.length}`);
  const la = labels(a);
  const lb = labels(b);
  const sections: SectionDifference[] = [];
  const byLabelB = new Map(lb.map((l, i) => [l, b.sections[i]!]));
  for (let i = 0; i < a.sections.length; i++) {
    const sa = a.sections[i]!;
    const label = la[i]!;
    const sb = byLabelB.get(label);
    if (!sb) {
      sections.push({
        index: i,
        section: label,
        kind: sa.kind,
        what: `missing in ${b.path}`,
        sizeA: sa.size,
      });
      continue;
    }
    if (sa.size !== sb.size || sa.sha384 !== sb.sha384 || sa.sha384 === undefined) {
      const d: SectionDifference = {
        index: i,
        section: label,
        kind: sa.kind,
        what: sa.size !== sb.size ? 'size' : 'content',
        sizeA: sa.size,
        sizeB: sb.size,
      };
      if (sa.kind === 'metadata') d.keys = metadataKeys(a, b);
      sections.push(d);
    }
  }
  for (let i = 0; i < b.sections.length; i++) {
    if (!la.includes(lb[i]!)) {
      sections.push({
        index: i,
        section: lb[i]!,
        kind: b.sections[i]!.kind,
        what: `missing in ${a.path}`,
        sizeB: b.sections[i]!.size,
      });
    }
  }
  const ma = a.measurements;
  const mb = b.measurements;
  return {
    identical: header.length === 0 && sections.length === 0,
    samePcrs:
      ma.PCR0 === mb.PCR0 && ma.PCR1 === mb.PCR1 && ma.PCR2 === mb.PCR2 && ma.PCR8 === mb.PCR8,
    a: { path: a.path, measurements: ma },
    b: { path: b.path, measurements: mb },
    header,
    sections,
  };
}

/** Reads both EIFs and compares them. */
export async function compareEifs(
  pathA: string,
  pathB: string,
  signal?: AbortSignal,
): Promise<EifComparison> {
  const opts = { sectionDigests: true, ...(signal ? { signal } : {}) };
  const [a, b] = await Promise.all([readEif(pathA, opts), readEif(pathB, opts)]);
  return compareImages(a, b);
}

/** A one-line explanation of a comparison, naming the differing sections. */
export function explainComparison(c: EifComparison): string {
  if (c.identical) return 'the images are byte-identical section by section';
  const parts = [
    ...c.header.map((h) => `header ${h}`),
    ...c.sections.map(
      (s) =>
        `${s.section} (section ${s.index}) differs in ${s.what}` +
        (s.what === 'size' ? ` (${s.sizeA} vs ${s.sizeB} bytes)` : '') +
        (s.keys && s.keys.length > 0 ? `: ${s.keys.join(', ')}` : ''),
    ),
  ];
  return `${parts.join('; ')}${c.samePcrs ? ' (PCRs are equal)' : ' (PCRs differ)'}`;
}

export function notReproducible(c: EifComparison): EifError {
  return new EifError('ERR_EIF_NOT_REPRODUCIBLE', `not reproducible: ${explainComparison(c)}.`, {
    sections: c.sections.map((s) => s.section),
  });
}
