// Section data sources: bytes, a (range of a) file, a Readable / async iterable, or a factory of
// one (so nothing is opened before its turn). Everything is consumed as a stream of chunks.
import { createReadStream } from 'node:fs';
import { addAbortSignal, Readable } from 'node:stream';
import { EifError } from '../errors.js';

/** Where a section's bytes come from. */
export type SectionSource =
  | Uint8Array
  | FileRange
  | Readable
  | AsyncIterable<Uint8Array>
  | (() => Readable | AsyncIterable<Uint8Array>);

/** A file, or `length` bytes of it from `offset`. */
export interface FileRange {
  path: string;
  offset?: number;
  length?: number;
}

const CHUNK = 1024 * 1024;

export function isFileRange(s: unknown): s is FileRange {
  return (
    typeof s === 'object' &&
    s !== null &&
    !(s instanceof Uint8Array) &&
    !(s instanceof Readable) &&
    typeof (s as FileRange).path === 'string'
  );
}

/** Turns a source into an async iterable of Buffers; aborts destroy the underlying stream. */
export function openSource(
  source: SectionSource,
  signal: AbortSignal | undefined,
): AsyncIterable<Uint8Array> {
  if (source instanceof Uint8Array) {
    return (async function* one() {
      yield source;
    })();
  }
  let s: Readable | AsyncIterable<Uint8Array>;
  if (typeof source === 'function') s = source();
  else if (isFileRange(source)) {
    const start = source.offset ?? 0;
    if (source.length === 0) return (async function* none() {})();
    s = createReadStream(source.path, {
      start,
      ...(source.length !== undefined ? { end: start + source.length - 1 } : {}),
      highWaterMark: CHUNK,
    });
  } else s = source;
  if (signal && s instanceof Readable) addAbortSignal(signal, s);
  return s;
}

/** Closes a source that was not (fully) consumed. */
export function discardSource(source: SectionSource): void {
  if (source instanceof Readable && !source.destroyed) source.destroy();
}

/** Maps a failure while reading a section into an EifError naming the section. */
export function sourceError(err: unknown, what: string, signal?: AbortSignal): EifError {
  if (err instanceof EifError) return err;
  if (signal?.aborted || (err as { name?: string })?.name === 'AbortError') {
    return new EifError('ERR_EIF_ABORTED', `writing the EIF was aborted while reading ${what}.`, {
      field: what,
      cause: signal?.reason ?? err,
    });
  }
  const code = (err as { code?: string })?.code;
  const path = (err as { path?: string })?.path;
  if (code === 'ENOENT' && path) {
    return new EifError('ERR_EIF_BLOB_MISSING', `${what}: ${path} does not exist.`, {
      field: what,
      path,
      cause: err,
    });
  }
  return new EifError(
    'ERR_EIF_SECTION_STREAM',
    `${what}: reading its data failed: ${(err as Error)?.message ?? String(err)}`,
    { field: what, ...(path ? { path } : {}), cause: err },
  );
}
