import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:os';
import type { Readable } from 'node:stream';
import { type Logger, silentLogger } from '@enclave-extras/proxy';
import { errorCode, errorMessage, RuntimeError } from './errors.js';

/** Signals forwarded to the app by default. */
export const FORWARDED_SIGNALS: ReadonlyArray<NodeJS.Signals> = [
  'SIGTERM',
  'SIGINT',
  'SIGHUP',
  'SIGQUIT',
  'SIGUSR1',
  'SIGUSR2',
];

export interface RunAppOptions {
  command: string;
  args?: ReadonlyArray<string>;
  /** The environment of the app (default: this process's environment). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Signals to forward to the app (default FORWARDED_SIGNALS); each is also reported to `onSignal`. */
  signals?: ReadonlyArray<NodeJS.Signals>;
  /** Called for each forwarded signal after forwarding (e.g. to start draining on SIGTERM). */
  onSignal?: (signal: NodeJS.Signals) => void;
  /** Called synchronously with the app's pid right after it is spawned (before any event runs). */
  onSpawn?: (pid: number) => void;
  /**
   * When given, the app's stdout and stderr are pipes handed to this callback right after the
   * spawn (ee-enclave ships them to the parent: `logs:`); the callback must read them to their
   * end. Default: the app inherits this process's stdout and stderr.
   */
  onOutput?: (stdout: Readable, stderr: Readable) => void;
  logger?: Logger;
}

export interface AppExit {
  /** The shell-style status: the exit code, or 128 + signal number when the app died by a signal. */
  status: number;
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Maps an exit to the shell-style status (128 + n for a signal). */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = signal ? constants.signals[signal] : undefined;
  return n === undefined ? 1 : 128 + n;
}

/**
 * Runs the app with inherited stdio, forwards signals to it and resolves with its exit status
 * when it ends. Rejects with RuntimeError (ENOENT/EACCES kept as code) when it cannot be started.
 *
 * As PID 1 (inside the enclave) the kernel gives no default action to signals without a handler,
 * so the handlers installed here are what makes SIGTERM reach the app. runApp waits only for the
 * app (libuv reaps just its own children); orphaned grandchildren re-parented to this process are
 * reaped by runEnclave's reaper (config `reapOrphans`, on by default as PID 1, see reaper.ts),
 * which is told the app's pid through `onSpawn` so that it never takes the app's exit from Node.
 */
export function runApp(options: RunAppOptions): Promise<AppExit> {
  const log = options.logger ?? silentLogger;
  const signals = options.signals ?? FORWARDED_SIGNALS;
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(options.command, [...(options.args ?? [])], {
        stdio: options.onOutput ? ['inherit', 'pipe', 'pipe'] : 'inherit',
        env: options.env ?? process.env,
        ...(options.cwd ? { cwd: options.cwd } : {}),
      });
    } catch (err) {
      reject(startError(options.command, err));
      return;
    }
    if (child.pid !== undefined) options.onSpawn?.(child.pid);
    if (options.onOutput && child.stdout && child.stderr)
      options.onOutput(child.stdout, child.stderr);
    const handlers = new Map<NodeJS.Signals, () => void>();
    const cleanup = () => {
      for (const [sig, h] of handlers) process.removeListener(sig, h);
    };
    for (const sig of signals) {
      const h = () => {
        log.info({ signal: sig, pid: child.pid }, 'forwarding signal to the app');
        try {
          child.kill(sig);
        } catch {
          // already gone: its exit event follows
        }
        options.onSignal?.(sig);
      };
      handlers.set(sig, h);
      process.on(sig, h);
    }
    child.once('error', (err) => {
      cleanup();
      reject(startError(options.command, err));
    });
    child.once('spawn', () =>
      log.info({ pid: child.pid, command: options.command }, 'app started'),
    );
    child.once('exit', (code, signal) => {
      cleanup();
      const status = exitStatus(code, signal);
      log.info({ pid: child.pid, code, signal, status }, 'app exited');
      resolve({ status, code, signal });
    });
  });
}

function startError(command: string, err: unknown): RuntimeError {
  const code = errorCode(err);
  return new RuntimeError(
    code === 'ERR_UNKNOWN' ? 'ERR_RUNTIME_APP_START' : code,
    `Cannot start the app "${command}": ${errorMessage(err)}. Check the path after "--" and that it is executable.`,
    { cause: err, syscall: 'spawn', address: command },
  );
}

export interface ProxyEnvOptions {
  /** The egress gateway's local listener as `host:port`, e.g. `127.0.0.1:3128` (IPv6 in brackets). */
  gateway: string;
  /** Hosts that bypass the gateway (default: localhost and the loopback range). */
  noProxy?: ReadonlyArray<string>;
}

/**
 * The proxy variables an app reads, upper and lower case (curl reads only lower-case http_proxy,
 * Go and undici read both): `HTTPS_PROXY=http://gateway` (HTTP CONNECT), `HTTP_PROXY=http://gateway`
 * (plain-HTTP requests in absolute form, one origin per proxy connection: Go, Python, curl and
 * node:http send `http://` URLs this way), `ALL_PROXY=socks5h://gateway` (SOCKS5 with names
 * resolved by the parent: other TCP traffic), `NO_PROXY`.
 */
export function proxyEnv(options: ProxyEnvOptions): Record<string, string> {
  const noProxy = (options.noProxy ?? ['localhost', '127.0.0.1', '::1', '127.0.0.0/8']).join(',');
  const env: Record<string, string> = {};
  for (const [k, v] of [
    ['HTTPS_PROXY', `http://${options.gateway}`],
    ['HTTP_PROXY', `http://${options.gateway}`],
    ['ALL_PROXY', `socks5h://${options.gateway}`],
    ['NO_PROXY', noProxy],
  ] as const) {
    env[k] = v;
    env[k.toLowerCase()] = v;
  }
  return env;
}
