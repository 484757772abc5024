// ee-parent kms-local: serves the local attested KMS (@enclave-extras/kms/local) for
// development and tests, from flags or a YAML file (flags win). Prints
// `kms-local listening on <endpoint>` on stdout once ready.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createLocalKms, type LocalKmsCredential } from '@enclave-extras/kms/local';
import { strictPort } from '@enclave-extras/proxy';
import { loadConfigFile } from '@enclave-extras/proxy/config';
import { type Command, Option } from 'commander';
import pino from 'pino';
import { z } from 'zod';
import { LOG_LEVELS } from '../common.js';

/** kms-local.yaml; relative paths are relative to the file. */
export const kmsLocalConfigSchema = z.strictObject({
  dataDir: z.string().min(1),
  listen: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(4599),
    })
    .default({ host: '127.0.0.1', port: 4599 }),
  region: z
    .string()
    .regex(/^[a-z0-9-]+$/)
    .default('us-east-1'),
  accountId: z
    .string()
    .regex(/^\d{12}$/, 'accountId must be 12 digits (quote it in YAML)')
    .default('111122223333'),
  roots: z.array(z.string().min(1)).default([]),
  credentials: z
    .array(
      z.strictObject({
        accessKeyId: z.string().min(1),
        secretAccessKey: z.string().min(1),
        sessionToken: z.string().min(1).optional(),
        principal: z.string().startsWith('arn:').optional(),
      }),
    )
    .default([]),
  tls: z.strictObject({ key: z.string().min(1), cert: z.string().min(1) }).optional(),
  maxAttestationAgeSeconds: z.number().positive().default(300),
  allowDebug: z.boolean().default(false),
});

interface KmsLocalFlags {
  config?: string;
  dataDir?: string;
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
  insecureAcceptUnsignedQemuAttestation: boolean;
  logLevel: string;
}

function usage(cmd: Command, message: string, code = 'ERR_USAGE'): never {
  return cmd.error(`ee-parent: ${code}: ${message}`, { exitCode: 2, code });
}

/** Every block of a --root-pem file must be an X.509 certificate, and there must be one. */
function checkRootPem(cmd: Command, path: string, text: string): string {
  const blocks = text.match(/-----BEGIN [^-]+-----[\s\S]*?-----END [^-]+-----/g) ?? [];
  if (blocks.length === 0) {
    usage(
      cmd,
      `--root-pem ${path} holds no PEM block: give the attestation root certificate (-----BEGIN CERTIFICATE-----, e.g. nsm-simulator --print-root)`,
    );
  }
  for (const b of blocks) {
    try {
      if (!b.startsWith('-----BEGIN CERTIFICATE-----')) throw new Error(b.split('\n', 1)[0]);
      new X509Certificate(b);
    } catch (err) {
      usage(
        cmd,
        `--root-pem ${path} is not a certificate (${(err as Error).message}): give the attestation root certificate in PEM`,
      );
    }
  }
  return text;
}

function readFileFor(cmd: Command, what: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    return usage(cmd, `${what} ${path}: ${(err as Error).message}`);
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
    .option('-c, --config <file>', 'kms-local.yaml (flags given on the command line win)')
    .option('--data-dir <dir>', 'directory the keys persist in (created 0700)')
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
    .option(
      '--insecure-accept-unsigned-qemu-attestation',
      "INSECURE, local development only: also accept the UNSIGNED attestation documents of QEMU's nitro-enclave machine (ee-parent run-enclave); anyone reaching this KMS can then claim any PCRs",
      false,
    )
    .option('--log-level <level>', 'pino level (stderr)', 'info')
    .addHelpText(
      'after',
      `
Example:
  ee-parent kms-local --data-dir ./kms-data --port 4599 --root-pem nsm-sim/root.pem \\
    --access-key-id AKIDLOCAL --secret-access-key local-secret

kms-local.yaml (paths relative to the file):
  dataDir: ./kms-data
  listen: { host: 127.0.0.1, port: 4599 }
  region: us-east-1
  accountId: "111122223333"
  roots: [nsm-root.pem]
  credentials:
    - { accessKeyId: AKIDPARENT, secretAccessKey: parent-secret }
    - { accessKeyId: AKIDENCLAVE, secretAccessKey: enclave-secret, principal: "arn:aws:iam::111122223333:role/enclave" }
  maxAttestationAgeSeconds: 300

Exit codes: 0 stopped by SIGINT/SIGTERM, 1 runtime failure (e.g. EADDRINUSE), 2 usage or config error.`,
    )
    .action(async (flags: KmsLocalFlags, cmd: Command) => {
      const fromCli = (name: string) => {
        const src = cmd.getOptionValueSource(name);
        return src === 'cli' || src === 'env';
      };
      let file: z.output<typeof kmsLocalConfigSchema> | undefined;
      let base = process.cwd();
      if (flags.config) {
        try {
          file = await loadConfigFile(flags.config, kmsLocalConfigSchema);
        } catch (err) {
          const e = err as { code?: string; message?: string };
          usage(cmd, e.message ?? String(err), e.code ?? 'ERR_CONFIG_INVALID');
        }
        base = dirname(resolve(flags.config));
      }
      const pick = <T>(name: string, flag: T, fromFile: T | undefined): T =>
        fromCli(name) || fromFile === undefined ? flag : fromFile;

      const dataDir = fromCli('dataDir')
        ? flags.dataDir
        : file
          ? resolve(base, file.dataDir)
          : flags.dataDir;
      if (!dataDir)
        usage(
          cmd,
          '--data-dir (or dataDir in --config) is required: the directory the keys persist in',
        );
      if (!(LOG_LEVELS as ReadonlyArray<string>).includes(flags.logLevel)) {
        usage(cmd, `--log-level "${flags.logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
      }
      const port = strictPort(pick('port', flags.port, file?.listen.port.toString()));
      if (port === undefined) {
        usage(cmd, `--port "${flags.port}" is not a TCP port: write a decimal integer 0-65535`);
      }
      const host = pick('host', flags.host, file?.listen.host);
      const maxAge = Number(
        pick(
          'maxAttestationAge',
          flags.maxAttestationAge,
          file?.maxAttestationAgeSeconds.toString(),
        ),
      );
      if (!Number.isFinite(maxAge) || maxAge <= 0) {
        usage(
          cmd,
          `--max-attestation-age ${flags.maxAttestationAge} must be a positive number of seconds`,
        );
      }
      const credentials: LocalKmsCredential[] = [...(file?.credentials ?? [])];
      if (flags.accessKeyId || flags.secretAccessKey) {
        if (!flags.accessKeyId || !flags.secretAccessKey) {
          usage(cmd, '--access-key-id and --secret-access-key go together');
        }
        credentials.unshift({
          accessKeyId: flags.accessKeyId,
          secretAccessKey: flags.secretAccessKey,
        });
      }
      if (credentials.length === 0) {
        usage(
          cmd,
          'give --access-key-id and --secret-access-key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or credentials in --config): the credentials clients sign with',
        );
      }
      if ((flags.tlsKey === undefined) !== (flags.tlsCert === undefined)) {
        usage(cmd, '--tls-key and --tls-cert go together');
      }
      const rootFiles = [...(file?.roots ?? []).map((r) => resolve(base, r)), ...flags.rootPem];
      const roots = rootFiles.map((f) => checkRootPem(cmd, f, readFileFor(cmd, '--root-pem', f)));
      const tlsFiles =
        flags.tlsKey && flags.tlsCert
          ? { key: flags.tlsKey, cert: flags.tlsCert }
          : file?.tls
            ? { key: resolve(base, file.tls.key), cert: resolve(base, file.tls.cert) }
            : undefined;
      const tls = tlsFiles
        ? {
            key: readFileFor(cmd, 'tls key', tlsFiles.key),
            cert: readFileFor(cmd, 'tls cert', tlsFiles.cert),
          }
        : undefined;

      const logger = pino({ name: 'kms-local', level: flags.logLevel }, pino.destination(2));
      let kms: Awaited<ReturnType<typeof createLocalKms>>;
      try {
        kms = await createLocalKms({
          dataDir,
          roots,
          region: pick('region', flags.region, file?.region),
          accountId: pick('accountId', flags.accountId, file?.accountId),
          credentials,
          attestationMaxAgeMs: maxAge * 1000,
          allowDebugEnclaves: fromCli('allowDebug')
            ? flags.allowDebug
            : (file?.allowDebug ?? false),
          insecureAcceptUnsignedQemuAttestation:
            flags.insecureAcceptUnsignedQemuAttestation === true,
          logger,
          ...(tls ? { tls } : {}),
        });
      } catch (err) {
        const e = err as { code?: string; message?: string };
        if (e.code === 'ERR_KMS_LOCAL_CONFIG') usage(cmd, e.message ?? String(err), e.code);
        throw err;
      }
      const endpoint = await kms.listen({ port, host });
      process.stdout.write(`kms-local listening on ${endpoint}\n`);
      await new Promise<void>((done) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          kms.close().then(done, done);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });
}
