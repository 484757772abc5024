// ee-enclave run's clock sync and log shipping (enclave.yaml `clock:` and `logs:`), composed from
// @enclave-extras/runtime: the clock is set before the app starts; with `logs:` the app's
// stdout/stderr and this process's own log lines go to ee-parent, and the enclave's metrics
// (routes, clock, logs) are pushed with them for ee-parent's /metrics.

import type { Readable } from 'node:stream';
import type { ProxyRuntime } from '@enclave-extras/proxy';
import {
  type ClockSync,
  type EnclaveConfig,
  type LogForwarder,
  startClockSync,
  startLogForwarder,
} from '@enclave-extras/runtime';
import pino from 'pino';

export interface Telemetry {
  /** The logger to use from here on (also shipped to the parent with `logs:`). */
  logger: pino.Logger;
  /** runEnclave's onOutput (the app's pipes), with `logs:` only. */
  onOutput?: (stdout: Readable, stderr: Readable) => void;
  /** Hands over the proxy runtime whose metrics are pushed. */
  onReady(runtime: ProxyRuntime): void;
  /** Stops the periodic clock sync and flushes the logs (logs.flushTimeoutMs at most). */
  close(): Promise<void>;
  /** Logs a fatal error (to the parent too, with `logs:`), then close(). */
  fail(err: unknown): Promise<void>;
}

function fatal(logger: pino.Logger, err: unknown): void {
  const e = err as { code?: unknown; message?: unknown };
  logger.error(
    {
      ...(typeof e?.code === 'string' ? { code: e.code } : {}),
      err: typeof e?.message === 'string' ? e.message : String(err),
    },
    'fatal',
  );
}

export async function startTelemetry(
  config: EnclaveConfig,
  level: string,
  base: pino.Logger,
): Promise<Telemetry> {
  let logger = base;
  let forwarder: LogForwarder | undefined;
  let clock: ClockSync | undefined;
  let runtime: ProxyRuntime | undefined;
  const logs = config.logs;
  if (logs) {
    forwarder = startLogForwarder({
      parent: logs.parent,
      bufferBytes: logs.bufferBytes,
      maxLineBytes: logs.maxLineBytes,
      metricsIntervalMs: logs.metricsIntervalMs,
      metrics: () =>
        (runtime?.metricsText() ?? '') +
        (clock?.metricsText() ?? '') +
        (forwarder?.metricsText() ?? ''),
      logger: base,
    });
    logger = pino(
      { level, name: 'ee-enclave', base: { pid: process.pid } },
      pino.multistream([
        { level: level as pino.Level, stream: pino.destination({ fd: 2, sync: true }) },
        { level: level as pino.Level, stream: forwarder.runtimeDestination() },
      ]),
    );
  }
  if (config.clock) {
    try {
      clock = await startClockSync({ ...config.clock, logger });
    } catch (err) {
      if (forwarder && logs) {
        fatal(logger, err);
        await forwarder.close({ timeoutMs: logs.flushTimeoutMs });
      }
      throw err;
    }
  }
  const f = forwarder;
  const close = async () => {
    clock?.stop();
    if (f && logs) {
      const { flushed } = await f.close({ timeoutMs: logs.flushTimeoutMs });
      if (!flushed) {
        base.warn({ ...f.stats() }, 'logs: not everything reached the parent before exit');
      }
    }
  };
  return {
    logger,
    ...(f && logs
      ? {
          onOutput: (stdout: Readable, stderr: Readable) => {
            f.attach('stdout', stdout);
            f.attach('stderr', stderr);
            if (logs.console) {
              stdout.on('data', (c: Buffer) => process.stdout.write(c));
              stderr.on('data', (c: Buffer) => process.stderr.write(c));
            }
          },
        }
      : {}),
    onReady(r) {
      runtime = r;
    },
    async fail(err) {
      fatal(logger, err);
      await close();
    },
    close,
  };
}
