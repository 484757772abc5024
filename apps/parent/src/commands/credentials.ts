// ee-parent credentials-relay: serves this instance's AWS credentials (any AWS SDK provider
// chain: IMDSv2 role credentials on EC2, environment, profile ...) to the enclaves it is told
// about (--enclave-cid) over a vsock port, one JSON answer per connection, refreshed before
// expiry. The enclave reads them with `fromParentInstance({ port })` from @enclave-extras/kms,
// or `ee-enclave kms --credentials parent:PORT`.
import { createCredentialsRelay } from '@enclave-extras/kms';
import type { Command } from 'commander';
import {
  applyVsockDir,
  createLogger,
  exitWithError,
  intArg,
  runtimeOptions,
  UsageError,
} from '../common.js';

interface RelayFlags {
  port: string;
  cid?: string;
  enclaveCid: string[];
  allowAnyCid: boolean;
  timeout: string;
  region?: string;
  refreshBefore: string;
  logLevel: string;
  vsockDir?: string;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** `--enclave-cid 16 --enclave-cid 17,18` -> [16, 17, 18], or 'any' with --allow-any-cid. */
function allowList(flags: RelayFlags): number[] | 'any' {
  if (flags.allowAnyCid && flags.enclaveCid.length > 0) {
    throw new UsageError(
      '--allow-any-cid and --enclave-cid exclude each other: list the enclave CIDs, or serve every peer.',
    );
  }
  if (flags.allowAnyCid) return 'any';
  if (flags.enclaveCid.length === 0) {
    throw new UsageError(
      'give --enclave-cid CID for each enclave that may fetch the credentials (the CID of nitro-cli run-enclave --enclave-cid), or --allow-any-cid to serve every peer that reaches the port.',
    );
  }
  const cids = flags.enclaveCid
    .flatMap((v) => v.split(','))
    .map((v) => intArg('--enclave-cid', v.trim(), 0, 0xfffffffe));
  return [...new Set(cids)];
}

export function register(program: Command): void {
  runtimeOptions(
    program
      .command('credentials-relay')
      .description(
        "Serve this instance's AWS credentials (AWS SDK default provider chain: env, profile, IMDSv2 role) over a vsock port to the enclave CIDs given, refreshed before they expire.",
      )
      .option('--port <n>', 'vsock port to listen on', '8002')
      .option('--cid <n>', 'vsock CID to bind (default: any)')
      .option(
        '--enclave-cid <cid>',
        'peer CID allowed to fetch credentials (repeat or comma-separate; required unless --allow-any-cid)',
        collect,
        [] as string[],
      )
      .option(
        '--allow-any-cid',
        'serve every peer CID that reaches the port (explicit opt-in)',
        false,
      )
      .option(
        '--timeout <ms>',
        'close each connection this long after accepting it, answered or not',
        '5000',
      )
      .option(
        '--region <region>',
        'region handed to the enclave with the credentials (default: AWS_REGION)',
      )
      .option(
        '--refresh-before <seconds>',
        'fetch new credentials when these expire within this',
        '300',
      ),
  )
    .addHelpText(
      'after',
      '\nOnly the peer CIDs given with --enclave-cid get credentials; any other peer is answered PeerNotAllowed. Every hand-out and refusal is logged with the peer (vm(16):1234). Anything that reaches the port from an allowed CID gets the credentials: every process in that enclave.\nExit codes: 0 stopped by SIGINT/SIGTERM, 1 runtime failure (e.g. the port is taken), 2 usage error.',
    )
    .action(async (flags: RelayFlags) => {
      let log: ReturnType<typeof createLogger> | undefined;
      try {
        log = createLogger(flags.logLevel, 'ee-parent');
        applyVsockDir(flags.vsockDir);
        const port = intArg('--port', flags.port, 0, 0xffffffff);
        const cid = flags.cid === undefined ? undefined : intArg('--cid', flags.cid, 0, 0xffffffff);
        const allowCids = allowList(flags);
        const timeout = intArg('--timeout', flags.timeout, 1, 0x7fffffff);
        const refresh = intArg('--refresh-before', flags.refreshBefore, 0, 86_400);
        const region = flags.region ?? process.env.AWS_REGION;
        const relay = await createCredentialsRelay({
          listen: { port, ...(cid !== undefined ? { cid } : {}) },
          allowCids,
          connectionTimeoutMs: timeout,
          refreshBeforeExpiryMs: refresh * 1000,
          ...(region ? { region } : {}),
          logger: log,
        });
        process.stdout.write(`credentials-relay listening on ${relay.address}\n`);
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
        await relay.close();
        log.info(
          { served: relay.served, refused: relay.refused, timedOut: relay.timedOut },
          'credentials relay stopped',
        );
      } catch (err) {
        exitWithError(err, log);
      }
    });
}
