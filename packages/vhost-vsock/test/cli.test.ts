// ee-vhost-vsock as a process (needs `pnpm build`: the bin runs dist/cli.js).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VsockDriver } from './driver.js';

const bin = join(__dirname, '..', 'bin', 'ee-vhost-vsock.js');
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhvc-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ee-vhost-vsock', () => {
  beforeAll(() => {
    if (!existsSync(join(__dirname, '..', 'dist', 'cli.js'))) {
      throw new Error(
        'dist/cli.js is missing: run pnpm --filter @enclave-extras/vhost-vsock build first',
      );
    }
  });

  it('--help exits 0; a bad --cid exits 2 naming the option', () => {
    expect(spawnSync(process.execPath, [bin, '--help']).status).toBe(0);
    const r = spawnSync(process.execPath, [bin, '--socket', join(dir, 'x.sock'), '--cid', '2'], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--cid');
  });

  it('serves a front-end (GET_CONFIG = --cid) and exits 0 on SIGTERM, removing its sockets', async () => {
    const socket = join(dir, 'vhost.sock');
    const child = spawn(
      process.execPath,
      [bin, '--socket', socket, '--cid', '21', '--vsock-dir', dir],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let log = '';
    child.stderr.on('data', (d) => {
      log += String(d);
    });
    const deadline = Date.now() + 20_000;
    while (!log.includes('backend listening')) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no start: ${log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const driver = new VsockDriver();
    try {
      await driver.start(socket);
      expect(driver.guestCid).toBe(21);
    } finally {
      driver.close();
    }
    const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(join(dir, 'vm_21.sock'))).toBe(false);
  });
});
