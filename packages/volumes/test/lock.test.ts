// The volume lock (src/lock.ts) on local files: flock semantics between two open file
// descriptions, waiting, release, abort. Over NFS (another kernel's view through the server) it
// is exercised in test/vm/volumes.vm.test.ts.
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { lockExclusive } from '../src/lock.js';

const dir = mkdtempSync(join(tmpdir(), 'ee-volume-lock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('lockExclusive', () => {
  it('creates the lock file (0600); a second holder is refused until the first releases', async () => {
    const path = join(dir, 'a.img.lock');
    const first = await lockExclusive(path, { waitMs: 0 });
    expect(first.held).toBe(true);
    expect(existsSync(path)).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const waits: number[] = [];
    const second = await lockExclusive(path, {
      waitMs: 250,
      retryMs: 50,
      onBusy: (ms) => waits.push(ms),
    });
    expect(second).toMatchObject({ held: false, reason: 'busy' });
    expect(waits.length).toBeGreaterThan(1); // it retried, not only one attempt
    if (!first.held) throw new Error('unreachable');
    await first.lock.release();
    await first.lock.release(); // idempotent
    const third = await lockExclusive(path, { waitMs: 0 });
    expect(third.held).toBe(true);
    if (third.held) await third.lock.release();
  });

  it('a waiter gets the lock when the holder releases it during the wait', async () => {
    const path = join(dir, 'b.img.lock');
    const first = await lockExclusive(path, { waitMs: 0 });
    if (!first.held) throw new Error('the first lock was refused');
    setTimeout(() => void first.lock.release(), 150);
    const second = await lockExclusive(path, { waitMs: 10_000, retryMs: 25 });
    expect(second.held).toBe(true);
    if (second.held) await second.lock.release();
  });

  it('an abort ends the wait with reason aborted', async () => {
    const path = join(dir, 'c.img.lock');
    const first = await lockExclusive(path, { waitMs: 0 });
    if (!first.held) throw new Error('the first lock was refused');
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('SIGTERM')), 100);
    const second = await lockExclusive(path, { waitMs: 60_000, signal: ac.signal });
    expect(second).toMatchObject({ held: false, reason: 'aborted' });
    await first.lock.release();
  });

  it('a path that cannot be opened throws (no lock, nothing left open)', async () => {
    await expect(lockExclusive(join(dir, 'missing-dir', 'x.lock'), { waitMs: 0 })).rejects.toThrow(
      /ENOENT/,
    );
  });
});
