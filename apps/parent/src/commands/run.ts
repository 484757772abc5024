// ee-parent run --config parent.yaml: every parent-side route of a deployment, reloadable.

import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import {
  createDnsService,
  type DnsService,
  describeEndpoint,
  ProxyRuntime,
  type RuntimeConfig,
  VMADDR_CID_ANY,
} from '@enclave-extras/proxy';
import { loadConfigFile } from '@enclave-extras/proxy/config';
import {
  createLogServer,
  createTimeServer,
  type LogServer,
  type PrometheusSource,
  type TimeServer,
} from '@enclave-extras/runtime';
import type { Command } from 'commander';
import { applyVsockDir, createLogger, exitWithError, runtimeOptions } from '../common.js';
import { type ParentConfig, parentConfigSchema } from '../config.js';
import { type MetricsServer, type ReloadState, startMetricsServer } from '../metrics-server.js';

interface RunOptions {
  config: string;
  logLevel: string;
  vsockDir?: string;
}

function runtimeConfig(c: ParentConfig): RuntimeConfig {
  return {
    routes: c.routes,
    ...(c.egressGateway ? { egressGatewayServers: [c.egressGateway] } : {}),
  };
}

export function register(program: Command): void {
  runtimeOptions(
    program
      .command('run')
      .description(
        'Serve every parent-side route of a deployment from parent.yaml: vsock->TCP egress routes, the egress gateway server with its policy, TCP->enclave inbound routes, plus /metrics and /healthz. SIGHUP reloads the file without dropping connections; SIGTERM drains and exits.',
      )
      .requiredOption('-c, --config <file>', 'parent.yaml'),
  )
    .addHelpText(
      'after',
      '\nExit codes: 0 drained after SIGTERM/SIGINT, 1 runtime failure (e.g. a listen failed), 2 usage or config error (the message names file:line:col and the key).',
    )
    .action(async (opts: RunOptions) => {
      let log: ReturnType<typeof createLogger> | undefined;
      try {
        log = createLogger(opts.logLevel, 'ee-parent');
        applyVsockDir(opts.vsockDir);
        await run(opts, log);
      } catch (err) {
        exitWithError(err, log);
      }
    });
}

async function run(opts: RunOptions, log: ReturnType<typeof createLogger>): Promise<void> {
  let config = await loadConfigFile(opts.config, parentConfigSchema);
  const runtime = new ProxyRuntime({ logger: log, drainTimeoutMs: config.drainTimeoutMs });
  let draining = false;
  let lastReload: ReloadState | undefined;
  let metrics: MetricsServer | undefined;
  let time: TimeServer | undefined;
  let logs: LogServer | undefined;
  let logOutput: Writable | undefined;
  let dns: DnsService | undefined;
  const closeServices = async () => {
    await dns?.close();
    await time?.close();
    await logs?.close();
    if (logOutput && logOutput !== process.stdout) logOutput.end();
  };
  try {
    await runtime.apply(runtimeConfig(config));
    ({ time, logs, logOutput } = await startServices(config, log));
    if (config.dns && config.egressGateway) {
      dns = createDnsService({
        listen: config.dns.listen,
        policy: config.egressGateway.policy,
        maxConnections: config.dns.maxConnections,
        ...(config.dns.dns ? { dns: config.dns.dns } : {}),
        logger: log,
      });
      await dns.start();
    }
    const t = time;
    const l = logs;
    const d = dns;
    if (config.metrics && config.metrics.listen.kind === 'tcp') {
      metrics = await startMetricsServer(
        runtime,
        config.metrics.listen,
        {
          isDraining: () => draining,
          lastReload: () => lastReload,
        },
        t || l || d
          ? (): PrometheusSource[] => [
              ...(t ? [{ text: t.metricsText() }] : []),
              ...(d ? [{ text: d.metricsText() }] : []),
              ...(l ? l.prometheusSources() : []),
            ]
          : undefined,
      );
    }
  } catch (err) {
    await closeServices();
    await runtime.close({ drain: false });
    throw err;
  }
  process.on('SIGHUP', () => {
    if (draining) return;
    log.info({ config: opts.config }, 'SIGHUP: reloading');
    loadConfigFile(opts.config, parentConfigSchema)
      .then(async (next) => {
        if (JSON.stringify(next.metrics) !== JSON.stringify(config.metrics)) {
          log.warn({}, 'metrics.listen changed: it takes effect on restart');
        }
        for (const k of ['time', 'logs', 'dns'] as const) {
          if (JSON.stringify(next[k]) !== JSON.stringify(config[k])) {
            log.warn({}, `${k}: changed: it takes effect on restart`);
          }
        }
        // All or nothing: on a listen failure the previous routes keep listening.
        const result = await runtime.apply(runtimeConfig(next));
        if (next.egressGateway) dns?.setPolicy(next.egressGateway.policy);
        config = next;
        lastReload = { ok: true, at: new Date().toISOString() };
        log.info({ ...result }, 'reloaded');
      })
      .catch((err: unknown) => {
        const e = err as { code?: string; message?: string };
        lastReload = {
          ok: false,
          at: new Date().toISOString(),
          ...(e.code ? { code: e.code } : {}),
          error: e.message ?? String(err),
        };
        log.error(
          { code: e.code, err: e.message, routes: runtime.status() },
          'reload failed: the previous configuration keeps running',
        );
      });
  });

  const stop = (signal: NodeJS.Signals) => {
    if (draining) {
      log.warn({ signal }, 'second signal: closing every connection now');
      runtime.close({ drain: false }).finally(() => process.exit(0));
      return;
    }
    draining = true;
    log.info({ signal, timeoutMs: config.drainTimeoutMs }, 'draining');
    runtime
      .close({ drain: true, timeoutMs: config.drainTimeoutMs })
      .then(() => closeServices())
      .then(() => metrics?.close())
      .then(() => {
        log.info({}, 'drained, exiting');
        process.exit(0);
      })
      .catch((err: unknown) => exitWithError(err, log));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Logged last: once a supervisor sees 'ready', the signal handlers are in place.
  log.info(
    {
      routes: runtime.routes().map((r) => ({ name: r.name, listen: describeEndpoint(r.endpoint) })),
      ...(metrics ? { metricsPort: metrics.port } : {}),
      ...(time ? { timePort: time.port } : {}),
      ...(logs ? { logsPort: logs.port } : {}),
      ...(dns ? { dns: describeEndpoint(dns.endpoint) } : {}),
    },
    'ready',
  );
}

/** The time service (`time:`) and the log service (`logs:`, JSON lines to stdout or a file). */
async function startServices(
  config: ParentConfig,
  log: ReturnType<typeof createLogger>,
): Promise<{ time?: TimeServer; logs?: LogServer; logOutput?: Writable }> {
  const out: { time?: TimeServer; logs?: LogServer; logOutput?: Writable } = {};
  try {
    if (config.time && config.time.listen.kind === 'vsock') {
      out.time = await createTimeServer({
        port: config.time.listen.port,
        ...(config.time.listen.cid !== VMADDR_CID_ANY ? { cid: config.time.listen.cid } : {}),
        maxConnections: config.time.maxConnections,
        logger: log,
      });
    }
    if (config.logs && config.logs.listen.kind === 'vsock') {
      const output: Writable =
        config.logs.output === '-'
          ? process.stdout
          : createWriteStream(config.logs.output, { flags: 'a' });
      out.logOutput = output;
      if (output !== process.stdout) {
        await new Promise<void>((resolve, reject) => {
          output.once('open', () => resolve());
          output.once('error', reject);
        });
      }
      out.logs = await createLogServer({
        port: config.logs.listen.port,
        ...(config.logs.listen.cid !== VMADDR_CID_ANY ? { cid: config.logs.listen.cid } : {}),
        output,
        maxConnections: config.logs.maxConnections,
        logger: log,
      });
    }
    return out;
  } catch (err) {
    await out.time?.close();
    await out.logs?.close();
    if (out.logOutput && out.logOutput !== process.stdout) out.logOutput.end();
    throw err;
  }
}
