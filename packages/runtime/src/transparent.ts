// Transparent egress: REDIRECT rules + a listener that reads each connection's original
// destination and forwards it through the parent gateway server (see egress-rules.ts for the
// rules and which traffic is exempt).
import { isIP } from 'node:net';
import {
  createTransparentGateway,
  type Endpoint,
  type Logger,
  type MetricsRegistry,
  type Route,
  silentLogger,
  type TransparentTarget,
  type VsockOptions,
} from '@enclave-extras/proxy';
import type { EnclaveConfig } from './config.js';
import {
  type ExemptDestination,
  installRedirectRules,
  type RedirectRules,
} from './egress-rules.js';
import { RuntimeError } from './errors.js';
import { loadOriginalDst, originalDestination } from './original-dst.js';

export interface TransparentEgressOptions {
  logger?: Logger;
  vsock?: VsockOptions;
  /** Where the listeners count (the ProxyRuntime's registry, so /metrics shows them). */
  metrics?: MetricsRegistry;
  /**
   * The name the app resolved for an address (the DNS stub's memory), so the parent decides on
   * the name; undefined sends the address.
   */
  nameOf?: (address: string) => string | undefined;
}

export interface TransparentEgress {
  readonly rules: RedirectRules;
  readonly listeners: ReadonlyArray<Route>;
  /** Removes the rules first (no new redirects), then closes the listeners (drain by default). */
  close(options?: { drain?: boolean; timeoutMs?: number }): Promise<void>;
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address === '::ffff:127.0.0.1';
}

/** The TCP destinations the runtime itself dials (routes, a TCP gateway parent): never redirected. */
export function exemptDestinations(config: EnclaveConfig): ExemptDestination[] {
  const out: ExemptDestination[] = [];
  const add = (ep: Endpoint | undefined) => {
    if (ep?.kind === 'tcp' && isIP(ep.host) !== 0 && !isLoopback(ep.host)) {
      out.push({ address: ep.host, port: ep.port });
    }
  };
  for (const r of config.routes) add(r.dial);
  add(config.egressGateway?.parent);
  return out;
}

/**
 * Starts the transparent listeners (127.0.0.1 and, with IPv6 rules, ::1 on `transparent.port`),
 * then installs the REDIRECT rules. Everything is undone when a step fails.
 */
export async function startTransparentEgress(
  config: EnclaveConfig,
  options: TransparentEgressOptions = {},
): Promise<TransparentEgress> {
  const log = options.logger ?? silentLogger;
  const gw = config.egressGateway;
  if (!gw) {
    throw new RuntimeError(
      'ERR_RUNTIME_EGRESS_SETUP',
      'egress: transparent needs egressGateway (its parent is where connections go).',
    );
  }
  await loadOriginalDst();
  const t = config.transparent;
  const target = async (socket: object): Promise<TransparentTarget> => {
    const dst = await originalDestination(socket);
    if (isLoopback(dst.address)) {
      throw new RuntimeError(
        'ERR_RUNTIME_ORIGINAL_DST',
        `A connection to ${dst.address}:${dst.port} reached the transparent listener without a redirect; loopback is never forwarded.`,
        { address: `${dst.address}:${dst.port}` },
      );
    }
    const name = options.nameOf?.(dst.address);
    return { host: name ?? dst.address, port: dst.port };
  };
  const make = (listen: string): Route =>
    createTransparentGateway({
      name: listen.includes('[') ? 'transparent6' : 'transparent',
      listen,
      parent: gw.parent,
      target,
      logger: log,
      ...(options.vsock ? { vsock: options.vsock } : {}),
      ...(options.metrics ? { metrics: options.metrics } : {}),
      ...(gw.connectTimeoutMs !== undefined ? { connectTimeoutMs: gw.connectTimeoutMs } : {}),
    });
  const listeners: Route[] = [];
  let rules: RedirectRules | undefined;
  try {
    const v4 = make(`tcp:127.0.0.1:${t.port}`);
    listeners.push(v4);
    await v4.start();
    if (t.ipv6 !== false) {
      const v6 = make(`tcp:[::1]:${t.port}`);
      try {
        await v6.start();
        listeners.push(v6);
      } catch (err) {
        if (t.ipv6 === true) throw err;
        log.warn({ err: String(err) }, 'no IPv6 loopback: transparent egress is IPv4 only');
      }
    }
    rules = await installRedirectRules({
      port: t.port,
      chain: t.chain,
      ipv6: listeners.length > 1 ? t.ipv6 : false,
      exempt: exemptDestinations(config),
      exclude: t.exclude,
      logger: log,
      ...(t.iptables ? { iptables: t.iptables } : {}),
      ...(t.ip6tables ? { ip6tables: t.ip6tables } : {}),
    });
    // Rules for IPv4 only: the ::1 listener would only ever see direct connections.
    if (!rules.families.includes(6) && listeners.length > 1) {
      await listeners.pop()?.close({ drain: false });
    }
  } catch (err) {
    await rules?.remove();
    for (const l of listeners) await l.close({ drain: false });
    throw err;
  }
  const installed = rules;
  let closed = false;
  return {
    rules: installed,
    listeners,
    async close(o = {}) {
      if (closed) return;
      closed = true;
      await installed.remove();
      for (const l of listeners) {
        await l.close({
          drain: o.drain ?? true,
          ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
        });
      }
    },
  };
}
