import { execFile } from 'node:child_process';
import { type Logger, silentLogger } from '@enclave-extras/proxy';
import { errorMessage, RuntimeError } from './errors.js';

export interface LoopbackOptions {
  /** Extra IPv4 loopback addresses (127.0.0.0/8, other than 127.0.0.1) to add to `lo` as /32 aliases. */
  aliases?: ReadonlyArray<string>;
  /** The iproute2 binary (default `ip` from PATH). */
  ipCommand?: string;
  logger?: Logger;
}

export interface LoopbackResult {
  /** True when `lo` was down and was brought up. */
  broughtUp: boolean;
  /** Aliases added by this call (the ones already present are skipped). */
  added: string[];
}

interface IpRun {
  stdout: string;
}

function runIp(ip: string, args: string[], what: string): Promise<IpRun> {
  return new Promise((resolve, reject) => {
    execFile(ip, args, { timeout: 10_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) {
        resolve({ stdout });
        return;
      }
      const text = `${stderr}`.trim() || errorMessage(err);
      const cmd = `${ip} ${args.join(' ')}`;
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(
          new RuntimeError(
            'ERR_RUNTIME_NET_SETUP',
            `${what}: "${ip}" was not found. Install iproute2 in the enclave image, or skip network setup (ee-enclave run --no-network-setup / network.setup: false).`,
            { cause: err, syscall: cmd },
          ),
        );
        return;
      }
      if (/Operation not permitted|EPERM|Permission denied/i.test(text)) {
        reject(
          new RuntimeError(
            'EPERM',
            `${what}: not permitted (${text}). Run as root or with CAP_NET_ADMIN (inside the enclave this is PID 1's job), or skip network setup with --no-network-setup.`,
            { cause: err, syscall: cmd },
          ),
        );
        return;
      }
      reject(
        new RuntimeError('ERR_RUNTIME_NET_SETUP', `${what}: "${cmd}" failed: ${text}`, {
          cause: err,
          syscall: cmd,
        }),
      );
    });
  });
}

/** Validates that `address` is an IPv4 address in 127.0.0.0/8. */
export function isLoopbackV4(address: string): boolean {
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  return m?.slice(1).every((o) => Number(o) <= 255) ?? false;
}

/**
 * Brings the loopback interface up and adds the 127.0.0.x aliases, using iproute2.
 * Idempotent: addresses already on `lo` are left alone. Errors: RuntimeError `EPERM` without
 * CAP_NET_ADMIN, `ERR_RUNTIME_NET_SETUP` for anything else (missing `ip`, bad address).
 */
export async function setupLoopback(options: LoopbackOptions = {}): Promise<LoopbackResult> {
  const ip = options.ipCommand ?? 'ip';
  const log = options.logger ?? silentLogger;
  const wanted = [...new Set(options.aliases ?? [])].filter((a) => a !== '127.0.0.1');
  for (const a of wanted) {
    if (!isLoopbackV4(a)) {
      throw new RuntimeError(
        'ERR_RUNTIME_NET_SETUP',
        `Loopback alias "${a}" is not an IPv4 address in 127.0.0.0/8; use 127.0.0.2 .. 127.255.255.254.`,
        { address: a },
      );
    }
  }
  const link = await runIp(ip, ['-o', 'link', 'show', 'dev', 'lo'], 'Reading the state of lo');
  const up = /[<,]UP[,>]/.test(link.stdout);
  if (!up) {
    await runIp(ip, ['link', 'set', 'dev', 'lo', 'up'], 'Bringing lo up');
    log.info({ interface: 'lo' }, 'loopback interface up');
  }
  const shown = await runIp(ip, ['-o', '-4', 'addr', 'show', 'dev', 'lo'], 'Listing lo addresses');
  const present = new Set<string>();
  for (const m of shown.stdout.matchAll(/inet (\d+\.\d+\.\d+\.\d+)\//g)) {
    if (m[1]) present.add(m[1]);
  }
  const added: string[] = [];
  for (const a of wanted) {
    if (present.has(a)) continue;
    try {
      await runIp(ip, ['addr', 'add', `${a}/32`, 'dev', 'lo'], `Adding ${a} to lo`);
    } catch (err) {
      // Raced with another process adding it: that is the state we want.
      if (err instanceof RuntimeError && /File exists/.test(errorMessage(err))) continue;
      throw err;
    }
    added.push(a);
    log.info({ interface: 'lo', address: a }, 'loopback alias added');
  }
  return { broughtUp: !up, added };
}
