// ee-parent kms-local: serves the local attested KMS (@enclave-extras/kms/local) for
// development and tests. Prints `kms-local listening on <endpoint>` on stdout once ready.
import { readFileSync } from 'node:fs';
import { createLocalKms, type LocalKmsCredential } from '@enclave-extras/kms/local';
import { type Command, Option } from 'commander';
import pino from 'pino';

interface KmsLocalFlags {
  dataDir: string;
  port: string;
  host: string;
  region: string;
  accountId: string;
  rootPem: string[];
  accessKeyId?: string;
  secretAccessKey?: string;
  tlsKey?: string;
  tlsCert?: string;
  maxAttestationAge: string;
  allowDebug: boolean;
  logLevel: string;
}

function readFileFor(cmd: Command, flag: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    return cmd.error(`ee-parent kms-local: ${flag} ${path}: ${(err as Error).message}`, {
      exitCode: 2,
      code: 'ERR_USAGE',
    });
  }
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function register(program: Command): void {
  program
    .command('kms-local')
    .description(
      'Serve a local attested KMS (KMS JSON 1.1 over HTTP(S)): SigV4-checked, keys persisted in --data-dir, Recipient attestation documents verified against --root-pem.',
    )
    .requiredOption('--data-dir <dir>', 'directory the keys persist in (created 0700)')
    .option('--port <n>', 'TCP port (0 = ephemeral)', '4599')
    .option('--host <addr>', 'listen address (keep it on loopback)', '127.0.0.1')
    .option('--region <region>', 'region of ARNs and the SigV4 scope', 'us-east-1')
    .option('--account-id <id>', 'account id of ARNs', '111122223333')
    .option(
      '--root-pem <file>',
      'trusted attestation root certificate (PEM), repeatable',
      collect,
      [],
    )
    .addOption(
      new Option('--access-key-id <id>', 'accepted SigV4 access key id').env('AWS_ACCESS_KEY_ID'),
    )
    .addOption(
      new Option('--secret-access-key <secret>', 'its secret').env('AWS_SECRET_ACCESS_KEY'),
    )
    .option('--tls-key <file>', 'serve HTTPS with this private key (PEM)')
    .option('--tls-cert <file>', 'and this certificate (PEM)')
    .option('--max-attestation-age <seconds>', 'oldest accepted attestation document', '300')
    .option('--allow-debug', 'accept debug-mode enclave documents (PCR0-2 zero)', false)
    .option('--log-level <level>', 'pino level (stderr)', 'info')
    .addHelpText(
      'after',
      '\nExample:\n  ee-parent kms-local --data-dir ./kms-data --port 4599 --root-pem nsm-sim/root.pem \\\n    --access-key-id AKIDLOCAL --secret-access-key local-secret\n\nExit codes: 0 stopped by SIGINT/SIGTERM, 1 runtime failure, 2 usage error.',
    )
    .action(async (flags: KmsLocalFlags, cmd: Command) => {
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        cmd.error(`ee-parent kms-local: --port ${flags.port} is not a TCP port (0-65535)`, {
          exitCode: 2,
          code: 'ERR_USAGE',
        });
      }
      const maxAge = Number(flags.maxAttestationAge);
      if (!Number.isFinite(maxAge) || maxAge <= 0) {
        cmd.error(
          `ee-parent kms-local: --max-attestation-age ${flags.maxAttestationAge} must be a positive number of seconds`,
          {
            exitCode: 2,
            code: 'ERR_USAGE',
          },
        );
      }
      if (!flags.accessKeyId || !flags.secretAccessKey) {
        cmd.error(
          'ee-parent kms-local: give --access-key-id and --secret-access-key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): the credentials clients sign with',
          { exitCode: 2, code: 'ERR_USAGE' },
        );
      }
      if ((flags.tlsKey === undefined) !== (flags.tlsCert === undefined)) {
        cmd.error('ee-parent kms-local: --tls-key and --tls-cert go together', {
          exitCode: 2,
          code: 'ERR_USAGE',
        });
      }
      const roots = flags.rootPem.map((f) => readFileFor(cmd, '--root-pem', f));
      const credentials: LocalKmsCredential[] = [
        { accessKeyId: flags.accessKeyId!, secretAccessKey: flags.secretAccessKey! },
      ];
      const logger = pino({ name: 'kms-local', level: flags.logLevel }, pino.destination(2));
      const kms = await createLocalKms({
        dataDir: flags.dataDir,
        roots,
        region: flags.region,
        accountId: flags.accountId,
        credentials,
        attestationMaxAgeMs: maxAge * 1000,
        allowDebugEnclaves: flags.allowDebug,
        logger,
        ...(flags.tlsKey && flags.tlsCert
          ? {
              tls: {
                key: readFileFor(cmd, '--tls-key', flags.tlsKey),
                cert: readFileFor(cmd, '--tls-cert', flags.tlsCert),
              },
            }
          : {}),
      });
      const endpoint = await kms.listen({ port, host: flags.host });
      process.stdout.write(`kms-local listening on ${endpoint}\n`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          kms.close().then(resolve, resolve);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });
}
