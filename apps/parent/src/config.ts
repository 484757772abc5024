import {
  checkUniqueNames,
  dnsServiceSchema,
  egressGatewayServerSchema,
  endpointSchema,
  namedEntries,
  routeSchema,
} from '@enclave-extras/proxy/config';
import { logServiceSchema, timeServiceSchema } from '@enclave-extras/runtime';
import { z } from 'zod';

/** parent.yaml: everything `ee-parent run` serves. */
export const parentConfigSchema = z
  .strictObject({
    /** Metrics (`/metrics`, Prometheus text) and health (`/healthz`) over HTTP on a TCP endpoint. */
    metrics: z
      .strictObject({
        listen: endpointSchema.refine((e) => e.kind === 'tcp', {
          message: 'metrics.listen must be a tcp: endpoint such as tcp:127.0.0.1:9100',
        }),
      })
      .optional(),
    /** vsock->TCP egress routes (the vsock-proxy ones) and TCP->vsock inbound routes. */
    routes: z.array(routeSchema).default([]),
    /** The parent half of the egress gateway (vsock listener enforcing `policy`). */
    egressGateway: egressGatewayServerSchema.optional(),
    /** Answer the enclaves' DNS stubs (their `dns:`) under egressGateway.policy. */
    dns: dnsServiceSchema.optional(),
    /** Serve this machine's clock to enclaves (their `clock:`), on vsock port 7100 by default. */
    time: timeServiceSchema.optional(),
    /** Receive enclave logs (their `logs:`) and write them as JSON lines; their metrics join /metrics. */
    logs: logServiceSchema.optional(),
    /** How long connections may finish on SIGTERM or when a reload removes their route (ms). */
    drainTimeoutMs: z.number().int().nonnegative().default(30_000),
  })
  .superRefine((c, ctx) => {
    checkUniqueNames(ctx, namedEntries(c));
    if (c.dns && !c.egressGateway) {
      ctx.addIssue({
        code: 'custom',
        path: ['dns'],
        message:
          'dns: answers under the egress policy: add egressGateway: {listen: vsock:any:8080, policy: {allow: [...]}}',
      });
    }
    if (c.routes.length === 0 && !c.egressGateway && !c.time && !c.logs) {
      ctx.addIssue({
        code: 'custom',
        path: [],
        message:
          'nothing to serve: add "routes:" (e.g. - {name: kms, listen: vsock:any:8000, dial: tcp:kms.us-east-1.amazonaws.com:443}) or "egressGateway:" ({listen: vsock:any:8080, policy: {allow: [...]}})',
      });
    }
  });

export type ParentConfig = z.output<typeof parentConfigSchema>;
