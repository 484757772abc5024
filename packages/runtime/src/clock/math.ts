/** One request/response exchange, all in ns since the Unix epoch. */
export interface TimeSample {
  /** Client clock when the request was sent. */
  t0: bigint;
  /** Server clock when the request was read. */
  t1: bigint;
  /** Server clock when the response was written. */
  t2: bigint;
  /** Client clock when the response was read. */
  t3: bigint;
}

export interface OffsetEstimate {
  /** How far the server's clock is ahead of the client's (ns): add it to the client's clock. */
  offsetNs: bigint;
  /** Round-trip time spent on the wire (ns): (t3 - t0) - (t2 - t1). */
  delayNs: bigint;
}

/**
 * NTP's on-wire estimate: offset = ((t1 - t0) + (t2 - t3)) / 2, delay = (t3 - t0) - (t2 - t1).
 * The offset is exact when both directions take equally long; its error is at most delay / 2.
 */
export function sampleOffset(s: TimeSample): OffsetEstimate {
  return {
    offsetNs: (s.t1 - s.t0 + (s.t2 - s.t3)) / 2n,
    delayNs: s.t3 - s.t0 - (s.t2 - s.t1),
  };
}

/**
 * The estimate of the sample with the smallest round trip (the least queueing, so the tightest
 * error bound), or undefined without a usable sample. Samples with a negative delay (a clock
 * stepped while they were in flight) are skipped.
 */
export function bestEstimate(
  samples: ReadonlyArray<TimeSample>,
): (OffsetEstimate & { index: number }) | undefined {
  let best: (OffsetEstimate & { index: number }) | undefined;
  samples.forEach((s, index) => {
    const e = sampleOffset(s);
    if (e.delayNs < 0n) return;
    if (!best || e.delayNs < best.delayNs) best = { ...e, index };
  });
  return best;
}

export function nsToMs(ns: bigint): number {
  return Number(ns) / 1e6;
}

export function absNs(ns: bigint): bigint {
  return ns < 0n ? -ns : ns;
}
