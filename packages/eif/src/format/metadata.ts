// The v4 metadata section: serde_json (compact) of EifIdentityInfo, fields in declaration order;
// DockerInfo / CustomMetadata are serde_json::Value, whose objects serialise with sorted keys.
import { EifError } from '../errors.js';

export type JsonValue =
  | string
  | number
  | boolean
  | null
  | JsonValue[]
  | { [key: string]: JsonValue };

export interface EifBuildMetadata {
  /** RFC 3339 (chrono's to_rfc3339), e.g. `1970-01-01T00:00:00+00:00`. */
  BuildTime: string;
  BuildTool: string;
  BuildToolVersion: string;
  OperatingSystem: string;
  KernelVersion: string;
}

/** The metadata section's JSON object (EifIdentityInfo). */
export interface EifMetadata {
  ImageName: string;
  ImageVersion: string;
  BuildMetadata: EifBuildMetadata;
  DockerInfo: JsonValue;
  CustomMetadata: JsonValue;
}

function sortKeys(v: JsonValue): JsonValue {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const out: { [key: string]: JsonValue } = {};
    for (const k of keys) out[k] = sortKeys(v[k] as JsonValue);
    return out;
  }
  return v;
}

export function encodeMetadata(m: EifMetadata): Buffer {
  const ordered = {
    ImageName: m.ImageName,
    ImageVersion: m.ImageVersion,
    BuildMetadata: {
      BuildTime: m.BuildMetadata.BuildTime,
      BuildTool: m.BuildMetadata.BuildTool,
      BuildToolVersion: m.BuildMetadata.BuildToolVersion,
      OperatingSystem: m.BuildMetadata.OperatingSystem,
      KernelVersion: m.BuildMetadata.KernelVersion,
    },
    DockerInfo: sortKeys(m.DockerInfo ?? null),
    CustomMetadata: sortKeys(m.CustomMetadata ?? null),
  };
  return Buffer.from(JSON.stringify(ordered), 'utf8');
}

/** chrono's `DateTime<Utc>::to_rfc3339()` for a whole number of seconds since the epoch. */
export function rfc3339(epochSeconds: number): string {
  const iso = new Date(epochSeconds * 1000).toISOString(); // 1970-01-01T00:00:00.000Z
  return `${iso.slice(0, 19)}+00:00`;
}

function bad(message: string, cause?: unknown): EifError {
  return new EifError(
    'ERR_EIF_BAD_METADATA',
    `metadata section: ${message}`,
    cause === undefined ? { field: 'metadata' } : { field: 'metadata', cause },
  );
}

export function decodeMetadata(bytes: Uint8Array): EifMetadata {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw bad('not UTF-8 JSON.', err);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad('not a JSON object.');
  const o = v as Record<string, unknown>;
  for (const k of ['ImageName', 'ImageVersion'] as const) {
    if (typeof o[k] !== 'string') throw bad(`${k} is missing or not a string.`);
  }
  const bm = o.BuildMetadata as Record<string, unknown> | undefined;
  if (bm === null || typeof bm !== 'object' || Array.isArray(bm))
    throw bad('BuildMetadata is missing or not an object.');
  for (const k of [
    'BuildTime',
    'BuildTool',
    'BuildToolVersion',
    'OperatingSystem',
    'KernelVersion',
  ] as const) {
    if (typeof bm[k] !== 'string') throw bad(`BuildMetadata.${k} is missing or not a string.`);
  }
  // serde fills a missing serde_json::Value field with null; so do we.
  return {
    ...(o as unknown as EifMetadata),
    DockerInfo: (o.DockerInfo ?? null) as JsonValue,
    CustomMetadata: (o.CustomMetadata ?? null) as JsonValue,
  };
}
