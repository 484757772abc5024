// ee-parent credentials-relay: serves this instance's AWS credentials (any AWS SDK provider
// chain: IMDSv2 role credentials on EC2, environment, profile ...) to the enclave over a vsock
// port, one JSON answer per connection, refreshed before expiry. The enclave reads them with
// `fromParentInstance({ port })` from @enclave-extras/kms, or `ee-enclave kms --credentials parent:PORT`.
import { createCredentialsRelay } from '@enclave-extras/kms';
import type { Command } from 'commander';
import { applyVsockDir, createLogger, exitWithError, intArg, runtimeOptions } from '../common.js';

interface RelayFlags {
  port: string;
  cid?: string;
  region?: string;
  refreshBefore: string;
  logLevel: string;
  vsockDir?: string;
}

export function register(program: Command): void {
  runtimeOptions(
    program
      .command('credentials-relay')
      .description(
        "Serve this instance's AWS credentials (AWS SDK default provider chain: env, profile, IMDSv2 role) to the enclave over a vsock port, refreshed before they expire.",
      )
      .option('--port <n>', 'vsock port to listen on', '8002')
      .option('--cid <n>', 'vsock CID to bind (default: any)')
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
      '\nAnyone who can connect to the port gets the credentials: on a Nitro host only enclaves (and the parent) reach vsock ports.\nExit codes: 0 stopped by SIGINT/SIGTERM, 1 runtime failure (e.g. the port is taken), 2 usage error.',
    )
    .action(async (flags: RelayFlags) => {
      let log: ReturnType<typeof createLogger> | undefined;
      try {
        log = createLogger(flags.logLevel, 'ee-parent');
        applyVsockDir(flags.vsockDir);
        const port = intArg('--port', flags.port, 0, 0xffffffff);
        const cid = flags.cid === undefined ? undefined : intArg('--cid', flags.cid, 0, 0xffffffff);
        const refresh = intArg('--refresh-before', flags.refreshBefore, 0, 86_400);
        const region = flags.region ?? process.env.AWS_REGION;
        const relay = await createCredentialsRelay({
          listen: { port, ...(cid !== undefined ? { cid } : {}) },
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
        log.info({ served: relay.served }, 'credentials relay stopped');
      } catch (err) {
        exitWithError(err, log);
      }
    });
}
