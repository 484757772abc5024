import { type Logger, ProxyRuntime, silentLogger, type VsockOptions } from '@enclave-extras/proxy';
import type { MountedVolumes, MountVolumeOptions } from '@enclave-extras/volumes';
import { type AppExit, exitStatus, proxyEnv, type RunAppOptions, runApp } from './child.js';
import type { EnclaveConfig } from './config.js';
import { type DnsStub, type ResolvConfResult, startDnsStub, writeResolvConf } from './dns-stub.js';
import { errorMessage, RuntimeError } from './errors.js';
import { updateHostsFile } from './hosts.js';
import { isLoopbackV4, setupLoopback } from './network.js';
import {
  loadReaperNative,
  type Reaper,
  type ReaperNative,
  setChildSubreaper,
  startReaper,
} from './reaper.js';
import { startTransparentEgress, type TransparentEgress } from './transparent.js';
import { mountEnclaveVolumes, unmountEnclaveVolumes, volumeRouteConfigs } from './volumes.js';

/** The 127.0.0.x aliases a configuration needs: TCP listeners, gateway and hosts entries in 127/8. */
export function loopbackAliases(config: EnclaveConfig): string[] {
  const out = new Set<string>(config.network.aliases);
  for (const r of config.routes) {
    if (r.listen.kind === 'tcp' && isLoopbackV4(r.listen.host)) out.add(r.listen.host);
  }
  const g = config.egressGateway?.listen;
  if (g?.kind === 'tcp' && isLoopbackV4(g.host)) out.add(g.host);
  for (const h of config.network.hosts) if (isLoopbackV4(h.address)) out.add(h.address);
  for (const v of config.volumes)
    if (v.route && isLoopbackV4(v.server.host)) out.add(v.server.host);
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
  /**
   * With egress: transparent, the name the app resolved for an address (the DNS stub's memory),
   * sent to the parent instead of the address so policy on names applies.
   */
  nameOf?: (address: string) => string | undefined;
  /** Called once every listener is up, before the app starts. */
  onReady?: (runtime: ProxyRuntime) => void;
  /** The app's stdout and stderr as pipes (see RunAppOptions.onOutput); default inherited. */
  onOutput?: RunAppOptions['onOutput'];
  /** Data keys of encrypted volumes (`kmsDataKeys({ kms, keyId })` from @enclave-extras/volumes). */
  dataKeys?: MountVolumeOptions['dataKeys'];
}

/**
 * The enclave entrypoint: network setup, routes and gateway started and listening, then the app
 * with signals forwarded; when it exits the routes drain (config.drainTimeoutMs) and the app's
 * exit is returned (`status` = code, or 128 + signal). With config.reapOrphans on (default: when
 * this process is PID 1) orphaned descendants of the app are reaped while it runs and drains.
 */
export async function runEnclave(
  config: EnclaveConfig,
  options: RunEnclaveOptions,
): Promise<AppExit> {
  const log = options.logger ?? silentLogger;
  // One SIGTERM/SIGINT handler for the whole run, so this process is never killed half-way (as
  // PID 1 it would even be ignored): before the app runs it stops the bring-up; while the app
  // runs, runApp's own handlers forward the signal; after the app exited it is logged and the
  // teardown (unmount, drain; bounded by drainTimeoutMs) finishes. SIGKILL cuts it short.
  let early: NodeJS.Signals | undefined;
  const bringUp = new AbortController();
  let appRunning = false;
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      log.warn(
        { signal: sig, drainTimeoutMs: config.drainTimeoutMs },
        'signal while stopping: finishing the unmount and drain first (SIGKILL cuts it short)',
      );
      return;
    }
    if (appRunning) return; // runApp's own handlers forward it
    early ??= sig;
    bringUp.abort(); // e.g. stop waiting for a volume's NFS server
    log.info({ signal: sig }, 'signal before the app started: stopping');
  };
  const runSignals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];
  for (const sig of runSignals) process.on(sig, onSignal);
  const dropSignals = () => {
    for (const sig of runSignals) process.removeListener(sig, onSignal);
  };
  let reaping: Reaping | undefined;
  try {
    reaping = await prepareReaping(config.reapOrphans, log);
    await prepareEnclaveNetwork(config, options);
  } catch (err) {
    dropSignals();
    reaping?.release();
    throw err;
  }
  const runtime = new ProxyRuntime({
    logger: log,
    drainTimeoutMs: config.drainTimeoutMs,
    ...(options.vsock ? { vsock: options.vsock } : {}),
  });
  try {
    await runtime.apply({
      routes: [...config.routes, ...volumeRouteConfigs(config)],
      ...(config.egressGateway ? { egressGateways: [config.egressGateway] } : {}),
    });
  } catch (err) {
    dropSignals();
    await runtime.close({ drain: false });
    reaping?.release();
    throw err;
  }
  let dns: { stub: DnsStub; resolvConf: ResolvConfResult } | undefined;
  const networkOn = !(options.skipNetwork ?? !config.network.setup);
  if (config.dns && !networkOn) {
    log.warn({}, 'dns: the stub needs network setup; skipped (network setup is off)');
  } else if (config.dns) {
    try {
      dns = await startDns(config.dns, options, log);
    } catch (err) {
      dropSignals();
      await runtime.close({ drain: false });
      reaping?.release();
      throw err;
    }
  }
  const stopDns = async () => {
    await dns?.resolvConf.restore();
    await dns?.stub.close();
  };
  const nameOf = options.nameOf ?? (dns ? (a: string) => dns?.stub.nameOf(a) : undefined);
  let transparent: TransparentEgress | undefined;
  if (config.egress === 'transparent') {
    if (options.skipNetwork ?? !config.network.setup) {
      log.warn({}, 'egress: transparent needs network setup; skipped (network setup is off)');
    } else {
      try {
        transparent = await startTransparentEgress(config, {
          logger: log,
          metrics: runtime.metrics,
          ...(options.vsock ? { vsock: options.vsock } : {}),
          ...(nameOf ? { nameOf } : {}),
        });
      } catch (err) {
        dropSignals();
        await stopDns();
        await runtime.close({ drain: false });
        reaping?.release();
        throw err;
      }
    }
  }
  // volumes: after the network, routes, DNS and egress are up, before the app
  let volumes: MountedVolumes | undefined;
  if (!early) {
    try {
      volumes = await mountEnclaveVolumes(config, log, options.dataKeys, bringUp.signal);
    } catch (err) {
      dropSignals();
      await transparent?.close({ drain: false });
      await stopDns();
      await runtime.close({ drain: false });
      reaping?.release();
      if (early) return { status: exitStatus(null, early), code: null, signal: early };
      throw err;
    }
  }
  if (early) {
    dropSignals();
    await unmountEnclaveVolumes(volumes, config.drainTimeoutMs, log);
    await transparent?.close({ drain: false });
    await stopDns();
    await runtime.close({ drain: false });
    reaping?.release();
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
        gateway: host.includes(':') ? `[${host}]:${bound.port}` : `${host}:${bound.port}`,
        noProxy: ['localhost', '127.0.0.1', '::1', '127.0.0.0/8', ...config.noProxy],
      }),
    );
  }
  let exit: AppExit;
  // The run's handler stays installed beside runApp's (removing the last listener would
  // restore the default action for a moment).
  appRunning = true;
  // The reaper leaves every child_process child to libuv (the app, and the commands the
  // teardown runs while reaping is still on); the app's pid is named too, in case Node lacks
  // the handle list that check reads.
  let appPid: number | undefined;
  reaping?.start((pid) => pid === appPid);
  try {
    exit = await runApp({
      command: options.command,
      ...(options.args ? { args: options.args } : {}),
      env,
      logger: log,
      ...(options.onOutput ? { onOutput: options.onOutput } : {}),
      onSpawn: (pid) => {
        appPid = pid;
      },
    });
    // libuv has reaped the app ('exit' fired): its pid may now be reused by an orphan.
    appPid = undefined;
  } finally {
    // the app is gone, and its signal forwarding with it: the run's handler takes over
    stopping = true;
    try {
      // sync + umount while the routes still carry NFS
      await unmountEnclaveVolumes(volumes, config.drainTimeoutMs, log);
      await transparent?.close({ drain: true, timeoutMs: config.drainTimeoutMs });
      await stopDns();
      await runtime.close({ drain: true, timeoutMs: config.drainTimeoutMs });
    } finally {
      dropSignals();
      reaping?.release();
    }
  }
  return exit;
}

async function startDns(
  dns: NonNullable<EnclaveConfig['dns']>,
  options: RunEnclaveOptions,
  log: Logger,
): Promise<{ stub: DnsStub; resolvConf: ResolvConfResult }> {
  const stub = await startDnsStub({
    parent: dns.parent,
    host: dns.listen,
    port: dns.port,
    timeoutMs: dns.timeoutMs,
    logger: log,
    ...(options.vsock ? { vsock: options.vsock } : {}),
  });
  try {
    if (stub.port !== 53) {
      log.warn({ port: stub.port }, 'dns stub not on port 53: resolv.conf cannot name the port');
    }
    const resolvConf = await writeResolvConf(dns.resolvConf, dns.listen);
    log.info(
      { path: dns.resolvConf, nameserver: dns.listen },
      'resolv.conf points at the dns stub',
    );
    return { stub, resolvConf };
  } catch (err) {
    await stub.close();
    throw err;
  }
}

interface Reaping {
  start(isOwned: (pid: number) => boolean): void;
  /** Stops the reaper (after a last sweep) and clears the subreaper flag this run set. */
  release(): void;
}

/**
 * Resolves config.reapOrphans and loads the native calls before anything starts, so an explicit
 * `true` that cannot be honoured fails before the app runs, while `auto` only warns.
 */
async function prepareReaping(
  mode: EnclaveConfig['reapOrphans'],
  log: Logger,
): Promise<Reaping | undefined> {
  const pid1 = process.pid === 1;
  if (mode === false || (mode === 'auto' && !pid1)) return undefined;
  let native: ReaperNative;
  try {
    native = await loadReaperNative();
  } catch (err) {
    if (mode === true) throw err;
    log.warn(
      { code: (err as RuntimeError).code, err: errorMessage(err) },
      'running as PID 1 without reaping orphaned children',
    );
    return undefined;
  }
  // Not PID 1: orphans would go to the real init (or the nearest subreaper), not to us.
  let subreaper = false;
  if (!pid1) {
    const r = setChildSubreaper(native, true);
    if (r < 0) {
      throw new RuntimeError(
        'ERR_RUNTIME_REAPER_UNAVAILABLE',
        `Cannot reap orphaned children: prctl(PR_SET_CHILD_SUBREAPER) failed (errno ${-r}). Set reapOrphans: false or 'auto'.`,
        { syscall: 'prctl', details: { errno: -r } },
      );
    }
    subreaper = true;
  }
  log.debug({ pid1, subreaper }, 'reaping orphaned children');
  let reaper: Reaper | undefined;
  return {
    start(isOwned) {
      reaper ??= startReaper({ native, logger: log, isOwned });
    },
    release() {
      if (reaper) log.debug({ reaped: reaper.reaped }, 'reaper stopped');
      reaper?.stop();
      reaper = undefined;
      if (subreaper) setChildSubreaper(native, false);
      subreaper = false;
    },
  };
}
