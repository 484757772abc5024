// ee-eif: build, describe, measure, sign and verify Nitro Enclave images without Docker.
// Exit codes: 0 ok, 1 runtime failure (the error code is printed), 2 usage error.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Command, Option } from 'commander';
import { version } from '../package.json';
import { type BuildEifOptions, type BuildEifResult, buildEif } from './build.js';
import { EifError } from './errors.js';
import { compareEifs, explainComparison, notReproducible } from './format/compare.js';
import { describeEif, pcr, signEif, verifyEif } from './format/describe.js';
import type { JsonValue } from './format/metadata.js';
import type { Measurements } from './format/pcr.js';
import { readEif } from './format/reader.js';
import { checkSignature } from './format/signature.js';
import { type EifKeyPolicyOptions, eifKeyPolicy } from './policy.js';
import type { RootfsSource } from './ramdisk/index.js';

// Ctrl-C / SIGTERM abort a running build or signing: the temporary file is removed and the
// output is left as it was.
const interrupt = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => interrupt.abort(new Error(`interrupted by ${sig}`)));
}

function usage(message: string): EifError {
  return new EifError('ERR_EIF_INVALID_ARGUMENT', message);
}

function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

interface BuildFlags {
  blobs?: string;
  kernel?: string;
  kernelConfig?: string;
  cmdline?: string;
  cmdlineText?: string;
  init?: string;
  nsmKo?: string | false;
  ociLayout?: string;
  dockerArchive?: string;
  rootfsDir?: string;
  ref?: string;
  cmd?: string;
  env?: string[];
  output?: string;
  name?: string;
  version?: string;
  metadata?: string;
  arch?: 'x86_64' | 'aarch64';
  sourceDateEpoch?: string;
  compression?: 'gzip' | 'none';
  nitroCliCompatible?: boolean;
  privateKey?: string;
  signingCertificate?: string;
  tmpDir?: string;
  quiet?: boolean;
  pcrOut?: string;
  pcrFile?: boolean;
  policyOut?: string;
  accountId?: string;
  principal?: string;
  adminPrincipal?: string;
  policyPcrs?: string;
}

function addBuildOptions(c: Command, withOutput: boolean): Command {
  c.option(
    '--blobs <dir>',
    "nitro-cli's blobs folder (bzImage|Image, bzImage.config, cmdline, init, nsm.ko)",
  )
    .option('--kernel <file>', 'kernel (bzImage / Image); overrides the blobs folder')
    .option(
      '--kernel-config <file>',
      'kernel config, for the metadata OperatingSystem/KernelVersion',
    )
    .option('--cmdline <file>', 'file holding the kernel command line (trimmed like nitro-cli)')
    .option('--cmdline-text <text>', 'the kernel command line itself')
    .option('--init <file>', 'the enclave init binary')
    .option('--nsm-ko <file>', 'nsm.ko kernel module')
    .option('--no-nsm-ko', 'no nsm.ko (kernels with the NSM driver built in)')
    .option('--oci-layout <path>', 'root file system: an OCI image layout directory or .tar')
    .option('--docker-archive <path>', 'root file system: a `docker save` tarball')
    .option('--rootfs-dir <dir>', 'root file system: a plain directory (give --cmd)')
    .option(
      '--ref <ref>',
      'image reference inside an OCI layout / docker archive with several images',
    )
    .option(
      '--cmd <command>',
      'command to run: a JSON array (["/app","-v"]) or words split on spaces',
    )
    .option(
      '--env <KEY=value>',
      'environment entry (repeatable); replaces the image ENV of KEY',
      collect,
    )
    .option('--name <name>', 'metadata ImageName (default: the output file name without .eif)')
    .option('--version <version>', 'metadata ImageVersion (default 1.0)')
    .option('--metadata <file>', 'custom metadata JSON (at most 4096 bytes, like nitro-cli)')
    .addOption(new Option('--arch <arch>', 'image architecture').choices(['x86_64', 'aarch64']))
    .option(
      '--source-date-epoch <seconds>',
      'time stamps and BuildTime (default $SOURCE_DATE_EPOCH or 0)',
    )
    .addOption(
      new Option('--compression <kind>', 'ramdisk compression')
        .choices(['gzip', 'none'])
        .default('gzip'),
    )
    .option(
      '--nitro-cli-compatible',
      'write the bootstrap ramdisk byte for byte as nitro-cli does (its PCR1)',
    )
    .option(
      '--private-key <file>',
      'sign with this PEM EC private key (needs --signing-certificate)',
    )
    .option('--signing-certificate <file>', 'PEM certificate of the signing key (PCR8)')
    .option(
      '--tmp-dir <dir>',
      'where image layers may be unpacked while indexing (default the OS temp dir)',
    )
    .option('-q, --quiet', 'no progress on stderr');
  if (withOutput) {
    c.requiredOption('-o, --output <file>', 'the EIF to write')
      .option(
        '--pcr-out <file>',
        'where to write the PCR JSON (default pcr.json beside the output)',
      )
      .option('--no-pcr-file', 'do not write the PCR JSON file');
  }
  c.option(
    '--policy-out <file>',
    'write a KMS key policy pinning the predicted PCR0 (needs --account-id)',
  )
    .option('--account-id <id>', '12-digit AWS account id for --policy-out')
    .option('--principal <arn>', 'principal allowed to decrypt (default the account root)')
    .option('--admin-principal <arn>', 'key administrators (default the account root)')
    .option('--policy-pcrs <list>', 'also pin these PCRs in the policy: any of 1,2,8');
  return c;
}

function parseCmd(s: string): string[] {
  const t = s.trim();
  if (t.startsWith('[')) {
    let v: unknown;
    try {
      v = JSON.parse(t);
    } catch {
      throw usage(`--cmd ${s}: not a JSON array of strings.`);
    }
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string')) {
      throw usage('--cmd: the JSON array must hold at least one string, and only strings.');
    }
    return v as string[];
  }
  const words = t.split(/\s+/).filter(Boolean);
  if (words.length === 0) throw usage('--cmd: empty command.');
  return words;
}

function rootfsOf(f: BuildFlags): RootfsSource {
  const given = [f.ociLayout, f.dockerArchive, f.rootfsDir].filter((x) => x !== undefined);
  if (given.length !== 1) {
    throw usage(
      'give exactly one root file system: --oci-layout, --docker-archive or --rootfs-dir.',
    );
  }
  if (f.ociLayout)
    return { type: 'oci-layout', path: f.ociLayout, ...(f.ref ? { ref: f.ref } : {}) };
  if (f.dockerArchive)
    return { type: 'docker-archive', path: f.dockerArchive, ...(f.ref ? { ref: f.ref } : {}) };
  if (f.ref) throw usage('--ref applies to --oci-layout / --docker-archive only.');
  return { type: 'directory', path: f.rootfsDir! };
}

async function buildOptionsOf(f: BuildFlags, output: string): Promise<BuildEifOptions> {
  if (f.cmdline !== undefined && f.cmdlineText !== undefined)
    throw usage('give --cmdline or --cmdline-text, not both.');
  if ((f.privateKey === undefined) !== (f.signingCertificate === undefined)) {
    throw usage('--private-key and --signing-certificate go together.');
  }
  const o: BuildEifOptions = { rootfs: rootfsOf(f), output, signal: interrupt.signal };
  if (f.blobs) o.blobs = f.blobs;
  if (f.kernel) o.kernel = f.kernel;
  if (f.kernelConfig) o.kernelConfig = f.kernelConfig;
  if (f.cmdline) o.cmdlineFile = f.cmdline;
  if (f.cmdlineText !== undefined) o.cmdline = f.cmdlineText;
  if (f.init) o.init = f.init;
  if (f.nsmKo === false) o.nsmKo = false;
  else if (typeof f.nsmKo === 'string') o.nsmKo = f.nsmKo;
  if (f.cmd !== undefined) o.cmd = parseCmd(f.cmd);
  if (f.env) {
    for (const e of f.env) if (e.indexOf('=') <= 0) throw usage(`--env ${e}: expected KEY=value.`);
    o.env = f.env;
  }
  if (f.name) o.name = f.name;
  if (f.version) o.version = f.version;
  if (f.arch) o.arch = f.arch;
  if (f.compression) o.compression = f.compression;
  if (f.nitroCliCompatible) o.nitroCliCompatible = true;
  if (f.tmpDir) o.tmpDir = f.tmpDir;
  if (f.sourceDateEpoch !== undefined) {
    if (!/^\d+$/.test(f.sourceDateEpoch))
      throw usage('--source-date-epoch: a whole number of seconds.');
    o.sourceDateEpoch = Number(f.sourceDateEpoch);
  }
  if (f.metadata) {
    const text = await readFile(f.metadata).catch((err: unknown) => {
      throw new EifError('ERR_EIF_READ', `--metadata ${f.metadata}: ${(err as Error).message}`, {
        cause: err,
      });
    });
    if (text.length > 4096)
      throw usage(`--metadata: ${text.length} bytes; nitro-cli's limit is 4096.`);
    try {
      o.customMetadata = JSON.parse(text.toString('utf8')) as JsonValue;
    } catch (err) {
      throw new EifError('ERR_EIF_INVALID_ARGUMENT', `--metadata ${f.metadata}: not JSON.`, {
        cause: err,
      });
    }
  }
  if (f.privateKey && f.signingCertificate) {
    const [privateKey, certificate] = await Promise.all([
      readFile(f.privateKey).catch((err: unknown) => {
        throw new EifError(
          'ERR_EIF_SIGNING_KEY',
          `--private-key ${f.privateKey}: ${(err as Error).message}`,
          { cause: err },
        );
      }),
      readFile(f.signingCertificate).catch((err: unknown) => {
        throw new EifError(
          'ERR_EIF_SIGNING_KEY',
          `--signing-certificate ${f.signingCertificate}: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }),
    ]);
    o.signing = { privateKey, certificate };
  }
  if (!f.quiet && process.stderr.isTTY) o.onProgress = progressPrinter();
  return o;
}

function progressPrinter(): (p: { bytes: number; totalBytes: number }) => void {
  let last = 0;
  return ({ bytes, totalBytes }) => {
    const now = Date.now();
    if (now - last < 200 && bytes < totalBytes) return;
    last = now;
    const pct = totalBytes > 0 ? Math.floor((bytes / totalBytes) * 100) : 100;
    process.stderr.write(
      `\rrootfs ${pct}% (${(bytes / 1e6).toFixed(1)} / ${(totalBytes / 1e6).toFixed(1)} MB)`,
    );
    if (bytes >= totalBytes) process.stderr.write('\n');
  };
}

function policyOptionsOf(f: BuildFlags): EifKeyPolicyOptions | undefined {
  if (!f.policyOut) {
    if (f.accountId || f.principal || f.adminPrincipal || f.policyPcrs) {
      throw usage(
        '--account-id / --principal / --admin-principal / --policy-pcrs need --policy-out.',
      );
    }
    return undefined;
  }
  if (!f.accountId)
    throw usage("--policy-out needs --account-id (the key's 12-digit AWS account).");
  if (!/^\d{12}$/.test(f.accountId))
    throw usage(`--account-id ${f.accountId}: 12 digits expected.`);
  const o: EifKeyPolicyOptions = { accountId: f.accountId };
  if (f.principal) o.principal = f.principal;
  if (f.adminPrincipal) o.adminPrincipal = f.adminPrincipal;
  if (f.policyPcrs) {
    const list = f.policyPcrs
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const pcrs: (1 | 2 | 8)[] = [];
    for (const p of list) {
      const n = Number(p.replace(/^PCR/i, ''));
      if (n !== 1 && n !== 2 && n !== 8)
        throw usage(`--policy-pcrs: ${p} is not 1, 2 or 8 (PCR0 is always pinned).`);
      pcrs.push(n);
    }
    o.pcrs = pcrs;
  }
  return o;
}

async function writePolicy(file: string, m: Measurements, o: EifKeyPolicyOptions): Promise<void> {
  const policy = await eifKeyPolicy(m, o);
  await writeFile(file, `${JSON.stringify(policy, null, 2)}\n`).catch((err: unknown) => {
    throw new EifError('ERR_EIF_WRITE', `--policy-out ${file}: ${(err as Error).message}`, {
      path: file,
      cause: err,
    });
  });
}

function buildInfo(r: BuildEifResult | { measurements: Measurements }): {
  Measurements: Measurements;
} {
  return { Measurements: r.measurements };
}

const program = new Command('ee-eif')
  .description(
    `Docker-free, reproducible AWS Nitro Enclave images (EIF v4), with PCRs known before deployment (v${version}).`,
  )
  .version(version)
  // Program options only before the subcommand, so `build --version 2.0` is the image version.
  .enablePositionalOptions()
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });

addBuildOptions(
  program
    .command('build')
    .description(
      'Build an EIF from blobs and a root file system; prints {"Measurements": ...} like nitro-cli build-enclave and writes pcr.json beside the output.',
    ),
  true,
).action(async (f: BuildFlags) => {
  const policy = policyOptionsOf(f);
  const opts = await buildOptionsOf(f, f.output!);
  const r = await buildEif(opts);
  const info = buildInfo(r);
  if (f.pcrFile !== false) {
    const file = f.pcrOut ?? join(dirname(r.path), 'pcr.json');
    await writeFile(file, `${JSON.stringify(info, null, 2)}\n`);
  }
  if (policy && f.policyOut) await writePolicy(f.policyOut, r.measurements, policy);
  printJson(info);
});

program
  .command('describe')
  .description(
    'Print what `nitro-cli describe-eif` prints: EifVersion, Measurements, signature and CRC checks, metadata.',
  )
  .argument('<eif>', 'the EIF file')
  .option('--allow-bad-crc', 'report a CRC mismatch as "CheckCRC": false instead of failing')
  .action(async (file: string, f: { allowBadCrc?: boolean }) => {
    printJson(await describeEif(file, { allowBadCrc: f.allowBadCrc === true }));
  });

program
  .command('pcr')
  .description(
    'PCR of a file\'s bytes ({"PCR": ...}) or of a signing certificate ({"PCR8": ...}), like `nitro-cli pcr`.',
  )
  .argument('[file]', 'the file (same as --input)')
  .option('--input <file>', 'the file whose bytes are measured')
  .option('--signing-certificate <file>', 'a PEM certificate: prints PCR8 (the DER is measured)')
  .action(async (file: string | undefined, f: { input?: string; signingCertificate?: string }) => {
    const given = [file, f.input, f.signingCertificate].filter((x) => x !== undefined);
    if (given.length !== 1)
      throw usage('give one of FILE, --input FILE or --signing-certificate FILE.');
    if (f.signingCertificate)
      printJson(await pcr(f.signingCertificate, { signingCertificate: true }));
    else printJson(await pcr((file ?? f.input)!));
  });

program
  .command('sign')
  .description(
    'Sign an EIF (add or replace its signature section), like `nitro-cli sign-eif`; prints the Measurements.',
  )
  .argument('<eif>', 'the EIF to sign')
  .requiredOption('--private-key <file>', 'PEM EC private key (P-256, P-384 or P-521)')
  .requiredOption('--signing-certificate <file>', 'PEM certificate of that key')
  .option('-o, --output <file>', 'write the signed image here instead of replacing the input')
  .action(
    async (
      file: string,
      f: { privateKey: string; signingCertificate: string; output?: string },
    ) => {
      const [privateKey, certificate] = await Promise.all([
        readFile(f.privateKey),
        readFile(f.signingCertificate),
      ]).catch((err: unknown) => {
        throw new EifError(
          'ERR_EIF_SIGNING_KEY',
          `cannot read the key or certificate: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      });
      const r = await signEif(file, {
        signing: { privateKey, certificate },
        signal: interrupt.signal,
        ...(f.output ? { output: f.output } : {}),
      });
      printJson(buildInfo(r));
    },
  );

program
  .command('verify')
  .description(
    'Validate an EIF (structure, CRC, signature when signed) and optionally pin the signer or PCRs; exit 1 when anything fails.',
  )
  .argument('<eif>', 'the EIF file')
  .option('--signing-certificate <file>', 'require a signature by this certificate')
  .option('--pcr8 <hex>', 'require this PCR8')
  .option('--require-signature', 'fail when the image is not signed')
  .option('--expect-pcr <N=hex>', 'require PCR N (0, 1, 2 or 8) to equal hex (repeatable)', collect)
  .option('--ignore-validity', "do not check the signing certificate's validity period")
  .action(
    async (
      file: string,
      f: {
        signingCertificate?: string;
        pcr8?: string;
        requireSignature?: boolean;
        expectPcr?: string[];
        ignoreValidity?: boolean;
      },
    ) => {
      const expected: [string, string][] = [];
      for (const e of f.expectPcr ?? []) {
        const m = /^(?:PCR)?(0|1|2|8)=([0-9a-fA-F]{96})$/.exec(e);
        if (!m) throw usage(`--expect-pcr ${e}: expected N=96 hex digits with N in 0, 1, 2, 8.`);
        expected.push([`PCR${m[1]}`, m[2]!.toLowerCase()]);
      }
      const image = await readEif(file);
      const wantSig =
        f.requireSignature || f.signingCertificate !== undefined || f.pcr8 !== undefined;
      const out: Record<string, unknown> = {
        Valid: true,
        Measurements: image.measurements,
        IsSigned: !!image.signature,
      };
      if (image.signature || wantSig) {
        const at = f.ignoreValidity ? false : undefined;
        const cert = f.signingCertificate ? await readFile(f.signingCertificate) : undefined;
        const v = await verifyEif(file, {
          ...(cert ? { certificate: cert } : {}),
          ...(f.pcr8 ? { pcr8: f.pcr8 } : {}),
          ...(at === false ? { at } : {}),
        });
        out.SigningCertificate = v.certificate;
        out.SignatureCheck = checkSignature(
          image.signature!,
          Buffer.from(image.measurements.PCR0, 'hex'),
        ).ok;
      }
      for (const [k, v] of expected) {
        const got = image.measurements[k as 'PCR0'];
        if (got !== v) {
          throw new EifError(
            'ERR_EIF_PCR_MISMATCH',
            `${file}: ${k} is ${got ?? 'absent'}, not the expected ${v}.`,
            {
              path: file,
              field: k,
            },
          );
        }
      }
      printJson(out);
    },
  );

program
  .command('compare')
  .description(
    'Compare two EIFs section by section and say which sections differ; exit 1 when they differ.',
  )
  .argument('<a>', 'first EIF')
  .argument('<b>', 'second EIF')
  .action(async (a: string, b: string) => {
    const c = await compareEifs(a, b);
    printJson(c);
    if (!c.identical) throw notReproducible(c);
  });

addBuildOptions(
  program
    .command('verify-reproducible')
    .description(
      'Build twice in two fresh temporary folders (or once, and compare with --against EIF) and check the results are byte-identical; names the differing sections. Exit 1 when not reproducible.',
    )
    .option('--against <eif>', 'compare one fresh build with this existing EIF')
    .option(
      '--output-name <name>',
      'file name of the builds (sets the default ImageName)',
      'app.eif',
    ),
  false,
).action(async (f: BuildFlags & { against?: string; outputName: string }) => {
  const policy = policyOptionsOf(f);
  const name = f.against ? basename(f.against) : f.outputName;
  const dirs: string[] = [];
  try {
    const paths: string[] = [];
    for (let i = 0; i < (f.against ? 1 : 2); i++) {
      const d = await mkdtemp(join(f.tmpDir ?? tmpdir(), `ee-eif-repro-${i}-`));
      dirs.push(d);
      const out = join(d, name);
      await buildEif(await buildOptionsOf(f, out));
      paths.push(out);
    }
    const c = await compareEifs(f.against ?? paths[0]!, f.against ? paths[0]! : paths[1]!);
    printJson({ Reproducible: c.identical, Explanation: explainComparison(c), ...c });
    if (policy && f.policyOut && c.identical)
      await writePolicy(f.policyOut, c.a.measurements, policy);
    if (!c.identical) throw notReproducible(c);
  } finally {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
});

program
  .command('policy')
  .description(
    'Print the KMS key policy that releases a key only to enclaves running this EIF (PCR0, optionally 1/2/8).',
  )
  .argument('<eif>', 'the EIF file')
  .requiredOption('--account-id <id>', '12-digit AWS account id of the key')
  .option('--principal <arn>', 'principal allowed to decrypt (default the account root)')
  .option('--admin-principal <arn>', 'key administrators (default the account root)')
  .option('--policy-pcrs <list>', 'also pin these PCRs: any of 1,2,8')
  .option('--policy-out <file>', 'write the policy here instead of stdout')
  .action(async (file: string, f: BuildFlags) => {
    const o = policyOptionsOf({ ...f, policyOut: f.policyOut ?? '-' })!;
    const image = await readEif(file);
    if (f.policyOut) await writePolicy(f.policyOut, image.measurements, o);
    else printJson(await eifKeyPolicy(image.measurements, o));
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`ee-eif: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  process.exit(e.code === 'ERR_EIF_INVALID_ARGUMENT' ? 2 : 1);
});
