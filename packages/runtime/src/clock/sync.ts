// The enclave half of clock sync: asks ee-parent for its time, estimates the offset (NTP's
// on-wire formula, several samples, the one with the smallest round trip wins), then steps the
// clock when far off and slews it when close; repeats every intervalMs.
import type net from 'node:net';
import {
  describeEndpoint,
  dialEndpoint,
  type Endpoint,
  type Logger,
  silentLogger,
  type VsockOptions,
} from '@enclave-extras/proxy';
import { errorCode, errorMessage, RuntimeError } from '../errors.js';
import { family } from '../prometheus.js';
import { absNs, bestEstimate, nsToMs, type TimeSample } from './math.js';
import { type SystemClock, systemClock } from './native.js';
import { decodeTimeResponse, encodeTimeRequest, TIME_RESPONSE_BYTES } from './protocol.js';

export interface MeasureOptions {
  /** Where ee-parent serves time (e.g. `vsock:3:7100`). */
  parent: Endpoint;
  /** The client clock (ns since the epoch). */
  now: () => bigint;
  /** Exchanges on one connection (default 8). */
  samples?: number;
  /** Deadline of the whole measurement (ms, default 2 000). */
  timeoutMs?: number;
  vsock?: VsockOptions;
  signal?: AbortSignal;
}

export interface Measurement {
  /** The parent's clock minus ours (ns), from the sample with the smallest round trip. */
  offsetNs: bigint;
  /** That sample's round trip (ns); the offset's error is at most half of it. */
  delayNs: bigint;
  samples: TimeSample[];
}

/** Opens one connection to the parent's time service and measures the offset. */
export async function measureOffset(options: MeasureOptions): Promise<Measurement> {
  const n = options.samples ?? 8;
  const timeoutMs = options.timeoutMs ?? 2_000;
  const where = describeEndpoint(options.parent);
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const onAbort = () => ac.abort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  let socket: net.Socket | undefined;
  try {
    socket = (await dialEndpoint(options.parent, {
      timeoutMs,
      signal: ac.signal,
      ...(options.vsock ? { vsock: options.vsock } : {}),
    })) as net.Socket;
    socket.setNoDelay?.(true);
    const s = socket;
    const samples: TimeSample[] = [];
    await new Promise<void>((resolve, reject) => {
      let pending: Buffer = Buffer.alloc(0);
      let t0 = 0n;
      let seq = 1;
      const fail = (err: unknown) => {
        cleanup();
        reject(err);
      };
      const onData = (chunk: Buffer) => {
        const t3 = options.now();
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        if (pending.length < TIME_RESPONSE_BYTES) return;
        if (pending.length > TIME_RESPONSE_BYTES) {
          return fail(protocolError(where, 'more bytes than one response'));
        }
        let r: ReturnType<typeof decodeTimeResponse>;
        try {
          r = decodeTimeResponse(pending);
        } catch (err) {
          return fail(err);
        }
        pending = Buffer.alloc(0);
        if (r.seq !== seq) return fail(protocolError(where, `answer ${r.seq} to request ${seq}`));
        samples.push({ t0, t1: r.t1, t2: r.t2, t3 });
        if (samples.length >= n) {
          cleanup();
          resolve();
          return;
        }
        send(++seq);
      };
      const send = (q: number) => {
        t0 = options.now();
        s.write(encodeTimeRequest(q));
      };
      const onError = (err: Error) => fail(err);
      const onClose = () => fail(protocolError(where, 'the connection closed mid-measurement'));
      const onAbortMeasure = () =>
        fail(
          new RuntimeError(
            'ERR_RUNTIME_CLOCK_TIMEOUT',
            `The time service at ${where} did not answer ${n} requests within ${timeoutMs} ms. Check that ee-parent serves time there (parent.yaml time.listen).`,
            { address: where },
          ),
        );
      const cleanup = () => {
        s.removeListener('data', onData);
        s.removeListener('error', onError);
        s.removeListener('close', onClose);
        ac.signal.removeEventListener('abort', onAbortMeasure);
      };
      s.on('data', onData);
      s.on('error', onError);
      s.on('close', onClose);
      if (ac.signal.aborted) return onAbortMeasure();
      ac.signal.addEventListener('abort', onAbortMeasure, { once: true });
      s.resume();
      send(seq);
    });
    const best = bestEstimate(samples);
    if (!best) throw protocolError(where, 'no sample with a non-negative round trip');
    return { offsetNs: best.offsetNs, delayNs: best.delayNs, samples };
  } catch (err) {
    if (err instanceof RuntimeError) throw err;
    if (ac.signal.aborted && !options.signal?.aborted) {
      throw new RuntimeError(
        'ERR_RUNTIME_CLOCK_TIMEOUT',
        `The time service at ${where} did not answer within ${timeoutMs} ms. Check that ee-parent serves time there (parent.yaml time.listen).`,
        { cause: err, address: where },
      );
    }
    throw new RuntimeError(
      'ERR_RUNTIME_CLOCK_UNREACHABLE',
      `Cannot reach the time service at ${where} (${errorCode(err)}: ${errorMessage(err)}). Check clock.parent and that ee-parent run serves time (parent.yaml time.listen).`,
      { cause: err, address: where },
    );
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    socket?.destroy();
  }
}

function protocolError(where: string, what: string): RuntimeError {
  return new RuntimeError(
    'ERR_RUNTIME_CLOCK_PROTOCOL',
    `The time service at ${where} broke the protocol: ${what}. Check that clock.parent names ee-parent's time port.`,
    { address: where },
  );
}

export interface ClockSyncOptions {
  /** Where ee-parent serves time (e.g. `vsock:3:7100`). */
  parent: Endpoint;
  /** The clock to correct (default CLOCK_REALTIME through koffi). */
  clock?: SystemClock;
  /** Exchanges per measurement (default 8). */
  samples?: number;
  /** Time between corrections after the first (ms, default 60 000). */
  intervalMs?: number;
  /** Offsets at least this large are stepped; smaller ones are slewed (ms, default 128). */
  stepThresholdMs?: number;
  /** A measured offset above this is logged as a warning (ms, default 100). */
  maxDriftMs?: number;
  /** Deadline of one measurement (ms, default 2 000). */
  timeoutMs?: number;
  /** How long the first sync may retry before start() gives up (ms, default 15 000). */
  startTimeoutMs?: number;
  /**
   * When true, start() rejects if the clock could not be synchronised (parent unreachable, no
   * CAP_SYS_TIME); when false it logs a warning and keeps trying every intervalMs.
   */
  required?: boolean;
  vsock?: VsockOptions;
  logger?: Logger;
  signal?: AbortSignal;
}

export interface SyncResult {
  /** The parent's clock minus ours before the correction (ns). */
  offsetNs: bigint;
  delayNs: bigint;
  action: 'step' | 'slew';
  /** ISO time of the sync (our clock, after the correction). */
  at: string;
}

/** Clock sync against ee-parent; see {@link startClockSync}. */
export class ClockSync {
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<SyncResult> | undefined;
  private lastResult: SyncResult | undefined;
  private steps = 0;
  private slews = 0;
  private failures = 0;
  private lastSyncNs: bigint | undefined;

  constructor(
    private readonly clock: SystemClock,
    private readonly options: ClockSyncOptions,
  ) {
    this.log = options.logger ?? silentLogger;
  }

  /** The last successful sync. */
  get last(): SyncResult | undefined {
    return this.lastResult;
  }

  /** Measures and corrects once. Concurrent calls share one run. */
  syncNow(): Promise<SyncResult> {
    this.running ??= this.syncOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async syncOnce(): Promise<SyncResult> {
    const o = this.options;
    let m: Measurement;
    try {
      m = await measureOffset({
        parent: o.parent,
        now: () => this.clock.now(),
        ...(o.samples !== undefined ? { samples: o.samples } : {}),
        ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
        ...(o.vsock ? { vsock: o.vsock } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
      });
    } catch (err) {
      this.failures++;
      throw err;
    }
    const offsetMs = nsToMs(m.offsetNs);
    const delayMs = nsToMs(m.delayNs);
    const step = absNs(m.offsetNs) >= BigInt(Math.round((o.stepThresholdMs ?? 128) * 1e6));
    if (this.lastResult && Math.abs(offsetMs) > (o.maxDriftMs ?? 100)) {
      this.log.warn(
        { offsetMs, rttMs: delayMs, maxDriftMs: o.maxDriftMs ?? 100 },
        'clock drift exceeds the bound',
      );
    }
    try {
      if (step) this.clock.step(m.offsetNs);
      else this.clock.slew(m.offsetNs);
    } catch (err) {
      this.failures++;
      throw err;
    }
    if (step) this.steps++;
    else this.slews++;
    this.lastSyncNs = this.clock.now();
    const result: SyncResult = {
      offsetNs: m.offsetNs,
      delayNs: m.delayNs,
      action: step ? 'step' : 'slew',
      at: new Date(Number(this.lastSyncNs / 1_000_000n)).toISOString(),
    };
    this.lastResult = result;
    (step ? this.log.info : this.log.debug).call(
      this.log,
      { offsetMs, rttMs: delayMs, action: result.action },
      step ? 'clock stepped to the parent' : 'clock slewing toward the parent',
    );
    return result;
  }

  /**
   * The first sync (retried until startTimeoutMs), then one every intervalMs. Rejects only when
   * `required` and the first sync failed.
   */
  async start(): Promise<void> {
    const o = this.options;
    const deadline = Date.now() + (o.startTimeoutMs ?? 15_000);
    let lastErr: unknown;
    let delay = 100;
    for (;;) {
      if (this.stopped || o.signal?.aborted) return;
      try {
        const first = await this.syncNow();
        // a step leaves the error of one round trip; measure again so the offset shown (and
        // slewed away) is what is left
        if (first.action === 'step') await this.syncNow();
        lastErr = undefined;
        break;
      } catch (err) {
        lastErr = err;
        // a clock that cannot be set will not be settable on a retry
        if (
          errorCode(err) === 'ERR_RUNTIME_CLOCK_SET' ||
          errorCode(err) === 'ERR_RUNTIME_CLOCK_UNAVAILABLE'
        )
          break;
        if (Date.now() + delay > deadline) break;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 2_000);
      }
    }
    if (lastErr) {
      if (o.required) {
        throw new RuntimeError(
          errorCode(lastErr).startsWith('ERR_RUNTIME_CLOCK')
            ? errorCode(lastErr)
            : 'ERR_RUNTIME_CLOCK_UNREACHABLE',
          `The clock could not be synchronised with the parent and clock.required is true: ${errorMessage(lastErr)}`,
          { cause: lastErr, address: describeEndpoint(o.parent) },
        );
      }
      this.log.warn(
        {
          code: errorCode(lastErr),
          err: errorMessage(lastErr),
          parent: describeEndpoint(o.parent),
        },
        'clock not synchronised; the app starts anyway (clock.required: false) and sync keeps trying',
      );
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.syncNow()
        .catch((err: unknown) =>
          this.log.warn(
            {
              code: errorCode(err),
              err: errorMessage(err),
              parent: describeEndpoint(this.options.parent),
            },
            'clock sync failed; retrying at the next interval',
          ),
        )
        .finally(() => this.schedule());
    }, this.options.intervalMs ?? 60_000);
    this.timer.unref();
  }

  /** Prometheus text of the ee_runtime_clock_* metrics. */
  metricsText(): string {
    const l = this.lastResult;
    return [
      family(
        'ee_runtime_clock_offset_seconds',
        'gauge',
        "The parent's clock minus the enclave's at the last sync, before the correction.",
        l ? [`ee_runtime_clock_offset_seconds ${Number(l.offsetNs) / 1e9}`] : [],
      ),
      family(
        'ee_runtime_clock_rtt_seconds',
        'gauge',
        'Round trip of the sample the last offset came from.',
        l ? [`ee_runtime_clock_rtt_seconds ${Number(l.delayNs) / 1e9}`] : [],
      ),
      family(
        'ee_runtime_clock_last_sync_timestamp_seconds',
        'gauge',
        'Unix time of the last successful sync.',
        this.lastSyncNs !== undefined
          ? [
              `ee_runtime_clock_last_sync_timestamp_seconds ${Number(this.lastSyncNs / 1_000_000n) / 1e3}`,
            ]
          : [],
      ),
      family(
        'ee_runtime_clock_corrections_total',
        'counter',
        'Clock corrections by kind (step = clock_settime, slew = adjtimex).',
        [
          `ee_runtime_clock_corrections_total{action="step"} ${this.steps}`,
          `ee_runtime_clock_corrections_total{action="slew"} ${this.slews}`,
        ],
      ),
      family(
        'ee_runtime_clock_sync_failures_total',
        'counter',
        'Syncs that failed (parent unreachable, protocol, clock not settable).',
        [`ee_runtime_clock_sync_failures_total ${this.failures}`],
      ),
    ].join('');
  }

  /** Stops the periodic sync. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * Starts clock sync: the first correction before this resolves (so the app starts with the
 * parent's time), then one every intervalMs. With `required`, rejects (RuntimeError
 * ERR_RUNTIME_CLOCK_*) when the first sync fails; otherwise warns and keeps trying.
 */
export async function startClockSync(options: ClockSyncOptions): Promise<ClockSync> {
  let clock = options.clock;
  if (!clock) {
    try {
      clock = await systemClock();
    } catch (err) {
      if (options.required) throw err;
      (options.logger ?? silentLogger).warn(
        { code: errorCode(err), err: errorMessage(err) },
        'clock sync disabled: the system clock cannot be set here',
      );
      clock = undefined;
    }
  }
  if (!clock) {
    const off = new ClockSync(unsettable, options);
    off.stop();
    return off;
  }
  const sync = new ClockSync(clock, options);
  await sync.start();
  return sync;
}

const unsettable: SystemClock = {
  now: () => BigInt(Date.now()) * 1_000_000n,
  step() {
    throw new RuntimeError('ERR_RUNTIME_CLOCK_UNAVAILABLE', 'clock sync is disabled');
  },
  slew() {
    throw new RuntimeError('ERR_RUNTIME_CLOCK_UNAVAILABLE', 'clock sync is disabled');
  },
};
