// ee-enclave kms encrypt|decrypt|generate-data-key|generate-data-key-pair|generate-random|create-key:
// AWS KMS from inside the enclave. Decrypt, GenerateDataKey(Pair) and GenerateRandom carry an
// attestation document from --nsm (unless --no-attest) and come back decrypted from
// CiphertextForRecipient. Connections go through the egress gateway when HTTPS_PROXY is set
// (ee-enclave run sets it) or --proxy is given.
import { readFileSync, writeFileSync } from 'node:fs';
import type { DataKeyPairSpec, DataKeySpec, KMSClient, KMSClientConfig } from '@aws-sdk/client-kms';
import type { NsmClient } from '@enclave-extras/nsm';
import { type Command, Option } from 'commander';
import { checkNsmSource, collect, nsmOption, openNsm, parseBytes, usage, writeOut } from './nsm.js';

/** The AWS SDK and the toolkit load when a kms command runs, not for `--help` (start-up). */
type Sdk = typeof import('@aws-sdk/client-kms');
const sdk = (): Promise<Sdk> => import('@aws-sdk/client-kms');
const kmsLib = () => import('@enclave-extras/kms');
const proxyLib = () => import('@enclave-extras/proxy');

const DATA_KEY_SPECS: ReadonlyArray<DataKeySpec> = ['AES_256', 'AES_128'];
const DATA_KEY_PAIR_SPECS: ReadonlyArray<DataKeyPairSpec> = [
  'RSA_2048',
  'RSA_3072',
  'RSA_4096',
  'ECC_NIST_P256',
  'ECC_NIST_P384',
  'ECC_NIST_P521',
  'ECC_SECG_P256K1',
];

/** Checks a flag against the SDK's own union of allowed values. */
function oneOf<T extends string>(
  cmd: Command,
  flag: string,
  v: string,
  allowed: ReadonlyArray<T>,
): T {
  if (!(allowed as ReadonlyArray<string>).includes(v))
    usage(cmd, `kms ${cmd.name()}: ${flag} ${v} must be one of ${allowed.join(', ')}`);
  return v as T;
}

interface CommonFlags {
  endpoint?: string;
  region?: string;
  proxy?: string;
  ca?: string;
  credentials: string;
  attest: boolean;
  nsm: string;
  output: 'base64' | 'hex' | 'raw';
  out?: string;
  json: boolean;
}

function common(cmd: Command, attested: boolean): Command {
  cmd
    .addOption(
      new Option('--endpoint <url>', "KMS endpoint (default: the region's)").env(
        'AWS_ENDPOINT_URL_KMS',
      ),
    )
    .addOption(new Option('--region <region>', 'AWS region').env('AWS_REGION'))
    .addOption(
      new Option('--proxy <url>', 'HTTP CONNECT proxy to dial through (the egress gateway)').env(
        'HTTPS_PROXY',
      ),
    )
    .option('--ca <pem>', 'extra trusted CA certificate (PEM file) for the endpoint')
    .option(
      '--credentials <source>',
      "parent:PORT (the parent's credentials relay over vsock) or env (the SDK default chain)",
      'env',
    )
    .addOption(
      new Option('--output <format>', 'byte output')
        .choices(['base64', 'hex', 'raw'])
        .default('base64'),
    )
    .option('--out <file>', 'write the main byte output to this file instead of stdout')
    .option('--json', 'print every output field as JSON (bytes base64)', false);
  if (attested) {
    cmd
      .addOption(nsmOption())
      .option('--no-attest', 'send without Recipient (KMS returns Plaintext)');
  }
  return cmd;
}

function context(cmd: Command, entries: string[]): Record<string, string> | undefined {
  if (entries.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const e of entries) {
    const i = e.indexOf('=');
    if (i <= 0) usage(cmd, `--context ${e} must be KEY=VALUE`);
    out[e.slice(0, i)] = e.slice(i + 1);
  }
  return out;
}

/** The usage checks of the common flags: all made before the NSM (or anything else) is opened. */
async function checkCommon(cmd: Command, flags: CommonFlags): Promise<void> {
  const { strictPort } = await proxyLib();
  if (!flags.region) usage(cmd, 'kms: --region (or AWS_REGION) is required');
  if (!['base64', 'hex', 'raw'].includes(flags.output))
    usage(cmd, `kms: --output ${flags.output} must be base64, hex or raw`);
  if (flags.credentials.startsWith('parent:')) {
    if (strictPort(flags.credentials.slice('parent:'.length), 0xffffffff) === undefined)
      usage(
        cmd,
        `kms: --credentials ${flags.credentials} must be parent:PORT (vsock port, decimal)`,
      );
  } else if (flags.credentials !== 'env') {
    usage(cmd, `kms: --credentials ${flags.credentials} must be env or parent:PORT`);
  }
  if (flags.nsm !== undefined) checkNsmSource(cmd, flags.nsm);
}

async function client(
  cmd: Command,
  flags: CommonFlags,
  nsm: NsmClient | undefined,
): Promise<KMSClient> {
  if (!flags.region) usage(cmd, 'kms: --region (or AWS_REGION) is required');
  if (!['base64', 'hex', 'raw'].includes(flags.output))
    usage(cmd, `kms: --output ${flags.output} must be base64, hex or raw`);
  const { KMSClient } = await sdk();
  const { AttestedKmsClient, createDialingRequestHandler, fromParentInstance } = await kmsLib();
  const { httpConnectDialer, strictPort } = await proxyLib();
  const config: KMSClientConfig = { region: flags.region, maxAttempts: 2 };
  if (flags.endpoint) config.endpoint = flags.endpoint;
  if (flags.credentials.startsWith('parent:')) {
    const port = strictPort(flags.credentials.slice('parent:'.length), 0xffffffff);
    if (port === undefined)
      usage(
        cmd,
        `kms: --credentials ${flags.credentials} must be parent:PORT (vsock port, decimal)`,
      );
    config.credentials = fromParentInstance({ port });
  } else if (flags.credentials !== 'env') {
    usage(cmd, `kms: --credentials ${flags.credentials} must be env or parent:PORT`);
  }
  let ca: string | undefined;
  if (flags.ca) {
    try {
      ca = readFileSync(flags.ca, 'utf8');
    } catch (err) {
      usage(cmd, `kms: --ca ${flags.ca}: ${(err as Error).message}`);
    }
  }
  const connect = flags.proxy ? httpConnectDialer(flags.proxy) : undefined;
  if (nsm) {
    return new AttestedKmsClient({
      ...config,
      attestation: { nsm },
      ...(connect ? { connect } : {}),
      ...(connect && ca ? { ca } : {}),
    });
  }
  if (connect) {
    config.requestHandler = createDialingRequestHandler({ connect, ...(ca ? { ca } : {}) });
  }
  return new KMSClient(config);
}

function encode(bytes: Uint8Array, format: CommonFlags['output']): string | Buffer {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return format === 'raw' ? b : b.toString(format);
}

function emit(
  flags: CommonFlags,
  main: Uint8Array | undefined,
  all: { $metadata?: unknown },
): void {
  if (flags.out && main) writeFileSync(flags.out, main, { mode: 0o600 });
  if (flags.json) {
    const { $metadata: _m, ...fields } = all;
    writeOut(
      Object.fromEntries(
        Object.entries(fields).map(([k, v]) => [
          k,
          v instanceof Uint8Array
            ? Buffer.from(v).toString('base64')
            : v instanceof Date
              ? v.toISOString()
              : v,
        ]),
      ),
      true,
    );
    return;
  }
  if (flags.out || !main) return;
  const text = encode(main, flags.output);
  if (typeof text === 'string') process.stdout.write(`${text}\n`);
  else process.stdout.write(text);
}

/** Runs one KMS call with the NSM opened (when attested) and closed afterwards. */
async function call<O>(
  cmd: Command,
  flags: CommonFlags,
  attested: boolean,
  send: (c: KMSClient, sdk: Sdk) => Promise<O>,
): Promise<O> {
  await checkCommon(cmd, flags);
  const aws = await sdk();
  const nsm = attested && flags.attest ? await openNsm(cmd, flags.nsm) : undefined;
  try {
    const c = await client(cmd, flags, nsm);
    try {
      return await send(c, aws);
    } catch (err) {
      // KMS answers (AccessDeniedException ...) carry their type in `name`: keep it visible.
      const e = err as { name?: string; message?: string; $metadata?: unknown };
      if (e.$metadata !== undefined && e.name) {
        process.stderr.write(`ee-enclave kms ${cmd.name()}: ${e.name}: ${e.message ?? ''}\n`);
        process.exit(1);
      }
      throw err;
    } finally {
      c.destroy();
    }
  } finally {
    await nsm?.close();
  }
}

function intFlag(
  cmd: Command,
  flag: string,
  v: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (v === undefined) return undefined;
  const n = /^[0-9]{1,16}$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isInteger(n) || n < min || n > max)
    usage(cmd, `kms: ${flag} ${v} must be an integer ${min}..${max}`);
  return n;
}

export function register(program: Command): void {
  const kms = program
    .command('kms')
    .description(
      'AWS KMS from the enclave, attested (Recipient + CiphertextForRecipient) where KMS supports it.',
    )
    .addHelpText(
      'after',
      '\nByte inputs take hex:..., base64:..., file:PATH or plain text. Exit codes: 0 ok, 1 KMS/NSM/network failure (the error name says which), 2 usage error.',
    );

  common(
    kms
      .command('encrypt')
      .description(
        'Encrypt up to 4096 bytes under a key (no attestation: KMS takes none for Encrypt).',
      )
      .requiredOption('--key-id <id>', 'key id, ARN or alias')
      .requiredOption('--plaintext <bytes>', 'what to encrypt')
      .option('--context <k=v>', 'encryption context entry, repeatable', collect, []),
    false,
  ).action(
    async (
      flags: CommonFlags & { keyId: string; plaintext: string; context: string[] },
      cmd: Command,
    ) => {
      const plaintext = parseBytes(cmd, '--plaintext', flags.plaintext);
      const ec = context(cmd, flags.context);
      const out = await call(cmd, flags, false, (c, aws) =>
        c.send(
          new aws.EncryptCommand({
            KeyId: flags.keyId,
            Plaintext: plaintext,
            ...(ec ? { EncryptionContext: ec } : {}),
          }),
        ),
      );
      emit(flags, out.CiphertextBlob, out);
    },
  );

  common(
    kms
      .command('decrypt')
      .description('Decrypt a CiphertextBlob, attested by default.')
      .requiredOption(
        '--ciphertext <bytes>',
        'the CiphertextBlob (e.g. base64:... or file:blob.bin)',
      )
      .option('--key-id <id>', 'expected key')
      .option('--context <k=v>', 'encryption context entry, repeatable', collect, []),
    true,
  ).action(
    async (
      flags: CommonFlags & { ciphertext: string; keyId?: string; context: string[] },
      cmd: Command,
    ) => {
      const blob = parseBytes(cmd, '--ciphertext', flags.ciphertext);
      const ec = context(cmd, flags.context);
      const out = await call(cmd, flags, true, (c, aws) =>
        c.send(
          new aws.DecryptCommand({
            CiphertextBlob: blob,
            ...(flags.keyId ? { KeyId: flags.keyId } : {}),
            ...(ec ? { EncryptionContext: ec } : {}),
          }),
        ),
      );
      emit(flags, out.Plaintext, out);
    },
  );

  common(
    kms
      .command('generate-data-key')
      .description('A data key: Plaintext (attested) plus its CiphertextBlob (--json shows both).')
      .requiredOption('--key-id <id>', 'key id, ARN or alias')
      .option('--key-spec <spec>', 'AES_256 or AES_128 (default AES_256 unless --bytes)')
      .option('--bytes <n>', 'NumberOfBytes instead of --key-spec')
      .option('--context <k=v>', 'encryption context entry, repeatable', collect, []),
    true,
  ).action(
    async (
      flags: CommonFlags & { keyId: string; keySpec?: string; bytes?: string; context: string[] },
      cmd: Command,
    ) => {
      if (flags.keySpec && flags.bytes)
        usage(cmd, 'kms generate-data-key: give --key-spec or --bytes, not both');
      const n = intFlag(cmd, '--bytes', flags.bytes, 1, 1024);
      const keySpec = oneOf(cmd, '--key-spec', flags.keySpec ?? 'AES_256', DATA_KEY_SPECS);
      const ec = context(cmd, flags.context);
      const out = await call(cmd, flags, true, (c, aws) =>
        c.send(
          new aws.GenerateDataKeyCommand({
            KeyId: flags.keyId,
            ...(n !== undefined ? { NumberOfBytes: n } : { KeySpec: keySpec }),
            ...(ec ? { EncryptionContext: ec } : {}),
          }),
        ),
      );
      emit(flags, out.Plaintext, out);
    },
  );

  common(
    kms
      .command('generate-data-key-pair')
      .description(
        'A data key pair: PrivateKeyPlaintext (attested, DER PKCS#8), PublicKey, PrivateKeyCiphertextBlob.',
      )
      .requiredOption('--key-id <id>', 'key id, ARN or alias')
      .option('--key-pair-spec <spec>', DATA_KEY_PAIR_SPECS.join(', '), 'ECC_NIST_P256')
      .option('--context <k=v>', 'encryption context entry, repeatable', collect, []),
    true,
  ).action(
    async (
      flags: CommonFlags & { keyId: string; keyPairSpec: string; context: string[] },
      cmd: Command,
    ) => {
      const keyPairSpec = oneOf(cmd, '--key-pair-spec', flags.keyPairSpec, DATA_KEY_PAIR_SPECS);
      const ec = context(cmd, flags.context);
      const out = await call(cmd, flags, true, (c, aws) =>
        c.send(
          new aws.GenerateDataKeyPairCommand({
            KeyId: flags.keyId,
            KeyPairSpec: keyPairSpec,
            ...(ec ? { EncryptionContext: ec } : {}),
          }),
        ),
      );
      emit(flags, out.PrivateKeyPlaintext, out);
    },
  );

  common(
    kms
      .command('generate-random')
      .description('Random bytes from KMS (attested: only this enclave sees them).')
      .option('--bytes <n>', 'how many (1..1024)', '32'),
    true,
  ).action(async (flags: CommonFlags & { bytes: string }, cmd: Command) => {
    const n = intFlag(cmd, '--bytes', flags.bytes, 1, 1024)!;
    const out = await call(cmd, flags, true, (c, aws) =>
      c.send(new aws.GenerateRandomCommand({ NumberOfBytes: n })),
    );
    emit(flags, out.Plaintext, out);
  });

  common(
    kms
      .command('create-key')
      .description(
        "Create a symmetric key. --policy sets its key policy; --policy-from-nsm pins this enclave's PCR0 (and --pcr N) as kms:RecipientAttestation conditions.",
      )
      .option('--description <text>', 'key description')
      .option('--policy <file>', 'key policy JSON file')
      .option('--policy-from-nsm', 'generate the policy from the live PCRs of --nsm', false)
      .option('--account-id <id>', 'account id for the generated policy')
      .option('--pcr <n>', 'also pin PCR N (with --policy-from-nsm), repeatable', collect, [])
      .addOption(nsmOption()),
    false,
  ).action(
    async (
      flags: CommonFlags & {
        description?: string;
        policy?: string;
        policyFromNsm: boolean;
        accountId?: string;
        pcr: string[];
      },
      cmd: Command,
    ) => {
      await checkCommon(cmd, flags);
      if (flags.policy && flags.policyFromNsm)
        usage(cmd, 'kms create-key: give --policy or --policy-from-nsm, not both');
      let policy: string | undefined;
      if (flags.policy) {
        try {
          policy = readFileSync(flags.policy, 'utf8');
        } catch (err) {
          usage(cmd, `kms create-key: --policy ${flags.policy}: ${(err as Error).message}`);
        }
      } else if (flags.policyFromNsm) {
        if (!flags.accountId) usage(cmd, 'kms create-key: --policy-from-nsm needs --account-id');
        const indexes = flags.pcr.map((p) => intFlag(cmd, '--pcr', p, 0, 31)!);
        const nsm = await openNsm(cmd, flags.nsm);
        try {
          const pcrs: Record<number, Uint8Array> = {};
          for (const i of indexes) pcrs[i] = (await nsm.describePcr(i)).data;
          const pcr0 = (await nsm.describePcr(0)).data;
          policy = JSON.stringify(
            (await kmsLib()).recipientAttestationPolicy({
              accountId: flags.accountId!,
              imageSha384: pcr0,
              ...(indexes.length ? { pcrs } : {}),
            }),
            null,
            2,
          );
        } finally {
          await nsm.close();
        }
      }
      const out = await call(cmd, flags, false, (c, aws) =>
        c.send(
          new aws.CreateKeyCommand({
            ...(flags.description ? { Description: flags.description } : {}),
            ...(policy ? { Policy: policy } : {}),
          }),
        ),
      );
      const meta = out.KeyMetadata;
      if (!meta) throw new Error('kms create-key: the answer has no KeyMetadata');
      if (flags.json) writeOut({ ...meta, CreationDate: meta.CreationDate?.toISOString() }, true);
      else process.stdout.write(`${meta.Arn}\n`);
    },
  );
}
