import { VMADDR_CID_ANY } from '@enclave-extras/proxy';
import { endpointSchema } from '@enclave-extras/proxy/config';
import { z } from 'zod';

/** The time service's vsock port on the parent (ee-parent `time.listen`, ee-enclave `clock.parent`). */
export const DEFAULT_TIME_PORT = 7100;

const vsockListen = (what: string) =>
  endpointSchema.refine((e) => e.kind === 'vsock', {
    message: `${what} must be a vsock: endpoint such as vsock:any:${DEFAULT_TIME_PORT}`,
  });

/** enclave.yaml `clock:`: sync the enclave's clock with ee-parent's at start and every intervalMs. */
export const clockConfigSchema = z.strictObject({
  /** Where ee-parent serves time. */
  parent: endpointSchema.default(() => ({
    kind: 'vsock' as const,
    cid: 3,
    port: DEFAULT_TIME_PORT,
  })),
  /** Refuse to start the app when the first sync fails (parent unreachable, no CAP_SYS_TIME). */
  required: z.boolean().default(true),
  intervalMs: z.number().int().min(1_000).default(60_000),
  samples: z.number().int().min(1).max(64).default(8),
  /** Offsets at least this large are stepped (clock_settime); smaller ones slewed (adjtimex). */
  stepThresholdMs: z.number().nonnegative().default(128),
  /** A measured offset above this (after the first sync) is logged as a warning. */
  maxDriftMs: z.number().nonnegative().default(100),
  timeoutMs: z.number().int().min(1).default(2_000),
  startTimeoutMs: z.number().int().nonnegative().default(15_000),
});

export type ClockConfig = z.output<typeof clockConfigSchema>;

/** parent.yaml `time:`: serve this machine's clock to enclaves. */
export const timeServiceSchema = z.strictObject({
  listen: vsockListen('time.listen').default(() => ({
    kind: 'vsock' as const,
    cid: VMADDR_CID_ANY,
    port: DEFAULT_TIME_PORT,
  })),
  maxConnections: z.number().int().min(1).default(256),
});

export type TimeServiceConfig = z.output<typeof timeServiceSchema>;
