// `pnpm bench`: one-stream throughput through the backend (a QEMU guest under TCG) against the
// vsock emulation it bridges to (host process to host process), from the same run: ratios only.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  connect,
  createEmulatedTransport,
  createServer,
  type VsockSocket,
} from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { createVhostVsockBackend, type VhostVsockBackend } from '../../src/index.js';
import { type Guest, missing, runInGuest, startQemu, waitForAgent } from './guest.js';

const why = missing();
const CID = 43;
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const ROUNDS = 3;

describe.skipIf(why !== null)(`throughput${why ? ` (skipped: ${why})` : ''}`, () => {
  let dir: string;
  let backend: VhostVsockBackend;
  let guest: Guest;
  const transport = () => createEmulatedTransport({ dir, localCid: 2 });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhvb-'));
    backend = await createVhostVsockBackend({
      socketPath: join(dir, 'vhost.sock'),
      guestCid: CID,
      vsockDir: dir,
    });
    guest = startQemu({
      socketPath: backend.socketPath,
      consoleLog: join(dir, 'console.log'),
      memMiB: 512,
    });
    await waitForAgent(transport(), CID, guest);
    await runInGuest(transport(), CID, `head -c ${SIZE} /dev/zero > /tmp/d`);
  });
  afterAll(async () => {
    await guest?.stop();
    await backend?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A sink on `port` that counts bytes; resolves the time from its first byte to EOF. */
  const sink = async (port: number) => {
    let done: (ms: number) => void = () => {};
    const finished = new Promise<number>((ok) => {
      done = ok;
    });
    const server = createServer(
      { transport: transport(), allowHalfOpen: true },
      (s: VsockSocket) => {
        let t0 = 0;
        let n = 0;
        s.on('data', (d: Buffer) => {
          if (!t0) t0 = performance.now();
          n += d.length;
        });
        s.on('end', () => {
          done(n === SIZE ? performance.now() - t0 : Number.NaN);
          s.end();
        });
      },
    );
    await new Promise<void>((ok) => server.listen({ port }, () => ok()));
    return { finished, close: () => new Promise<void>((ok) => server.close(() => ok())) };
  };

  const emulation = async (): Promise<number> => {
    const s = await sink(6200);
    const c = connect({ cid: 3, port: 6200, transport: transport(), allowHalfOpen: true });
    const chunk = Buffer.alloc(64 * 1024, 1);
    for (let i = 0; i < SIZE / chunk.length; i++) {
      if (!c.write(chunk)) await new Promise((r) => c.once('drain', r));
    }
    c.end();
    const ms = await s.finished;
    c.destroy();
    await s.close();
    return ms;
  };

  const guestToHost = async (): Promise<number> => {
    const s = await sink(6201);
    await runInGuest(transport(), CID, 'vt connect 2 6201 < /tmp/d > /dev/null');
    const ms = await s.finished;
    await s.close();
    return ms;
  };

  const hostToGuest = async (): Promise<number> => {
    const data = Buffer.alloc(SIZE, 2);
    const t0 = performance.now();
    const out = await runInGuest(transport(), CID, 'wc -c', data);
    const ms = performance.now() - t0;
    return out.toString().trim() === String(SIZE) ? ms : Number.NaN;
  };

  it('64 MiB one stream: backend (guest under TCG) vs the vsock emulation', async () => {
    const best = {
      emulation: Number.POSITIVE_INFINITY,
      g2h: Number.POSITIVE_INFINITY,
      h2g: Number.POSITIVE_INFINITY,
    };
    for (let r = 0; r < ROUNDS; r++) {
      best.emulation = Math.min(best.emulation, await emulation());
      best.g2h = Math.min(best.g2h, await guestToHost());
      best.h2g = Math.min(best.h2g, await hostToGuest());
    }
    const mibs = (ms: number) => SIZE / MiB / (ms / 1000);
    const base = mibs(best.emulation);
    const row = (name: string, ms: number) =>
      `${name.padEnd(44)}${mibs(ms).toFixed(1).padStart(8)}${`${(mibs(ms) / base).toFixed(2)}x`.padStart(12)}`;
    const lines = [
      '',
      `one-stream throughput, 64 MiB, best of ${ROUNDS} (guest CPU emulated by TCG: compare ratios only)`,
      `${'path'.padEnd(44)}${'MiB/s'.padStart(8)}${'vs emul.'.padStart(12)}`,
      row('vsock emulation (host -> host, Unix sockets)', best.emulation),
      row('backend: guest -> host (vt connect)', best.g2h),
      row('backend: host -> guest (wc -c in the guest)', best.h2g),
      '',
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });
});
