import {
  checkUniqueNames,
  egressGatewaySchema,
  endpointSchema,
  namedEntries,
  portSchema,
  routeSchema,
} from '@enclave-extras/proxy/config';
import { volumesSchema } from '@enclave-extras/volumes';
import { z } from 'zod';
import { clockConfigSchema } from './clock/config.js';
import { logsConfigSchema } from './logs/config.js';

const hostsEntrySchema = z.strictObject({
  address: z.string().min(1),
  names: z.array(z.string().min(1)).min(1),
});

/** `network:` of enclave.yaml: loopback setup and /etc/hosts entries. */
export const enclaveNetworkSchema = z.strictObject({
  /** Bring `lo` up and add the 127.0.0.x aliases the routes use (false on a laptop). */
  setup: z.boolean().default(true),
  /** Extra loopback aliases beyond the ones derived from routes and hosts entries. */
  aliases: z.array(z.string()).default([]),
  hosts: z.array(hostsEntrySchema).default([]),
  hostsFile: z.string().min(1).default('/etc/hosts'),
});

/** `transparent:` of enclave.yaml: how `egress: transparent` redirects the app's TCP. */
export const transparentEgressSchema = z.strictObject({
  /** The local listener's port (127.0.0.1 and ::1) the REDIRECT rules send to. */
  port: portSchema.default(15001),
  /** The nat chain this runtime owns; replaced on start, removed on exit. */
  chain: z
    .string()
    .regex(/^[A-Za-z][A-Za-z0-9_-]{0,27}$/, 'letters, digits, _ and -, at most 28')
    .default('EE_EGRESS'),
  /** IPv6 too: `auto` (when ip6tables and the IPv6 nat table work), true (required) or false. */
  ipv6: z.union([z.boolean(), z.literal('auto')]).default('auto'),
  /** Destinations (IP or CIDR) never redirected. */
  exclude: z.array(z.string().min(1)).default([]),
  /** iptables / ip6tables binaries (default: the -legacy variants when installed). */
  iptables: z.string().min(1).optional(),
  ip6tables: z.string().min(1).optional(),
});

/** `dns:` of enclave.yaml: the DNS stub on 127.0.0.1:53 that asks the parent's DNS service. */
export const enclaveDnsSchema = z.strictObject({
  /** The parent DNS service (ee-parent's `dns.listen`), normally vsock:3:8053. */
  parent: endpointSchema,
  /** The stub's address (UDP and TCP); resolv.conf points here. */
  listen: z.union([z.ipv4(), z.ipv6()]).default('127.0.0.1'),
  port: portSchema.default(53),
  /** The resolv.conf to point at the stub (restored on exit). */
  resolvConf: z.string().min(1).default('/etc/resolv.conf'),
  /** Deadline of one question to the parent (ms). */
  timeoutMs: z.number().int().positive().default(5_000),
});

/**
 * enclave.yaml: the enclave entrypoint's configuration. `routes` carry TCP->vsock (vscproxy:
 * `listen: tcp:127.0.0.2:443`, `dial: vsock:3:8000`) and vsock->TCP inbound routes;
 * `egressGateway` is the local HTTP CONNECT/SOCKS5 listener carried to the parent.
 */
export const enclaveConfigSchema = z
  .strictObject({
    network: enclaveNetworkSchema.default({
      setup: true,
      aliases: [],
      hosts: [],
      hostsFile: '/etc/hosts',
    }),
    routes: z.array(routeSchema).default([]),
    egressGateway: egressGatewaySchema.optional(),
    /**
     * `proxy` (default): apps reach the parent through the gateway's proxy variables. `transparent`:
     * also every outbound TCP connection of the app is redirected (legacy iptables nat REDIRECT) to a
     * local listener and carried to `egressGateway.parent`, whose policy decides; needs egressGateway.
     */
    egress: z.enum(['proxy', 'transparent']).default('proxy'),
    /**
     * The DNS stub (optional): apps resolve through the parent under its policy, and transparent
     * egress sends the parent the name the app resolved instead of the address.
     */
    dns: enclaveDnsSchema.optional(),
    transparent: transparentEgressSchema.default({
      port: 15001,
      chain: 'EE_EGRESS',
      ipv6: 'auto',
      exclude: [],
    }),
    /** Set HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY for the app when the gateway is on (default true). */
    proxyEnv: z.boolean().default(true),
    /** Extra NO_PROXY entries (localhost and 127.0.0.0/8 are always in). */
    noProxy: z.array(z.string()).default([]),
    /** How long routes may drain after the app exits (ms). */
    drainTimeoutMs: z.number().int().nonnegative().default(5_000),
    /**
     * Reap orphaned descendants of the app (zombies re-parented to this process). `auto` (default):
     * only when running as PID 1. `true`: always; when not PID 1 this process becomes a child
     * subreaper so the app's orphans are re-parented to it; fails before the app starts when
     * reaping is unavailable. `false`: never.
     */
    reapOrphans: z.union([z.boolean(), z.literal('auto')]).default('auto'),
    /** Sync the enclave's clock with ee-parent's (`time:` in parent.yaml) before the app starts. */
    clock: clockConfigSchema.optional(),
    /** Ship the app's stdout/stderr and ee-enclave's log to ee-parent (`logs:` in parent.yaml). */
    logs: logsConfigSchema.optional(),
    /** Persistent volumes (NFSv4 through the proxies, encrypted ext4+fscrypt), mounted before the app. */
    volumes: volumesSchema.default([]),
  })
  .superRefine((c, ctx) => {
    checkUniqueNames(ctx, namedEntries(c));
    if (c.egress === 'transparent' && !c.egressGateway) {
      ctx.addIssue({
        code: 'custom',
        path: ['egress'],
        message:
          'egress: transparent forwards through the parent gateway: add egressGateway: { listen: "tcp:127.0.0.1:3128", parent: "vsock:3:8080" }',
      });
    }
  });

export type EnclaveConfig = z.output<typeof enclaveConfigSchema>;
