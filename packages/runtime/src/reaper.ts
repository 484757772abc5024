// Orphan reaping for the enclave entrypoint when it runs as PID 1 (or as a child subreaper).
// Internal: runEnclave() drives it from the `reapOrphans` config key.
//
// Node's child_process (libuv) reaps only its own children, each with waitpid(pid, WNOHANG) on
// SIGCHLD; when waitpid fails with ECHILD it silently drops the exit, so a child of libuv's that
// someone else reaped never emits 'exit'. This module therefore never calls waitpid(-1): it peeks
// at an exited child with waitid(P_ALL, WNOWAIT) (which leaves it a zombie), reaps that exact pid
// only when it is not one of Node's (an active ChildProcess, `isNodeChild`, or `isOwned`), and
// stops at the first one that is (libuv reaps that one itself; the next sweep looks again).
import { ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import { type Logger, silentLogger } from '@enclave-extras/proxy';
import { errorMessage, RuntimeError } from './errors.js';

type KoffiModule = typeof import('koffi');
type SysFn = (...args: unknown[]) => number;

const P_ALL = 0;
const WNOHANG = 1;
const WEXITED = 4;
const WNOWAIT = 0x0100_0000;
const PR_SET_CHILD_SUBREAPER = 36;
const ECHILD = 10;
const EINTR = 4;
const SIGINFO_SIZE = 128;

/** The libc calls the reaper needs, bound through koffi. */
export interface ReaperNative {
  koffi: KoffiModule;
  waitid: SysFn;
  waitpid: SysFn;
  prctl: SysFn;
  /** Offset of si_pid in siginfo_t: 16 on 64-bit Linux (x86_64, aarch64), 12 on 32-bit. */
  siPidOffset: number;
}

let nativeLoad: Promise<ReaperNative> | undefined;

/**
 * Loads koffi and binds waitid/waitpid/prctl from the running process (glibc or musl).
 * Rejects with RuntimeError ERR_RUNTIME_REAPER_UNAVAILABLE off Linux or when koffi cannot load.
 */
export function loadReaperNative(): Promise<ReaperNative> {
  nativeLoad ??= (async () => {
    if (process.platform !== 'linux') {
      throw unavailable(`reaping needs Linux (this is ${process.platform})`);
    }
    let koffi: KoffiModule;
    try {
      const mod = (await import('koffi')) as KoffiModule & { default?: KoffiModule };
      koffi = mod.default ?? mod;
    } catch (err) {
      throw unavailable(`koffi could not be loaded (${errorMessage(err)})`, err);
    }
    try {
      let lib: ReturnType<KoffiModule['load']>;
      try {
        lib = koffi.load(null);
        lib.func('int waitid(int idtype, uint32_t id, void *infop, int options)');
      } catch {
        lib = koffi.load('libc.so.6');
      }
      const f = (proto: string): SysFn => lib.func(proto) as unknown as SysFn;
      return {
        koffi,
        waitid: f('int waitid(int idtype, uint32_t id, void *infop, int options)'),
        waitpid: f('int waitpid(int pid, void *status, int options)'),
        prctl: f('int prctl(int option, ...)'),
        siPidOffset: koffi.sizeof('void *') === 8 ? 16 : 12,
      };
    } catch (err) {
      throw unavailable(`koffi could not bind waitid/waitpid/prctl (${errorMessage(err)})`, err);
    }
  })();
  // A failed load is not cached as a rejection forever for callers that retry with another
  // environment; it is cheap to try again.
  nativeLoad.catch(() => {
    nativeLoad = undefined;
  });
  return nativeLoad;
}

function unavailable(why: string, cause?: unknown): RuntimeError {
  return new RuntimeError(
    'ERR_RUNTIME_REAPER_UNAVAILABLE',
    `Cannot reap orphaned children: ${why}. Set reapOrphans: false in the enclave config, or run the app under a reaper (tini).`,
    cause === undefined ? {} : { cause },
  );
}

/**
 * Makes this process a child subreaper (prctl PR_SET_CHILD_SUBREAPER): orphaned descendants are
 * re-parented to it instead of to PID 1. Returns 0 or a negative errno.
 */
export function setChildSubreaper(native: ReaperNative, on: boolean): number {
  const r = native.prctl(PR_SET_CHILD_SUBREAPER, 'unsigned long', on ? 1 : 0);
  return r < 0 ? -native.koffi.errno() : 0;
}

/**
 * True when `pid` is a child this Node process spawned with child_process and has not seen exit
 * yet (libuv reaps those; its ChildProcess handle is still active until then). Covers every
 * child, not only the app: the volume commands (`mount`, `umount`, `cryptsetup`, `losetup`) and
 * `iptables` run while the reaper is on, and a sweep that took one of them would leave Node
 * waiting forever for its 'exit'. Uses `process._getActiveHandles()` (undocumented, present in
 * Node 20-26); without it, false.
 */
export function isNodeChild(pid: number): boolean {
  const handles = (process as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.();
  if (!handles) return false;
  for (const h of handles) {
    if (h instanceof ChildProcess && h.pid === pid) return true;
  }
  return false;
}

/** One reaped orphan, as logged. */
export interface ReapedChild {
  pid: number;
  /** Shell-style: the exit code, or 128 + signal number. */
  status: number;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ReaperOptions {
  native: ReaperNative;
  logger?: Logger;
  /**
   * More pids to leave alone, besides every child Node's child_process spawned and has not seen
   * exit (`isNodeChild`, always left to libuv).
   */
  isOwned?: (pid: number) => boolean;
  /** Sweep also on this timer, in case a SIGCHLD was coalesced (ms, default 1000, unref'd). */
  intervalMs?: number;
  /** Called for each reaped orphan (after the debug log). */
  onReap?: (child: ReapedChild) => void;
}

export interface Reaper {
  /** Reaps every exited orphan now; returns how many. */
  sweep(): number;
  /** Removes the SIGCHLD listener and the timers (a final sweep first). */
  stop(): void;
  /** Orphans reaped so far. */
  readonly reaped: number;
}

/**
 * Starts reaping orphaned children: on SIGCHLD (deferred with setImmediate so libuv's own
 * SIGCHLD watcher, which runs in the same poll phase, has already reaped Node's children) and
 * on an unref'd timer. Each reaped pid is logged at debug level with its status.
 */
export function startReaper(options: ReaperOptions): Reaper {
  const { native } = options;
  const log = options.logger ?? silentLogger;
  const info = Buffer.alloc(SIGINFO_SIZE);
  const wstatus = Buffer.alloc(4);
  let reaped = 0;
  let stopped = false;
  let warned = false;
  let immediate: NodeJS.Immediate | undefined;
  let retry: NodeJS.Timeout | undefined;

  const warnOnce = (obj: object, msg: string) => {
    if (warned) return;
    warned = true;
    log.warn(obj, msg);
  };

  /** Returns the count reaped and whether an owned (libuv's) zombie stopped the sweep. */
  const pass = (): { n: number; blocked: boolean } => {
    let n = 0;
    for (;;) {
      info.fill(0);
      const r = native.waitid(P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT);
      if (r < 0) {
        const errno = native.koffi.errno();
        if (errno === EINTR) continue;
        if (errno !== ECHILD) warnOnce({ errno }, 'waitid failed: orphans are not reaped');
        return { n, blocked: false };
      }
      const pid = info.readInt32LE(native.siPidOffset);
      if (pid <= 0) return { n, blocked: false };
      if (isNodeChild(pid) || options.isOwned?.(pid)) return { n, blocked: true };
      wstatus.fill(0);
      let w: number;
      do w = native.waitpid(pid, wstatus, WNOHANG);
      while (w < 0 && native.koffi.errno() === EINTR);
      if (w !== pid) return { n, blocked: false }; // gone meanwhile; the next sweep looks again
      const child = decode(pid, wstatus.readInt32LE(0));
      reaped++;
      n++;
      log.debug({ ...child }, 'reaped orphan');
      options.onReap?.(child);
    }
  };

  const sweep = (): number => {
    const { n, blocked } = pass();
    // Node's own child is an exited zombie in front of the others: libuv reaps it on its
    // SIGCHLD, so look once more shortly instead of waiting for the interval.
    if (blocked && !stopped && !retry) {
      retry = setTimeout(() => {
        retry = undefined;
        pass();
      }, 20);
      retry.unref();
    }
    return n;
  };

  const onSigchld = () => {
    if (immediate || stopped) return;
    immediate = setImmediate(() => {
      immediate = undefined;
      if (!stopped) sweep();
    });
  };
  process.on('SIGCHLD', onSigchld);
  const timer = setInterval(() => sweep(), options.intervalMs ?? 1_000);
  timer.unref();
  // Orphans that exited before we started.
  sweep();

  return {
    sweep,
    stop() {
      if (stopped) return;
      pass();
      stopped = true;
      process.removeListener('SIGCHLD', onSigchld);
      clearInterval(timer);
      if (immediate) clearImmediate(immediate);
      if (retry) clearTimeout(retry);
    },
    get reaped() {
      return reaped;
    },
  };
}

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
);

/** Decodes a wait status (WIFEXITED / WTERMSIG). */
function decode(pid: number, s: number): ReapedChild {
  const sig = s & 0x7f;
  if (sig === 0) {
    const code = (s >> 8) & 0xff;
    return { pid, status: code, code, signal: null };
  }
  return { pid, status: 128 + sig, code: null, signal: signalNames.get(sig) ?? null };
}
