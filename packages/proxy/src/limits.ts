import { readdirSync, readFileSync } from 'node:fs';

/** Default descriptors a route keeps free for the rest of the process (see Route `fdReserve`). */
export const DEFAULT_FD_RESERVE = 128;
/** Default open connections per peer on routes that listen on vsock (one enclave). */
export const DEFAULT_MAX_CONNECTIONS_PER_PEER_VSOCK = 1024;
/** Default idle timeout of a connection, in ms. */
export const DEFAULT_IDLE_TIMEOUT_MS = 600_000;
/**
 * Under fd pressure (fewer than `fdReserve` descriptors free) a peer that already holds this many
 * connections on a route is refused there; a peer holding fewer is still served from the reserve.
 */
export const LIGHT_PEER_CONNECTIONS = 8;

/** How often the real count is re-read; in between the proxy's own opens/closes are added. */
const MEASURE_EVERY_MS = 100;

export interface FdStatus {
  /** Descriptors open now (estimate: last count of /proc/self/fd plus what the proxy opened since). */
  open: number;
  /** The soft RLIMIT_NOFILE. */
  limit: number;
}

function readLimit(): number | undefined {
  try {
    const text = readFileSync('/proc/self/limits', 'utf8');
    const m = /^Max open files\s+(\S+)/m.exec(text);
    if (!m?.[1]) return undefined;
    return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1]);
  } catch {
    return undefined;
  }
}

function countOpen(): number | undefined {
  for (const dir of ['/proc/self/fd', '/dev/fd']) {
    try {
      // the directory handle readdir opens is listed too
      return readdirSync(dir).length - 1;
    } catch {
      // next
    }
  }
  return undefined;
}

/**
 * The process's file descriptor budget, shared by every route of the process: RLIMIT_NOFILE from
 * /proc/self/limits and the open count from /proc/self/fd, both re-read at most every 100 ms (a
 * readdir of a few thousand entries is ~1 ms), with the descriptors routes took or gave back since
 * then added in. Unknown (undefined) where /proc is missing: the fd headroom is then not enforced.
 */
export class FdBudget {
  private measuredAt = Number.NEGATIVE_INFINITY;
  private measured?: FdStatus;
  private trackedAtMeasure = 0;
  private tracked = 0;

  /** Routes call this with +n when they take descriptors and -n when they give them back. */
  track(n: number): void {
    this.tracked += n;
  }

  /**
   * The estimate; `fresh` re-reads /proc now (routes do before refusing: between reads, sockets the
   * kernel accepted in a burst are seen both in the last count and as they are admitted).
   */
  status(fresh = false, now = Date.now()): FdStatus | undefined {
    if (fresh || now - this.measuredAt >= MEASURE_EVERY_MS) {
      this.measuredAt = now;
      const limit = readLimit();
      const open = countOpen();
      this.measured = limit !== undefined && open !== undefined ? { open, limit } : undefined;
      this.trackedAtMeasure = this.tracked;
    }
    if (!this.measured) return undefined;
    return {
      open: this.measured.open + (this.tracked - this.trackedAtMeasure),
      limit: this.measured.limit,
    };
  }

  /** Descriptors still free (limit - open), or undefined when unknown. */
  free(fresh = false): number | undefined {
    const s = this.status(fresh);
    return s ? s.limit - s.open : undefined;
  }
}

/** The one budget of this process. */
export const processFds = new FdBudget();
