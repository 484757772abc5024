import { formatHostPort } from '../endpoint.js';
import { type Logger, silentLogger } from '../logger.js';
import { ProxyRuntime } from '../runtime.js';
import type { VsockOptions } from '../transport.js';
import { type AppExit, exitStatus, proxyEnv, runApp } from './child.js';
import type { EnclaveConfig } from './config.js';
import { updateHostsFile } from './hosts.js';
import { isLoopbackV4, setupLoopback } from './network.js';

/** The 127.0.0.x aliases a configuration needs: TCP listeners, gateway and hosts entries in 127/8. */
export function loopbackAliases(config: EnclaveConfig): string[] {
  const out = new Set<string>(config.network.aliases);
  for (const r of config.routes) {
    if (r.listen.kind === 'tcp' && isLoopbackV4(r.listen.host)) out.add(r.listen.host);
  }
  const g = config.egressGateway?.listen;
  if (g?.kind === 'tcp' && isLoopbackV4(g.host)) out.add(g.host);
  for (const h of config.network.hosts) if (isLoopbackV4(h.address)) out.add(h.address);
  out.delete('127.0.0.1');
  return [...out];
}

export interface PrepareEnclaveOptions {
  logger?: Logger;
  /** Skip loopback setup and hosts entries (development on a laptop). Default: config.network.setup === false. */
  skipNetwork?: boolean;
}

/** Network bring-up: `lo` up, aliases, /etc/hosts block. */
export async function prepareEnclaveNetwork(
  config: EnclaveConfig,
  options: PrepareEnclaveOptions = {},
): Promise<void> {
  const log = options.logger ?? silentLogger;
  if (options.skipNetwork ?? !config.network.setup) {
    log.info({}, 'network setup skipped');
    return;
  }
  const lo = await setupLoopback({ aliases: loopbackAliases(config), logger: log });
  log.info({ ...lo }, 'loopback ready');
  const hosts = await updateHostsFile(config.network.hosts, { path: config.network.hostsFile });
  log.info({ ...hosts, entries: config.network.hosts.length }, 'hosts file ready');
}

export interface RunEnclaveOptions extends PrepareEnclaveOptions {
  command: string;
  args?: ReadonlyArray<string>;
  /** The app's base environment (default process.env); proxy variables are added when the gateway is on. */
  env?: NodeJS.ProcessEnv;
  vsock?: VsockOptions;
  /** Called once every listener is up, before the app starts. */
  onReady?: (runtime: ProxyRuntime) => void;
}

/**
 * The enclave entrypoint: network setup, routes and gateway started and listening, then the app
 * with signals forwarded; when it exits the routes drain (config.drainTimeoutMs) and the app's
 * exit is returned (`status` = code, or 128 + signal).
 */
export async function runEnclave(
  config: EnclaveConfig,
  options: RunEnclaveOptions,
): Promise<AppExit> {
  const log = options.logger ?? silentLogger;
  // Until the app runs (and runApp forwards signals), a SIGTERM/SIGINT stops the bring-up
  // instead of killing this process half-way (as PID 1 it would even be ignored).
  let early: NodeJS.Signals | undefined;
  let appRunning = false;
  const onEarly = (sig: NodeJS.Signals) => {
    if (appRunning) return; // runApp's own handlers forward it
    early ??= sig;
    log.info({ signal: sig }, 'signal before the app started: stopping');
  };
  const earlySignals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];
  for (const sig of earlySignals) process.on(sig, onEarly);
  const dropEarly = () => {
    for (const sig of earlySignals) process.removeListener(sig, onEarly);
  };
  try {
    await prepareEnclaveNetwork(config, options);
  } catch (err) {
    dropEarly();
    throw err;
  }
  const runtime = new ProxyRuntime({
    logger: log,
    drainTimeoutMs: config.drainTimeoutMs,
    ...(options.vsock ? { vsock: options.vsock } : {}),
  });
  try {
    await runtime.apply({
      routes: config.routes,
      ...(config.egressGateway ? { egressGateways: [config.egressGateway] } : {}),
    });
  } catch (err) {
    dropEarly();
    await runtime.close({ drain: false });
    throw err;
  }
  if (early) {
    dropEarly();
    await runtime.close({ drain: false });
    return { status: exitStatus(null, early), code: null, signal: early };
  }
  options.onReady?.(runtime);
  const env: NodeJS.ProcessEnv = { ...(options.env ?? process.env) };
  const gw = config.egressGateway ? runtime.route(config.egressGateway.name) : undefined;
  const bound = gw?.endpoint;
  if (config.proxyEnv && bound?.kind === 'tcp') {
    const host = bound.host === '0.0.0.0' ? '127.0.0.1' : bound.host === '::' ? '::1' : bound.host;
    Object.assign(
      env,
      proxyEnv({
        gateway: formatHostPort(host, bound.port),
        noProxy: ['localhost', '127.0.0.1', '::1', '127.0.0.0/8', ...config.noProxy],
      }),
    );
  }
  let exit: AppExit;
  // The early handlers stay installed until runApp's are (removing the last listener would
  // restore the default action for a moment).
  appRunning = true;
  try {
    exit = await runApp({
      command: options.command,
      ...(options.args ? { args: options.args } : {}),
      env,
      logger: log,
    });
  } finally {
    dropEarly();
    await runtime.close({ drain: true, timeoutMs: config.drainTimeoutMs });
  }
  return exit;
}
