// nitro-cli reads blobs/cmdline with read_to_string and stores `cmdline.trim()` (Rust's str::trim:
// Unicode White_Space at both ends), without a trailing NUL or newline.
import { EifError } from './errors.js';

/** Rust's char::is_whitespace (the Unicode White_Space property). */
const RUST_WS = new Set<number>([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
  0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

/**
 * The kernel command line as nitro-cli stores it: leading and trailing Unicode white space
 * removed exactly like Rust's `str::trim` (so U+FEFF stays, U+0085 goes, unlike JS's trim).
 * Rejects invalid UTF-8 bytes and NUL (nitro-cli fails on both).
 */
export function trimCmdline(input: string | Uint8Array): string {
  let s: string;
  if (typeof input === 'string') s = input;
  else {
    try {
      s = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(input);
    } catch (err) {
      throw new EifError(
        'ERR_EIF_BAD_CMDLINE',
        'cmdline is not valid UTF-8 (nitro-cli reads it as a string).',
        {
          field: 'cmdline',
          cause: err,
        },
      );
    }
  }
  const cps = Array.from(s);
  let a = 0;
  let b = cps.length;
  while (a < b && RUST_WS.has(cps[a]!.codePointAt(0)!)) a++;
  while (b > a && RUST_WS.has(cps[b - 1]!.codePointAt(0)!)) b--;
  const out = cps.slice(a, b).join('');
  if (out.includes('\0')) {
    throw new EifError(
      'ERR_EIF_BAD_CMDLINE',
      'cmdline contains a NUL character (nitro-cli rejects it).',
      {
        field: 'cmdline',
      },
    );
  }
  return out;
}
