// The shared set-up of the in-process suites: a backend in a fresh folder and a connected driver
// (test/driver.ts), torn down with an fd-leak check.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createVhostVsockBackend, type VhostVsockBackend } from '../src/index.js';
import { VsockDriver } from './driver.js';

export const CID = 17;
export const fdCount = () => readdirSync('/proc/self/fd').length;

export async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export interface BackendFixture {
  dir: string;
  backend: VhostVsockBackend;
  driver: VsockDriver;
  fds0: number;
}

/** A backend for guest CID 17 on `<tmp>/<prefix>XXXX/vhost.sock` with a started driver. */
export async function openBackend(prefix: string): Promise<BackendFixture> {
  const fds0 = fdCount();
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const backend = await createVhostVsockBackend({
    socketPath: join(dir, 'vhost.sock'),
    guestCid: CID,
    vsockDir: dir,
  });
  const driver = new VsockDriver({ bufAlloc: 16 * 1024 });
  await driver.start(backend.socketPath);
  await until(() => backend.stats.frontEndConnected, 'the front-end');
  return { dir, backend, driver, fds0 };
}

/** Closes both ends, removes the folder and waits until no fd is left over. */
export async function closeBackend(f: BackendFixture): Promise<void> {
  f.driver.close();
  await f.backend.close();
  rmSync(f.dir, { recursive: true, force: true });
  await until(() => fdCount() <= f.fds0, `fds back to ${f.fds0} (now ${fdCount()})`);
}
