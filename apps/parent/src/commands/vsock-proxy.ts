// ee-parent vsock-proxy: a drop-in for AWS's vsock-proxy (same arguments, same allowlist YAML).
import { existsSync } from 'node:fs';
import {
  createResolver,
  createRoute,
  describeEndpoint,
  formatEndpoint,
  normalizeHost,
  Policy,
  ProxyError,
  systemLookup,
} from '@enclave-extras/proxy';
import { awsAllowlistSchema, loadConfigFile } from '@enclave-extras/proxy/config';
import { type Command, Option } from 'commander';
import {
  applyVsockDir,
  createLogger,
  exitWithError,
  intArg,
  runtimeOptions,
  UsageError,
} from '../common.js';

export const DEFAULT_ALLOWLIST = '/etc/nitro_enclaves/vsock-proxy.yaml';
/** Open connections at most (each holds two file descriptors); more are refused and counted. */
export const DEFAULT_MAX_CONNECTIONS = 4096;

interface VsockProxyOptions {
  ipv4?: boolean;
  ipv6?: boolean;
  num_workers?: string;
  config?: string;
  maxConnections: string;
  connectTimeout: string;
  idleTimeout: string;
  drainTimeout: string;
  logLevel: string;
  vsockDir?: string;
}

export function register(program: Command): void {
  runtimeOptions(
    program
      .command('vsock-proxy')
      .description(
        "Drop-in for AWS vsock-proxy: listen on vsock port LOCAL_PORT (any CID) and forward each connection to REMOTE_ADDR:REMOTE_PORT over TCP, if AWS's allowlist YAML (allowlist: [{address, port}]) allows it. The allowlist is checked at start and again on every connection against the addresses actually dialled.",
      )
      .argument('<local_port>', 'vsock port to listen on')
      .argument('<remote_addr>', 'host name or IP address to forward to')
      .argument('<remote_port>', 'TCP port to forward to')
      .addOption(new Option('-4, --ipv4', 'use IPv4 addresses only').conflicts('ipv6'))
      .addOption(new Option('-6, --ipv6', 'use IPv6 addresses only').conflicts('ipv4'))
      .option(
        '-w, --num_workers <n>',
        'accepted for AWS compatibility; connections are served concurrently without worker threads (see --max-connections)',
      )
      .option('--config <file>', `allowlist YAML (default ${DEFAULT_ALLOWLIST})`)
      .option(
        '--max-connections <n>',
        'refuse connections beyond N open ones (each holds two file descriptors; there is no unlimited)',
        String(DEFAULT_MAX_CONNECTIONS),
      )
      .option('--connect-timeout <ms>', 'per-attempt TCP connect timeout', '10000')
      .option(
        '--idle-timeout <ms>',
        'close connections idle this long in both directions (0 = never)',
        '0',
      )
      .option('--drain-timeout <ms>', 'on SIGTERM, how long open connections may finish', '30000'),
  )
    .addHelpText(
      'after',
      `\nExamples:\n  ee-parent vsock-proxy 8000 kms.us-east-1.amazonaws.com 443\n  ee-parent vsock-proxy 8000 kms.us-east-1.amazonaws.com 443 --config ./vsock-proxy.yaml\n\nExit codes: 0 drained after SIGTERM/SIGINT, 1 runtime failure (vsock listen failed), 2 usage or config error (bad argument, allowlist missing or invalid, REMOTE_ADDR:REMOTE_PORT not in the allowlist).`,
    )
    .action(
      async (
        localPort: string,
        remoteAddr: string,
        remotePort: string,
        opts: VsockProxyOptions,
      ) => {
        let log: ReturnType<typeof createLogger> | undefined;
        try {
          log = createLogger(opts.logLevel, 'ee-parent');
          applyVsockDir(opts.vsockDir);
          await vsockProxy(localPort, remoteAddr, remotePort, opts, log);
        } catch (err) {
          exitWithError(err, log);
        }
      },
    );
}

async function vsockProxy(
  localPortText: string,
  remoteAddr: string,
  remotePortText: string,
  opts: VsockProxyOptions,
  log: ReturnType<typeof createLogger>,
): Promise<void> {
  const localPort = intArg('local_port', localPortText, 0, 0xffffffff);
  const remotePort = intArg('remote_port', remotePortText, 1, 65535);
  if (opts.num_workers !== undefined) intArg('--num_workers', opts.num_workers, 1, 1_000_000);
  const maxConnections = intArg('--max-connections', opts.maxConnections, 1, 10_000_000);
  const connectTimeoutMs = intArg('--connect-timeout', opts.connectTimeout, 0, 3_600_000);
  const idleTimeoutMs = intArg('--idle-timeout', opts.idleTimeout, 0, 86_400_000);
  const drainTimeoutMs = intArg('--drain-timeout', opts.drainTimeout, 0, 86_400_000);
  const family = opts.ipv4 ? 4 : opts.ipv6 ? 6 : undefined;

  const configPath = opts.config ?? DEFAULT_ALLOWLIST;
  if (opts.config === undefined && !existsSync(configPath)) {
    throw new UsageError(
      `The default allowlist ${DEFAULT_ALLOWLIST} does not exist. Pass --config FILE with an AWS vsock-proxy allowlist (allowlist: [{address: HOST, port: PORT}]), or install the Nitro Enclaves CLI's default file.`,
    );
  }
  const allowlist = await loadConfigFile(configPath, awsAllowlistSchema);
  const policy = Policy.fromAwsAllowlist(allowlist);

  const host = normalizeHost(remoteAddr.replace(/^\[(.*)\]$/, '$1'));
  const literalFamily = host.includes(':') ? 6 : /^\d+\.\d+\.\d+\.\d+$/.test(host) ? 4 : undefined;
  if (family && literalFamily && literalFamily !== family) {
    throw new UsageError(
      `remote_addr ${remoteAddr} is an IPv${literalFamily} address but -${family} asks for IPv${family} only.`,
    );
  }
  const resolver = createResolver({
    lookup: async (name) => {
      const r = await systemLookup(name);
      return family ? { ...r, addresses: r.addresses.filter((a) => a.family === family) } : r;
    },
  });

  // Start-up check like AWS's: the target must be in the allowlist. A name that cannot be
  // resolved now is checked again on each connection (a DNS failure never stops the proxy).
  const pre = policy.precheck(host, remotePort);
  let decision = pre;
  if (!decision) {
    try {
      const addrs = await resolver.resolve(host);
      decision = policy.check(
        host,
        remotePort,
        addrs.map((a) => a.address),
      );
    } catch (err) {
      log.warn(
        { remote: remoteAddr, err: (err as Error).message },
        'cannot resolve the remote address now; the allowlist is checked on each connection',
      );
    }
  }
  if (decision && !decision.allowed && decision.code === 'ERR_PROXY_UNSPECIFIED_ADDRESS') {
    throw new ProxyError(
      'ERR_CONFIG_INVALID',
      `${remoteAddr}:${remotePort} is refused whatever ${configPath} says (ERR_PROXY_UNSPECIFIED_ADDRESS): ${decision.reason}. Give the address of the service to forward to.`,
      { address: `${remoteAddr}:${remotePort}`, details: { refusal: decision.code } },
    );
  }
  if (decision && !decision.allowed) {
    throw new ProxyError(
      'ERR_CONFIG_INVALID',
      `${remoteAddr}:${remotePort} is not allowed by ${configPath} (${decision.reason}). Add "- {address: ${remoteAddr}, port: ${remotePort}}" to its allowlist.`,
      { address: `${remoteAddr}:${remotePort}` },
    );
  }

  const route = createRoute({
    name: 'vsock-proxy',
    listen: { kind: 'vsock', cid: 0xffffffff, port: localPort },
    dial: { kind: 'tcp', host, port: remotePort },
    policy,
    resolver,
    connectTimeoutMs,
    idleTimeoutMs,
    maxConnections,
    logger: log,
  });
  await route.start();
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      route.close({ drain: false }).finally(() => process.exit(0));
      return;
    }
    stopping = true;
    log.info({ signal, timeoutMs: drainTimeoutMs }, 'draining');
    route
      .close({ drain: true, timeoutMs: drainTimeoutMs })
      .then(() => process.exit(0))
      .catch((err: unknown) => exitWithError(err, log));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Logged last: once a supervisor sees 'ready', the signal handlers are in place.
  log.info(
    {
      listen: describeEndpoint(route.endpoint),
      listenEndpoint: formatEndpoint(route.endpoint),
      remote: `${remoteAddr}:${remotePort}`,
      config: configPath,
      maxConnections,
      ...(opts.num_workers ? { numWorkers: Number(opts.num_workers) } : {}),
    },
    'ready',
  );
}
