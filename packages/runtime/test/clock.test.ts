// Clock sync: the offset math, the wire protocol over real (emulated-vsock Unix) sockets with
// injected clocks, min-RTT selection against a server that delays some answers, and the
// required/optional start behaviour. Setting the real clock is the VM suite's job
// (test/vm/clock.vm.test.ts): it is never done on this machine.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEmulatedTransport, emulatedSocketPath } from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decodeTimeRequest,
  decodeTimeResponse,
  encodeTimeRequest,
  encodeTimeResponse,
  TIME_REQUEST_BYTES,
} from '../src/clock/protocol.js';
import {
  bestEstimate,
  clockConfigSchema,
  createTimeServer,
  enclaveConfigSchema,
  measureOffset,
  RuntimeError,
  type SystemClock,
  sampleOffset,
  startClockSync,
  systemClock,
} from '../src/index.js';

const S = 1_000_000_000n;
const MS = 1_000_000n;
// one monotonic base for both "machines" of a test: their clocks differ only by the offsets
// the test sets, so "within X of the parent" is exact arithmetic, not a timing assertion
const base = BigInt(Date.now()) * MS;
const h0 = process.hrtime.bigint();
const mono = () => base + (process.hrtime.bigint() - h0);

/** A clock the test can set: its value is the shared base plus `offset`; steps and slews apply at once. */
class SoftClock implements SystemClock {
  steps: bigint[] = [];
  slews: bigint[] = [];
  constructor(public offset: bigint) {}
  now = () => mono() + this.offset;
  step(o: bigint) {
    this.steps.push(o);
    this.offset += o;
  }
  slew(o: bigint) {
    this.slews.push(o);
    this.offset += o;
  }
}

let dir: string;
let transport: ReturnType<typeof createEmulatedTransport>;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-clock-'));
  transport = createEmulatedTransport({ dir, localCid: 16 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const vsock = () => ({ transport });

describe('offset math', () => {
  it('is NTP on-wire: offset ((t1-t0)+(t2-t3))/2, delay (t3-t0)-(t2-t1)', () => {
    // server 10 s ahead, 4 ms out, 1 ms in the server, 2 ms back
    const t0 = 1_000n * S;
    const t1 = t0 + 10n * S + 4n * MS;
    const t2 = t1 + 1n * MS;
    const t3 = t0 + 7n * MS;
    const e = sampleOffset({ t0, t1, t2, t3 });
    expect(e.delayNs).toBe(6n * MS);
    // asymmetry (4 vs 2 ms) shows as an error of (4-2)/2 = 1 ms, within delay/2
    expect(e.offsetNs).toBe(10n * S + 1n * MS);
  });

  it('picks the sample with the smallest round trip and skips negative ones', () => {
    const mk = (out: bigint, back: bigint) => ({ t0: 0n, t1: out, t2: out, t3: out + back });
    const samples = [
      mk(30n * MS, 1n * MS),
      mk(2n * MS, 2n * MS),
      { t0: 10n, t1: 0n, t2: 0n, t3: 0n },
    ];
    const best = bestEstimate(samples);
    expect(best?.index).toBe(1);
    expect(best?.offsetNs).toBe(0n);
    expect(bestEstimate([{ t0: 10n, t1: 0n, t2: 0n, t3: 0n }])).toBeUndefined();
  });
});

describe('wire protocol', () => {
  it('round-trips request and response frames and refuses a foreign magic', () => {
    expect(decodeTimeRequest(encodeTimeRequest(7))).toBe(7);
    expect(decodeTimeResponse(encodeTimeResponse(9, 5n, 6n))).toEqual({ seq: 9, t1: 5n, t2: 6n });
    expect(() => decodeTimeRequest(Buffer.from('GET / HT'))).toThrow(RuntimeError);
  });

  it('measures a parent 10 minutes ahead over real sockets within the round trip', async () => {
    const server = await createTimeServer({
      port: 7100,
      transport,
      now: () => mono() + 600n * S,
    });
    try {
      const m = await measureOffset({
        parent: { kind: 'vsock', cid: 3, port: server.port },
        now: mono,
        samples: 8,
        vsock: vsock(),
      });
      expect(m.samples).toHaveLength(8);
      expect(server.requests).toBe(8);
      const err = m.offsetNs - 600n * S;
      expect(err < 0n ? -err : err).toBeLessThanOrEqual(m.delayNs / 2n + 1n);
      expect(server.metricsText()).toContain('ee_parent_time_requests_total 8');
    } finally {
      await server.close();
    }
  });

  it('takes the least-delayed sample when the others queue on the way in', async () => {
    // a server on the same clock that holds requests 1-7 for 40 ms before stamping t1 (as if
    // they had queued on the way in): their offsets read +20 ms; request 8 is answered at once
    const path = emulatedSocketPath(dir, { cid: 4294967295, port: 7200 });
    const server = net.createServer((s) => {
      let buf = Buffer.alloc(0);
      let preamble = false;
      s.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        if (!preamble && buf.length >= 12) {
          buf = buf.subarray(12);
          preamble = true;
        }
        while (preamble && buf.length >= TIME_REQUEST_BYTES) {
          const seq = decodeTimeRequest(buf);
          buf = buf.subarray(TIME_REQUEST_BYTES);
          const answer = () => {
            const t = mono();
            s.write(encodeTimeResponse(seq, t, mono()));
          };
          if (seq === 8) answer();
          else setTimeout(answer, 40);
        }
      });
    });
    await new Promise<void>((r) => server.listen(path, r));
    try {
      const m = await measureOffset({
        parent: { kind: 'vsock', cid: 3, port: 7200 },
        now: mono,
        samples: 8,
        vsock: vsock(),
      });
      const best = bestEstimate(m.samples);
      expect(best?.index).toBe(7);
      const worst = sampleOffset(m.samples[0] as (typeof m.samples)[0]);
      expect(worst.offsetNs).toBeGreaterThan(15n * MS); // what a naive estimate would have used
      const abs = m.offsetNs < 0n ? -m.offsetNs : m.offsetNs;
      expect(abs).toBeLessThanOrEqual(m.delayNs / 2n + 1n);
    } finally {
      server.close();
    }
  });
});

describe('ClockSync', () => {
  it('steps an enclave clock 10 minutes behind to the parent, then slews what is left', async () => {
    const server = await createTimeServer({ port: 7101, transport, now: mono });
    const clock = new SoftClock(-600n * S);
    const warnings: string[] = [];
    const logger = {
      debug() {},
      info() {},
      warn: (_o: object, m?: string) => warnings.push(m ?? ''),
      error() {},
    };
    try {
      const sync = await startClockSync({
        parent: { kind: 'vsock', cid: 3, port: server.port },
        clock,
        required: true,
        vsock: vsock(),
        logger,
      });
      sync.stop();
      expect(clock.steps).toHaveLength(1);
      expect(clock.slews).toHaveLength(1);
      const left = clock.now() - mono();
      expect(left < 0n ? -left : left).toBeLessThan(50n * MS);
      expect(sync.last?.action).toBe('slew');
      const text = sync.metricsText();
      expect(text).toContain('ee_runtime_clock_corrections_total{action="step"} 1');
      expect(text).toMatch(/ee_runtime_clock_offset_seconds -?\d/);
      // drift beyond the bound is logged on later syncs
      clock.offset -= 2n * S;
      const r = await sync.syncNow();
      expect(r.action).toBe('step');
      expect(warnings).toContain('clock drift exceeds the bound');
    } finally {
      await server.close();
    }
  });

  it('refuses to start when required and the parent is unreachable; warns and continues when not', async () => {
    const opts = {
      parent: { kind: 'vsock' as const, cid: 3, port: 7999 },
      clock: new SoftClock(0n),
      vsock: vsock(),
      startTimeoutMs: 300,
    };
    const err = await startClockSync({ ...opts, required: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeError);
    expect((err as RuntimeError).code).toBe('ERR_RUNTIME_CLOCK_UNREACHABLE');
    expect((err as RuntimeError).message).toContain('vm(3):7999');
    const warned: string[] = [];
    const sync = await startClockSync({
      ...opts,
      required: false,
      logger: { debug() {}, info() {}, warn: (_o, m) => warned.push(m ?? ''), error() {} },
    });
    sync.stop();
    expect(sync.last).toBeUndefined();
    expect(warned.join()).toContain('clock not synchronised');
  });

  it('refuses to start when required and the clock cannot be set', async () => {
    const server = await createTimeServer({ port: 7102, transport, now: mono });
    const clock = new SoftClock(-600n * S);
    clock.step = () => {
      throw new RuntimeError(
        'ERR_RUNTIME_CLOCK_SET',
        'Setting the clock failed (clock_settime): EPERM',
      );
    };
    try {
      const err = await startClockSync({
        parent: { kind: 'vsock', cid: 3, port: server.port },
        clock,
        required: true,
        vsock: vsock(),
      }).catch((e: unknown) => e);
      expect((err as RuntimeError).code).toBe('ERR_RUNTIME_CLOCK_SET');
      // one attempt only: a clock that cannot be set is not retried until the deadline
      expect(server.requests).toBe(8);
    } finally {
      await server.close();
    }
  });

  it('reads CLOCK_REALTIME through koffi (never sets it here)', async () => {
    const c = await systemClock();
    const d = c.now() / MS - BigInt(Date.now());
    expect(d < 0n ? -d : d).toBeLessThan(1000n);
  });

  it('config: defaults to vsock:3:7100, required', () => {
    const c = clockConfigSchema.parse({});
    expect(c.parent).toEqual({ kind: 'vsock', cid: 3, port: 7100 });
    expect(c.required).toBe(true);
    expect(() => clockConfigSchema.parse({ requierd: true })).toThrow();
    const e = enclaveConfigSchema.parse({ clock: { required: false }, logs: {} });
    expect(e.clock?.required).toBe(false);
    expect(e.logs?.parent).toEqual({ kind: 'vsock', cid: 3, port: 7101 });
    expect(enclaveConfigSchema.parse({}).clock).toBeUndefined();
  });
});
