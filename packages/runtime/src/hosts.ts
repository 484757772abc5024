import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { errorCode, errorMessage, RuntimeError } from './errors.js';

export interface HostsEntry {
  /** The address the names resolve to, e.g. `127.0.0.2`. */
  address: string;
  /** Host names, e.g. `kms.us-east-1.amazonaws.com`. */
  names: ReadonlyArray<string>;
}

export interface HostsFileOptions {
  /** Default `/etc/hosts`. */
  path?: string;
  /** Marker naming the block (default `enclave-extras`). */
  marker?: string;
}

export interface HostsFileResult {
  path: string;
  /** False when the file already had exactly this block (nothing written). */
  changed: boolean;
  /** `rename` (atomic replace) or `in-place` (the file is a mount point, e.g. Docker's /etc/hosts). */
  method?: 'rename' | 'in-place';
}

const NAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$/;

function hostsError(path: string, message: string, cause?: unknown): RuntimeError {
  const code = cause === undefined ? 'ERR_RUNTIME_HOSTS' : errorCode(cause);
  return new RuntimeError(code === 'ERR_UNKNOWN' ? 'ERR_RUNTIME_HOSTS' : code, message, {
    address: path,
    ...(cause === undefined ? {} : { cause, syscall: 'write' }),
  });
}

/** Renders `content` with the marked block replaced by `entries` (an empty list removes the block). */
export function renderHostsFile(
  content: string,
  entries: ReadonlyArray<HostsEntry>,
  marker = 'enclave-extras',
): string {
  const begin = `# BEGIN ${marker} (managed by ee-enclave; edits inside are overwritten)`;
  const end = `# END ${marker}`;
  const lines = content.length === 0 ? [] : content.replace(/\n$/, '').split('\n');
  const kept: string[] = [];
  let inside = false;
  for (const line of lines) {
    if (line.startsWith(`# BEGIN ${marker}`)) {
      inside = true;
      continue;
    }
    if (inside && line.startsWith(end)) {
      inside = false;
      continue;
    }
    if (!inside) kept.push(line);
  }
  if (entries.length > 0) {
    kept.push(begin);
    for (const e of entries) kept.push(`${e.address}\t${e.names.join(' ')}`);
    kept.push(end);
  }
  return kept.length === 0 ? '' : `${kept.join('\n')}\n`;
}

function validate(entries: ReadonlyArray<HostsEntry>, path: string): void {
  entries.forEach((e, i) => {
    if (isIP(e.address) === 0) {
      throw hostsError(
        path,
        `hosts[${i}].address "${e.address}" is not an IP address; write e.g. 127.0.0.2.`,
      );
    }
    if (e.names.length === 0) {
      throw hostsError(path, `hosts[${i}].names is empty; list at least one host name.`);
    }
    for (const n of e.names) {
      if (!NAME.test(n)) {
        throw hostsError(path, `hosts[${i}] name "${n}" is not a valid host name.`);
      }
    }
  });
}

/**
 * Writes `entries` into a marked block of the hosts file, keeping every other line. Idempotent:
 * nothing is written when the block is already right. The write is atomic (temporary file in the
 * same directory + rename); when the file is a mount point (rename gives EBUSY/EXDEV, as with
 * Docker's bind-mounted /etc/hosts) it is rewritten in place instead.
 */
export async function updateHostsFile(
  entries: ReadonlyArray<HostsEntry>,
  options: HostsFileOptions = {},
): Promise<HostsFileResult> {
  const path = options.path ?? '/etc/hosts';
  validate(entries, path);
  let before = '';
  try {
    before = await readFile(path, 'utf8');
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') {
      throw hostsError(path, `Cannot read ${path}: ${errorMessage(err)}.`, err);
    }
  }
  const after = renderHostsFile(before, entries, options.marker);
  if (after === before) return { path, changed: false };
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, after, { mode: 0o644 });
    await rename(tmp, path);
    return { path, changed: true, method: 'rename' };
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {});
    const code = errorCode(err);
    if (code !== 'EBUSY' && code !== 'EXDEV' && code !== 'EACCES' && code !== 'EROFS') {
      throw hostsError(
        path,
        `Cannot write ${path}: ${errorMessage(err)}. Run as root or skip hosts entries.`,
        err,
      );
    }
  }
  try {
    await writeFile(path, after);
    return { path, changed: true, method: 'in-place' };
  } catch (err) {
    throw hostsError(
      path,
      `Cannot write ${path}: ${errorMessage(err)}. Run as root (or make the file writable) or remove the hosts entries from the config.`,
      err,
    );
  }
}
