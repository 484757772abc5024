import { VMADDR_CID_ANY } from '@enclave-extras/proxy';
import { endpointSchema } from '@enclave-extras/proxy/config';
import { z } from 'zod';

/** The log service's vsock port on the parent (ee-parent `logs.listen`, ee-enclave `logs.parent`). */
export const DEFAULT_LOGS_PORT = 7101;

/** enclave.yaml `logs:`: ship the app's stdout/stderr and ee-enclave's log to ee-parent. */
export const logsConfigSchema = z.strictObject({
  /** Where ee-parent reads logs. */
  parent: endpointSchema.default(() => ({
    kind: 'vsock' as const,
    cid: 3,
    port: DEFAULT_LOGS_PORT,
  })),
  /** Bytes held while the link is slow or down; lines beyond are dropped and counted. */
  bufferBytes: z
    .number()
    .int()
    .min(64 * 1024)
    .default(4 * 1024 * 1024),
  maxLineBytes: z
    .number()
    .int()
    .min(256)
    .max(512 * 1024)
    .default(16 * 1024),
  /** How often the enclave's metrics (routes, clock, logs) are pushed to ee-parent's /metrics. */
  metricsIntervalMs: z.number().int().min(1_000).default(15_000),
  /**
   * Also copy the app's output to ee-enclave's own stdout/stderr (the console, debug mode only).
   * Off by default: the console is slow and a synchronous copy would pace the app to it.
   */
  console: z.boolean().default(false),
  /** How long, after the app exits, queued lines may take to reach the parent (ms). */
  flushTimeoutMs: z.number().int().nonnegative().default(5_000),
});

export type LogsConfig = z.output<typeof logsConfigSchema>;

/** parent.yaml `logs:`: receive enclave logs and write them as JSON lines. */
export const logServiceSchema = z.strictObject({
  listen: endpointSchema
    .refine((e) => e.kind === 'vsock', {
      message: `logs.listen must be a vsock: endpoint such as vsock:any:${DEFAULT_LOGS_PORT}`,
    })
    .default(() => ({ kind: 'vsock' as const, cid: VMADDR_CID_ANY, port: DEFAULT_LOGS_PORT })),
  /** `-` for ee-parent's stdout (default), or a file the lines are appended to. */
  output: z.string().min(1).default('-'),
  maxConnections: z.number().int().min(1).default(64),
});

export type LogServiceConfig = z.output<typeof logServiceSchema>;
