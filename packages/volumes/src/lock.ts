// One enclave at a time per encrypted volume: an exclusive flock(2) on `<image>.lock` beside the
// image. Linux's NFS client carries flock to the server as a whole-file NFSv4 lock, so another
// enclave (another kernel, which the loop-device check cannot see) is refused before it attaches
// the image and corrupts it. The lock lives as long as the file stays open here; the server drops
// a dead client's locks when its lease runs out (90 s by default on the Linux NFS server).
// flock runs on koffi's worker thread: the LOCK request may travel through a proxy on this event
// loop. Internal only.
import { type FileHandle, open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import koffi from 'koffi';
import { SyscallError, sys } from './libc.js';

const LOCK_EX = 2;
const LOCK_NB = 4;

function flockAsync(fd: number, op: number): Promise<{ rc: number; errno: number }> {
  return new Promise((resolve, reject) =>
    // koffi >= 3.2 gives the worker thread's errno to the completion callback
    sys().flock.async(fd, op, (err: unknown, rc: number) =>
      err ? reject(err) : resolve({ rc, errno: rc < 0 ? koffi.errno() : 0 }),
    ),
  );
}

export interface HeldLock {
  readonly path: string;
  /** Closes the file, which drops the lock. Idempotent. */
  release(): Promise<void>;
}

export interface LockOptions {
  /** Keep trying this long while another holder has it (ms). 0: one attempt. */
  waitMs: number;
  /** Pause between attempts (ms). Default 1000. */
  retryMs?: number;
  signal?: AbortSignal;
  /** Called on each refused attempt with the time waited so far. */
  onBusy?: (waitedMs: number) => void;
}

export type LockOutcome =
  | { held: true; lock: HeldLock }
  | { held: false; reason: 'busy'; waitedMs: number }
  | { held: false; reason: 'aborted'; waitedMs: number };

/**
 * Takes an exclusive lock on `path` (created, mode 0600, when absent). Resolves `busy` when
 * another holder kept it for `waitMs`; throws a SyscallError when the lock cannot be taken at all
 * (ENOLCK: the mount has no lock support).
 */
export async function lockExclusive(path: string, o: LockOptions): Promise<LockOutcome> {
  // write access: an exclusive lock over NFS needs a file opened for writing
  const fh: FileHandle = await open(path, 'a', 0o600);
  const started = Date.now();
  let held = false;
  try {
    for (;;) {
      const { rc, errno } = await flockAsync(fh.fd, LOCK_EX | LOCK_NB);
      if (rc === 0) {
        held = true;
        let released: Promise<void> | undefined;
        return { held: true, lock: { path, release: () => (released ??= fh.close()) } };
      }
      if (errno !== koffi.os.errno.EWOULDBLOCK && errno !== koffi.os.errno.EAGAIN)
        throw new SyscallError('flock(LOCK_EX)', errno);
      const waitedMs = Date.now() - started;
      o.onBusy?.(waitedMs);
      if (o.signal?.aborted) return { held: false, reason: 'aborted', waitedMs };
      if (waitedMs >= o.waitMs) return { held: false, reason: 'busy', waitedMs };
      const pause = Math.min(o.retryMs ?? 1000, Math.max(1, o.waitMs - waitedMs));
      await sleep(pause, undefined, o.signal ? { signal: o.signal } : {}).catch(() => {});
    }
  } finally {
    if (!held) await fh.close().catch(() => {});
  }
}
