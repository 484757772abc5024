// ee-enclave run --config enclave.yaml -- <app> [args]: the enclave entrypoint.
import { describeEndpoint } from '@enclave-extras/proxy';
import { loadConfigFile } from '@enclave-extras/proxy/config';
import { enclaveConfigSchema, runEnclave } from '@enclave-extras/runtime';
import type { Command } from 'commander';
import {
  applyVsockDir,
  createLogger,
  exitWithError,
  runtimeOptions,
  UsageError,
} from '../common.js';
import { startTelemetry, type Telemetry } from '../telemetry.js';
import { volumeDataKeys } from '../volume-keys.js';

interface RunOptions {
  config: string;
  networkSetup: boolean;
  hostsFile?: string;
  logLevel: string;
  vsockDir?: string;
}

export function register(program: Command): void {
  runtimeOptions(
    program
      .command('run')
      .description(
        'The enclave entrypoint: bring lo up with the 127.0.0.x aliases the routes need, write the /etc/hosts entries, start the TCP->vsock routes, the egress gateway (HTTP CONNECT, plain-HTTP proxy requests and SOCKS5, carried to the parent over one vsock port) and the inbound vsock->TCP routes, wait until they listen, then run the app with HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY set when the gateway is on. With egress: transparent, iptables nat rules also send every other outbound TCP connection of the app to the parent gateway (removed on exit); with dns:, a stub on 127.0.0.1:53 resolves through the parent under its policy and /etc/resolv.conf points at it. Signals are forwarded to the app; as PID 1 ee-enclave also reaps orphaned children; it exits with the status of the app.',
      )
      .requiredOption('-c, --config <file>', 'enclave.yaml')
      .option(
        '--no-network-setup',
        'skip loopback aliases and /etc/hosts (development on a laptop)',
      )
      .option(
        '--hosts-file <file>',
        'write the hosts entries to FILE instead of network.hostsFile',
      ),
  )
    .argument('<app>', 'the program to run once every route listens (after "--")')
    .argument('[args...]', 'its arguments')
    .addHelpText(
      'after',
      "\nExample:\n  ee-enclave run --config /app/enclave.yaml -- node /app/server.js\n\nExit codes: the app's exit code, or 128+N when it died by signal N; 1 runtime failure before the app started (network setup needs CAP_NET_ADMIN: code EPERM; a listen failed); 2 usage or config error (the message names file:line:col and the key).",
    )
    .action(async (app: string, args: string[], opts: RunOptions) => {
      let log: ReturnType<typeof createLogger> | undefined;
      let telemetry: Telemetry | undefined;
      try {
        log = createLogger(opts.logLevel, 'ee-enclave');
        applyVsockDir(opts.vsockDir);
        if (!app) throw new UsageError('Name the app to run after "--".');
        const config = await loadConfigFile(opts.config, enclaveConfigSchema);
        if (opts.hostsFile) config.network.hostsFile = opts.hostsFile;
        telemetry = await startTelemetry(config, opts.logLevel, log);
        const logger = telemetry.logger;
        const t = telemetry;
        const dataKeys = await volumeDataKeys(config.volumes);
        const exit = await runEnclave(config, {
          ...(dataKeys ? { dataKeys } : {}),
          command: app,
          args,
          logger,
          skipNetwork: !opts.networkSetup || !config.network.setup,
          ...(telemetry.onOutput ? { onOutput: telemetry.onOutput } : {}),
          onReady: (runtime) => {
            t.onReady(runtime);
            logger.info(
              {
                routes: runtime
                  .routes()
                  .map((r) => ({ name: r.name, listen: describeEndpoint(r.endpoint) })),
              },
              'ready',
            );
          },
        });
        await telemetry.close();
        process.exit(exit.status);
      } catch (err) {
        // with logs: the failure also reaches the parent (there is no console without debug mode)
        if (telemetry) await telemetry.fail(err);
        exitWithError(err, telemetry ? undefined : log);
      }
    });
}
