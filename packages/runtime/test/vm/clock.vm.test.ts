// Runs inside ../shared/tools/vsock-vm only (pnpm test:vm): the VM's own CLOCK_REALTIME is set
// (clock_settime, adjtimex) and time and logs travel over real AF_VSOCK (loopback CID 1).
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  createLogServer,
  createTimeServer,
  startClockSync,
  startLogForwarder,
  systemClock,
} from '../../src/index.js';

const inVm = process.env.VSOCK_VM === '1';
const S = 1_000_000_000n;
const MS = 1_000_000n;
const abs = (n: bigint) => (n < 0n ? -n : n);

describe.skipIf(!inVm)('clock and logs on a real kernel (vsock-vm)', () => {
  it('an enclave clock 10 minutes off ends within 50 ms of the parent after start', async () => {
    const clock = await systemClock();
    // The parent's clock: today's time carried forward by CLOCK_MONOTONIC, which setting
    // CLOCK_REALTIME does not move (parent and "enclave" share this VM's kernel).
    const t0 = clock.now();
    const m0 = process.hrtime.bigint();
    const parentNow = () => t0 + (process.hrtime.bigint() - m0);
    clock.step(-600n * S); // the enclave starts 10 minutes behind: a real clock_settime
    expect(abs(clock.now() - parentNow() + 600n * S)).toBeLessThan(1n * S);
    expect(abs(BigInt(Date.now()) * MS - parentNow())).toBeGreaterThan(599n * S);

    const port = 7100 + Math.floor(Math.random() * 500);
    const server = await createTimeServer({ port, now: parentNow });
    try {
      const sync = await startClockSync({
        parent: { kind: 'vsock', cid: 1, port },
        required: true,
      });
      sync.stop();
      const left = clock.now() - parentNow();
      expect(abs(left)).toBeLessThan(50n * MS);
      // what the kernel clock says is what every process sees
      expect(abs(BigInt(Date.now()) * MS - parentNow())).toBeLessThan(50n * MS);
      // first a step (clock_settime), then the residue slewed (adjtimex accepted it)
      expect(sync.metricsText()).toContain('ee_runtime_clock_corrections_total{action="step"} 1');
      expect(sync.last?.action).toBe('slew');
    } finally {
      await server.close();
    }
  });

  it("ships a child's lines over AF_VSOCK with the peer's kernel CID", async () => {
    const lines: string[] = [];
    const output = new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        cb();
      },
    });
    const port = 7700 + Math.floor(Math.random() * 500);
    const server = await createLogServer({ port, output });
    const fwd = startLogForwarder({ parent: { kind: 'vsock', cid: 1, port } });
    const child = spawn(
      process.execPath,
      ['-e', "for (let i = 1; i <= 5000; i++) console.log('line ' + i)"],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    fwd.attach('stdout', child.stdout);
    fwd.attach('stderr', child.stderr);
    expect(await fwd.close({ timeoutMs: 60_000 })).toEqual({ flushed: true });
    while (!lines.some((l) => l.includes('"disconnected"')))
      await new Promise((r) => setTimeout(r, 20));
    await server.close();
    const recs = lines.map((l) => JSON.parse(l)).filter((o) => o.stream === 'stdout');
    expect(recs.map((o) => o.msg)).toEqual(Array.from({ length: 5000 }, (_, i) => `line ${i + 1}`));
    // vsock loopback: the peer is this VM (CID 1 = VMADDR_CID_LOCAL)
    expect(new Set(recs.map((o) => o.cid))).toEqual(new Set([1]));
  });
});
