// CLOCK_REALTIME through koffi: read (clock_gettime), step (clock_settime), slew (adjtimex with
// ADJ_OFFSET_SINGLESHOT, what adjtime(3) does). Setting or slewing needs CAP_SYS_TIME.
import { endianness } from 'node:os';
import { errorMessage, RuntimeError } from '../errors.js';

type KoffiModule = typeof import('koffi');
type SysFn = (...args: unknown[]) => number;

const CLOCK_REALTIME = 0;
/** adjtimex modes: ADJ_OFFSET_SINGLESHOT (0x0001 | ADJ_ADJTIME 0x8000), offset in microseconds. */
const ADJ_OFFSET_SINGLESHOT = 0x8001;
/** struct timex is 208 bytes on 64-bit Linux; `modes` (u32) at 0, `offset` (long) at 8. */
const TIMEX_BYTES = 256;
/** adjtime(3)'s bound on one slew (glibc refuses more than about INT_MAX microseconds). */
export const MAX_SLEW_NS = 2_000_000_000_000n;
const NS_PER_S = 1_000_000_000n;

/**
 * The clock the enclave corrects. `now()` is CLOCK_REALTIME in ns since the Unix epoch; `step`
 * jumps it by `offsetNs`; `slew` makes it run faster or slower until it has moved `offsetNs`
 * (a new slew replaces what is left of the previous one). Tests inject their own.
 */
export interface SystemClock {
  now(): bigint;
  step(offsetNs: bigint): void;
  slew(offsetNs: bigint): void;
}

interface Native {
  koffi: KoffiModule;
  gettime: SysFn;
  settime: SysFn;
  adjtimex: SysFn;
}

let native: Native | undefined;

function unavailable(why: string, cause?: unknown): RuntimeError {
  return new RuntimeError(
    'ERR_RUNTIME_CLOCK_UNAVAILABLE',
    `The system clock cannot be read or set here: ${why}. Set clock.required: false to run without clock sync.`,
    cause === undefined ? {} : { cause },
  );
}

async function loadNative(): Promise<Native> {
  if (native) return native;
  if (process.platform !== 'linux') throw unavailable(`needs Linux (this is ${process.platform})`);
  if (endianness() !== 'LE') throw unavailable('needs a little-endian CPU (x86_64, aarch64)');
  let koffi: KoffiModule;
  try {
    const mod = (await import('koffi')) as KoffiModule & { default?: KoffiModule };
    koffi = mod.default ?? mod;
  } catch (err) {
    throw unavailable(`koffi could not be loaded (${errorMessage(err)})`, err);
  }
  if (koffi.sizeof('long') !== 8) throw unavailable('needs a 64-bit process');
  try {
    let lib: ReturnType<KoffiModule['load']>;
    try {
      lib = koffi.load(null);
      lib.func('int clock_gettime(int clk, void *tp)');
    } catch {
      lib = koffi.load('libc.so.6');
    }
    const f = (proto: string): SysFn => lib.func(proto) as unknown as SysFn;
    native = {
      koffi,
      gettime: f('int clock_gettime(int clk, void *tp)'),
      settime: f('int clock_settime(int clk, void *tp)'),
      adjtimex: f('int adjtimex(void *buf)'),
    };
    return native;
  } catch (err) {
    throw unavailable(
      `koffi could not bind clock_gettime/clock_settime/adjtimex (${errorMessage(err)})`,
      err,
    );
  }
}

function readRealtime(n: Native): bigint {
  const ts = Buffer.alloc(16);
  if (n.gettime(CLOCK_REALTIME, ts) !== 0) {
    throw setError('clock_gettime', n.koffi.errno());
  }
  return ts.readBigInt64LE(0) * NS_PER_S + ts.readBigInt64LE(8);
}

function setError(syscall: string, errno: number): RuntimeError {
  const hint =
    errno === 1
      ? 'the process lacks CAP_SYS_TIME (ee-enclave runs as root inside an enclave; in a container add --cap-add SYS_TIME)'
      : `errno ${errno}`;
  return new RuntimeError(
    'ERR_RUNTIME_CLOCK_SET',
    `Setting the clock failed (${syscall}): ${hint}. Set clock.required: false to start the app anyway.`,
    { syscall, details: { errno } },
  );
}

/** The real CLOCK_REALTIME (koffi). Rejects with ERR_RUNTIME_CLOCK_UNAVAILABLE where it cannot bind. */
export async function systemClock(): Promise<SystemClock> {
  const n = await loadNative();
  return {
    now: () => readRealtime(n),
    step(offsetNs) {
      const target = readRealtime(n) + offsetNs;
      const ts = Buffer.alloc(16);
      ts.writeBigInt64LE(target / NS_PER_S, 0);
      ts.writeBigInt64LE(target % NS_PER_S, 8);
      if (n.settime(CLOCK_REALTIME, ts) !== 0) throw setError('clock_settime', n.koffi.errno());
    },
    slew(offsetNs) {
      const bounded =
        offsetNs > MAX_SLEW_NS ? MAX_SLEW_NS : offsetNs < -MAX_SLEW_NS ? -MAX_SLEW_NS : offsetNs;
      const tx = Buffer.alloc(TIMEX_BYTES);
      tx.writeUInt32LE(ADJ_OFFSET_SINGLESHOT, 0);
      tx.writeBigInt64LE(bounded / 1000n, 8);
      if (n.adjtimex(tx) < 0) throw setError('adjtimex', n.koffi.errno());
    },
  };
}
