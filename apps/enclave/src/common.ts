// Shared flag handling of ee-enclave commands: logger, vsock emulation dir, exit codes.
import { strictPort } from '@enclave-extras/proxy';
import type { Command } from 'commander';
import pino from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** One pino logger per process: JSON lines on stderr (synchronous, so nothing is lost on exit). */
export function createLogger(level: string, name: string): pino.Logger {
  if (!(LOG_LEVELS as ReadonlyArray<string>).includes(level)) {
    throw new UsageError(`--log-level "${level}" is not one of ${LOG_LEVELS.join(', ')}.`);
  }
  return pino({ level, name, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

/** A usage/config problem: exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly code = 'ERR_USAGE';
}

/** The flags of every long-running command: `--log-level` and `--vsock-dir`. */
export function runtimeOptions(cmd: Command): Command {
  return cmd
    .option('--log-level <level>', LOG_LEVELS.join('|'), 'info')
    .option(
      '--vsock-dir <dir>',
      'use the vsock emulation over Unix sockets in DIR (development; also ENCLAVE_EXTRAS_VSOCK_DIR)',
    );
}

/** `--vsock-dir DIR` (or ENCLAVE_EXTRAS_VSOCK_DIR) selects the Unix-socket vsock emulation. */
export function applyVsockDir(dir: string | undefined): void {
  if (dir) process.env.ENCLAVE_EXTRAS_VSOCK_DIR = dir;
}

const USAGE_CODES = new Set(['ERR_CONFIG_INVALID', 'ERR_CONFIG_READ', 'ERR_USAGE']);

/** Prints a failure on stderr and exits: 2 for usage/config errors, 1 for anything else. */
export function exitWithError(err: unknown, log?: pino.Logger): never {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const usage = code !== undefined && USAGE_CODES.has(code);
  // a usage/config error is the one line below (it is about the command line, not the service)
  if (!usage) log?.error({ code, err: message }, 'fatal');
  process.stderr.write(`ee-enclave: ${code ? `${code}: ` : ''}${message}\n`);
  process.exit(usage ? 2 : 1);
}

/**
 * Parses a decimal integer flag/argument (ports, CIDs, counts, ms) in [min, max] with the one strict
 * port parser (`1e3`, `0x50`, `' '` and `''` are refused), else a UsageError naming it.
 */
export function intArg(name: string, value: string, min: number, max: number): number {
  const n = strictPort(value, max, min);
  if (n === undefined) {
    throw new UsageError(`${name} "${value}" must be a decimal integer from ${min} to ${max}.`);
  }
  return n;
}
