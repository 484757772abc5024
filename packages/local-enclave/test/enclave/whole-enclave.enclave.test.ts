// The whole enclave, end to end, under QEMU's nitro-enclave machine (TCG):
// - an EIF built by @enclave-extras/eif from a root file system holding node, ee-enclave and the
//   demo app boots with this package's kernel blobs and init (heartbeat answered);
// - PCR oracle: PCR0/1/2 read inside the guest from /dev/nsm equal the builder's prediction, for
//   two different EIFs, and the signed one's PCR8 too;
// - `ee-enclave run` brings up lo and the egress gateway inside; the demo app decrypts a KMS
//   secret through `ee-parent run` on the host over the vhost-user backend, with an attestation
//   document; the key policy pins the PCR0 the builder predicted before boot; the same request
//   without attestation is refused;
// - the local KMS refuses the guest's real (unsigned) QEMU document without the insecure option;
// - ee-parent run-enclave / describe-enclaves / terminate-enclave on the signed image;
// - an image whose init never sends the heartbeat is a boot failure with the console tail.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateKeyCommand,
  DecryptCommand,
  EncryptCommand,
  KMSClient,
  PutKeyPolicyCommand,
} from '@aws-sdk/client-kms';
import { type BuildEifResult, buildEif } from '@enclave-extras/eif';
import { createLocalKms, type LocalKms } from '@enclave-extras/kms/local';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error plain .mjs helper shared with `pnpm demo:enclave`
import * as demoImage from '../../scripts/demo-image.mjs';
import { type LocalBlobs, type LocalEnclave, localBlobs, startEnclave } from '../../src/index.js';

const { assembleDemoRootfs, eeEnclaveCommand, GUEST_PROBE, IMAGE_PATH, localEifOptions, repo } =
  demoImage;

const qemu = process.env.ENCLAVE_EXTRAS_QEMU;
const kernel = process.env.ENCLAVE_EXTRAS_KERNEL;
const ready = Boolean(qemu && kernel && existsSync(qemu) && existsSync(kernel));
if (!ready) {
  process.stdout.write(
    'whole-enclave: SKIPPED: set ENCLAVE_EXTRAS_QEMU and ENCLAVE_EXTRAS_KERNEL (scripts/enclave-suite.mjs finds them)\n',
  );
}

const parentCli = join(repo, 'apps/parent/dist/cli.js');
const CREDS = { accessKeyId: 'AKIDLOCALENCLAVE01', secretAccessKey: 'local-enclave-e2e-secret' };
const ACCOUNT = '111122223333';
const REGION = 'us-east-1';
const SECRET = 'the database password is correct-horse-battery-staple';
const CID = 16;
const SIGNED_CID = 17;

let tmp: string;
let vsockDir: string;
let blobs: LocalBlobs;
let kms: LocalKms;
let strictKms: LocalKms;
let kmsWarnings: string[];
let client: KMSClient;
let strictClient: KMSClient;
let kmsCa: string;
let keyId: string;
let strictKeyId: string;
let ciphertext: Uint8Array;
let strictCiphertext: Uint8Array;
let built: BuildEifResult;
const children = new Set<ChildProcess>();
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const spki = rsa.publicKey.export({ format: 'der', type: 'spki' });

function spawnChild(
  args: string[],
  env: NodeJS.ProcessEnv,
  readyRe: RegExp,
): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [parentCli, ...args], {
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(c);
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${args[0]} not ready:\n${out}`)), 30_000);
    const on = (d: Buffer) => {
      out += d.toString();
      if (readyRe.test(out)) {
        clearTimeout(timer);
        resolve(c);
      }
    };
    c.stdout?.on('data', on);
    c.stderr?.on('data', on);
    c.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${args[0]} exited ${code}:\n${out}`));
    });
  });
}

function policy(pcr0: string): string {
  const root = `arn:aws:iam::${ACCOUNT}:root`;
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'admin (no Decrypt)',
        Effect: 'Allow',
        Principal: { AWS: root },
        Action: ['kms:Encrypt', 'kms:PutKeyPolicy', 'kms:GetKeyPolicy', 'kms:DescribeKey'],
        Resource: '*',
      },
      {
        Sid: 'Decrypt only from the predicted image',
        Effect: 'Allow',
        Principal: { AWS: root },
        Action: ['kms:Decrypt'],
        Resource: '*',
        Condition: { StringEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': pcr0 } },
      },
    ],
  });
}

/** Waits until `text()` matches `re` (console output), or the enclave stops, or the time is up. */
async function waitFor(
  text: () => string,
  re: RegExp,
  what: string,
  stopped: () => boolean,
  ms = 480_000,
): Promise<RegExpExecArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = re.exec(text());
    if (m) return m;
    if (stopped())
      throw new Error(`the enclave stopped before ${what}; console:\n${text().slice(-4000)}`);
    if (Date.now() > deadline)
      throw new Error(`no ${what} within ${ms} ms; console:\n${text().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function pcrsFrom(line: string): Record<string, string> {
  return JSON.parse(line) as Record<string, string>;
}

const zeros = '0'.repeat(96);
const sha384hex = (b: Buffer) => createHash('sha384').update(b).digest('hex');
/** A PCR extended once from zero with `data` (how the machine sets PCR3/PCR4 from strings). */
const extendedOnce = (data: Buffer) => sha384hex(Buffer.concat([Buffer.from(zeros, 'hex'), data]));

describe.skipIf(!ready)('whole enclave under QEMU nitro-enclave', () => {
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'ee-e2e-'));
    vsockDir = join(tmp, 'v');
    mkdirSync(vsockDir);
    blobs = localBlobs({ kernel: kernel as string });

    // The local KMS with a throwaway TLS certificate for localhost (TLS runs app -> KMS).
    kmsCa = join(tmp, 'kms.crt');
    const kmsKey = join(tmp, 'kms.key');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost',
        '-keyout',
        kmsKey,
        '-out',
        kmsCa,
      ],
      { stdio: 'ignore' },
    );
    kmsWarnings = [];
    const noop = () => {};
    kms = await createLocalKms({
      dataDir: join(tmp, 'kms'),
      credentials: [CREDS],
      region: REGION,
      accountId: ACCOUNT,
      tls: { key: readFileSync(kmsKey), cert: readFileSync(kmsCa) },
      insecureAcceptUnsignedQemuAttestation: true,
      logger: { debug: noop, info: noop, error: noop, warn: (_o, m) => kmsWarnings.push(m ?? '') },
    });
    const port = new URL(await kms.listen({ port: 0, host: '127.0.0.1' })).port;
    const endpoint = `https://localhost:${port}`; // the name in the certificate
    strictKms = await createLocalKms({
      dataDir: join(tmp, 'kms-strict'),
      credentials: [CREDS],
      tls: { key: readFileSync(kmsKey), cert: readFileSync(kmsCa) },
    });
    const strictEndpoint = `https://localhost:${new URL(await strictKms.listen()).port}`;
    // The AWS SDK's HTTP handler as @enclave-extras/kms resolves it, trusting the KMS's certificate.
    const { NodeHttpHandler } = createRequire(join(repo, 'packages/kms/package.json'))(
      '@smithy/node-http-handler',
    ) as { NodeHttpHandler: new (o: { httpsAgent: HttpsAgent }) => never };
    const handler = () =>
      new NodeHttpHandler({ httpsAgent: new HttpsAgent({ ca: readFileSync(kmsCa) }) });
    client = new KMSClient({
      endpoint,
      region: REGION,
      credentials: CREDS,
      maxAttempts: 1,
      requestHandler: handler(),
    });
    strictClient = new KMSClient({
      endpoint: strictEndpoint,
      region: REGION,
      credentials: CREDS,
      maxAttempts: 1,
      requestHandler: handler(),
    });

    // ee-parent run: the egress gateway (vsock port 8001 in the emulation folder) whose policy
    // allows only the KMS; the credentials relay on vsock 8002 for this enclave's CID.
    const parentYaml = join(tmp, 'parent.yaml');
    writeFileSync(
      parentYaml,
      `egressGateway:\n  name: egress\n  listen: vsock:any:8001\n  connectTimeoutMs: 5000\n  policy:\n    allow:\n      - { address: localhost, port: ${port} }\n      - { address: 127.0.0.1, port: ${port} }\n`,
    );
    const vsockEnv = { ENCLAVE_EXTRAS_VSOCK_DIR: vsockDir };
    await spawnChild(
      ['run', '--config', parentYaml, '--log-level', 'info'],
      vsockEnv,
      /"msg":"ready"/,
    );
    await spawnChild(
      [
        'credentials-relay',
        '--port',
        '8002',
        '--region',
        REGION,
        '--enclave-cid',
        String(CID),
        '--log-level',
        'warn',
      ],
      {
        ...vsockEnv,
        AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
      },
      /credentials-relay listening/,
    );

    // The key: created with a policy nobody can Decrypt under yet, the secret encrypted.
    keyId = (await client.send(new CreateKeyCommand({ Policy: policy(zeros) }))).KeyMetadata
      ?.KeyId as string;
    ciphertext = (
      await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(SECRET) }))
    ).CiphertextBlob as Uint8Array;

    // Image 1: node + ee-enclave + the demo app; the entrypoint is ee-enclave run.
    const root = join(tmp, 'rootfs');
    const paths = assembleDemoRootfs(root, {
      files: {
        '/app/kms-ca.pem': readFileSync(kmsCa, 'utf8'),
        '/app/e2e-guest.mjs': GUEST_PROBE,
        '/app/idle.mjs': 'setInterval(() => {}, 3600_000);\n',
      },
    });
    built = await buildEif(
      localEifOptions(blobs, root, {
        cmd: eeEnclaveCommand(paths, '/app/e2e-guest.mjs'),
        env: [
          IMAGE_PATH,
          `AWS_REGION=${REGION}`,
          `DEMO_KMS_ENDPOINT=https://localhost:${port}`,
          'DEMO_KMS_CA=/app/kms-ca.pem',
          `DEMO_CIPHERTEXT=${Buffer.from(ciphertext).toString('base64')}`,
          'DEMO_CREDENTIALS=relay',
          'DEMO_CREDENTIALS_PORT=8002',
          'DEMO_EXPECT=decrypt',
          `E2E_ATTEST_SPKI=${Buffer.from(spki).toString('base64')}`,
          `E2E_THEN=${paths.demoApp}`,
        ],
        output: join(tmp, 'demo.eif'),
      }),
    );
    // Before boot: the key policy pins the PCR0 the builder predicted.
    await client.send(
      new PutKeyPolicyCommand({
        KeyId: keyId,
        PolicyName: 'default',
        Policy: policy(built.measurements.PCR0),
      }),
    );
    strictKeyId = (
      await strictClient.send(new CreateKeyCommand({ Policy: policy(built.measurements.PCR0) }))
    ).KeyMetadata?.KeyId as string;
    strictCiphertext = (
      await strictClient.send(
        new EncryptCommand({ KeyId: strictKeyId, Plaintext: Buffer.from(SECRET) }),
      )
    ).CiphertextBlob as Uint8Array;
  });

  afterAll(async () => {
    await enclave?.terminate();
    for (const c of children) c.kill('SIGTERM');
    await kms?.close();
    await strictKms?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  let enclave: LocalEnclave | undefined;
  let consoleText = '';
  let stopped = false;
  /** What QEMU printed on stderr for image 1 (the supervisor logs it as "QEMU says"). */
  const qemuSays: string[] = [];
  let nsmRetried = false;

  /** Boots image 1 and waits for the init's heartbeat line. */
  async function bootImage1(): Promise<void> {
    consoleText = '';
    stopped = false;
    const noop = () => {};
    enclave = await startEnclave({
      eifPath: built.path,
      cpuCount: 2,
      memoryMiB: 1536,
      enclaveCid: CID,
      vsockDir,
      qemu: qemu as string,
      accel: 'tcg',
      parentId: 'i-0123456789abcdef0',
      parentRole: 'arn:aws:iam::111122223333:role/local-enclave-e2e',
      onConsole: (d) => {
        consoleText += d.toString('utf8');
      },
      bootTimeoutMs: 480_000,
      logger: {
        debug: noop,
        info: noop,
        error: (o, m) => qemuSays.push(`${m ?? ''} ${JSON.stringify(o)}`),
        warn: (o, m) => qemuSays.push(`${m ?? ''} ${JSON.stringify(o)}`),
      },
    });
    const booted = enclave;
    void booted.exited.then(() => {
      if (enclave === booted) stopped = true;
    });
    expect(enclave.enclaveCid).toBe(CID);
    // The init prints this after it read the answer, so it may trail the host's side by a moment.
    await waitFor(
      () => consoleText,
      /ee-init: heartbeat answered by the parent/,
      'the init line',
      () => stopped,
      60_000,
    );
  }

  it('the demo image boots: the init heartbeat is answered over the vhost-user backend', async () => {
    await bootImage1();
  });

  it('PCR oracle, image 1: PCR0/1/2 from /dev/nsm equal the prediction; PCR3/4 are the parent role/id', async () => {
    const pcrsOrNsmError = /E2E-PCRS (\{.*\})|E2E-NSM-ERROR (\{.*\})/;
    let m = await waitFor(
      () => consoleText,
      pcrsOrNsmError,
      'the PCRs',
      () => stopped,
    );
    // QEMU's virtio-nsm has been seen (about 1 boot in 10, never reproduced on demand) to leave
    // the guest's first NSM requests unanswered until the driver's 2-minute timeout. That is the
    // emulator, not the image: say so loudly with what QEMU printed, and boot the same image once
    // more. Any other NSM error, or a second stall, fails the test.
    const stall = m[2] ? (JSON.parse(m[2]) as { errno?: string; message?: string }) : undefined;
    if (
      stall &&
      !nsmRetried &&
      /ETIMEDOUT|did not answer in time/.test(`${stall.errno} ${stall.message}`)
    ) {
      nsmRetried = true;
      process.stdout.write(
        `whole-enclave: WARNING: the guest's NSM did not answer (${m[2]}); QEMU said: ${qemuSays.join(' | ') || 'nothing'}; booting image 1 again\n`,
      );
      await enclave?.terminate();
      await bootImage1();
      m = await waitFor(
        () => consoleText,
        pcrsOrNsmError,
        'the PCRs',
        () => stopped,
      );
    }
    expect(
      m[2],
      `the guest's NSM failed; QEMU said: ${qemuSays.join(' | ') || 'nothing'}`,
    ).toBeUndefined();
    const pcrs = pcrsFrom(m[1] as string);
    expect(pcrs['0']).toBe(built.measurements.PCR0.toLowerCase());
    expect(pcrs['1']).toBe(built.measurements.PCR1.toLowerCase());
    expect(pcrs['2']).toBe(built.measurements.PCR2.toLowerCase());
    expect(pcrs['8']).toBe(zeros); // unsigned
    expect(pcrs['3']).toBe(
      extendedOnce(Buffer.from('arn:aws:iam::111122223333:role/local-enclave-e2e')),
    );
    expect(pcrs['4']).toBe(extendedOnce(Buffer.from('i-0123456789abcdef0')));
  });

  it('the demo app decrypts through ee-parent run over vsock with attestation; without attestation it is refused', async () => {
    await waitFor(
      () => consoleText,
      /stopping the enclave/,
      'the app to finish',
      () => false,
    );
    await enclave?.exited;
    expect(consoleText).toContain(`attested Decrypt via the egress gateway -> "${SECRET}"`);
    expect(consoleText).toMatch(/Decrypt without attestation refused: AccessDeniedException/);
    expect(consoleText).toMatch(/ee-init: \S+ exited with status 0; stopping the enclave/);
    expect(
      kmsWarnings.some((w) => w.includes('accepted an UNSIGNED QEMU attestation document')),
    ).toBe(true);
  });

  it("the guest's real QEMU document: refused by a local KMS without the insecure option, accepted with it", async () => {
    const m = /E2E-DOC (\S+)/.exec(consoleText);
    expect(m, 'the guest printed its attestation document').toBeTruthy();
    const doc = Buffer.from(m?.[1] as string, 'base64');
    const recipient = {
      KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256' as const,
      AttestationDocument: doc,
    };
    const refused = await strictClient
      .send(new DecryptCommand({ CiphertextBlob: strictCiphertext, Recipient: recipient }))
      .then(
        () => undefined,
        (err: Error) => err,
      );
    expect(refused?.name).toBe('ValidationException');
    expect(refused?.message).toContain('insecureAcceptUnsignedQemuAttestation');
    const ok = await client.send(
      new DecryptCommand({ CiphertextBlob: ciphertext, Recipient: recipient }),
    );
    expect(ok.CiphertextForRecipient?.length).toBeGreaterThan(0);
  });

  it('PCR oracle, image 2 (signed, other env) via ee-parent run-enclave / describe-enclaves / terminate-enclave: PCR0/1/2/8 as predicted', async () => {
    const key = join(tmp, 'sign.key');
    const cert = join(tmp, 'sign.crt');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-384',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=local-enclave e2e signer',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'ignore' },
    );
    const signed = await buildEif(
      localEifOptions(blobs, join(tmp, 'rootfs'), {
        cmd: ['/usr/bin/node', '/app/e2e-guest.mjs'],
        env: [IMAGE_PATH, 'E2E_THEN=/app/idle.mjs'],
        output: join(tmp, 'signed.eif'),
        signing: { privateKey: readFileSync(key, 'utf8'), certificate: readFileSync(cert, 'utf8') },
      }),
    );
    expect(signed.measurements.PCR8).toMatch(/^[0-9a-f]{96}$/);
    expect(signed.measurements.PCR2).not.toBe(built.measurements.PCR2);
    const runDir = join(tmp, 'run');
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [parentCli, ...args], {
        encoding: 'utf8',
        env: { ...process.env },
      });
    const run = cli([
      'run-enclave',
      '--eif-path',
      signed.path,
      '--cpu-count',
      '1',
      '--memory',
      '1024',
      '--enclave-cid',
      String(SIGNED_CID),
      '--debug-mode',
      '--qemu',
      qemu as string,
      '--accel',
      'tcg',
      '--vsock-dir',
      vsockDir,
      '--run-dir',
      runDir,
      '--boot-timeout',
      '480',
    ]);
    expect(run.status, run.stderr).toBe(0);
    const info = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(Object.keys(info)).toEqual([
      'EnclaveName',
      'EnclaveID',
      'ProcessID',
      'EnclaveCID',
      'NumberOfCPUs',
      'CPUIDs',
      'MemoryMiB',
    ]);
    expect(info).toMatchObject({
      EnclaveName: 'signed',
      EnclaveCID: SIGNED_CID,
      NumberOfCPUs: 1,
      MemoryMiB: 1024,
    });
    const id = info.EnclaveID as string;
    expect(id).toMatch(/^i-local-enc[0-9a-f]{16}$/);

    const described = JSON.parse(cli(['describe-enclaves', '--run-dir', runDir]).stdout) as Record<
      string,
      unknown
    >[];
    expect(described).toHaveLength(1);
    expect(described[0]).toMatchObject({
      EnclaveID: id,
      State: 'RUNNING',
      Flags: 'DEBUG_MODE',
      EnclaveCID: SIGNED_CID,
    });

    const consoleFile = join(runDir, `${id}.console`);
    const read = () => (existsSync(consoleFile) ? readFileSync(consoleFile, 'utf8') : '');
    const m = await waitFor(read, /E2E-PCRS (\{.*\})/, 'the PCRs of image 2', () => false);
    const pcrs = pcrsFrom(m[1] as string);
    expect(pcrs['0']).toBe(signed.measurements.PCR0.toLowerCase());
    expect(pcrs['1']).toBe(signed.measurements.PCR1.toLowerCase());
    expect(pcrs['2']).toBe(signed.measurements.PCR2.toLowerCase());
    expect(pcrs['8']).toBe(signed.measurements.PCR8?.toLowerCase());
    expect(pcrs['1']).toBe(built.measurements.PCR1.toLowerCase()); // same kernel, cmdline, init

    const term = cli(['terminate-enclave', '--enclave-id', id, '--run-dir', runDir]);
    expect(term.status, term.stderr).toBe(0);
    expect(JSON.parse(term.stdout)).toEqual({
      EnclaveName: 'signed',
      EnclaveID: id,
      Terminated: true,
    });
    expect(JSON.parse(cli(['describe-enclaves', '--run-dir', runDir]).stdout)).toEqual([]);
    const again = cli(['terminate-enclave', '--enclave-id', id, '--run-dir', runDir]);
    expect(again.status).toBe(1);
    expect(again.stderr).toContain('ERR_LOCAL_ENCLAVE_NOT_FOUND');
  });

  it('a command that does not exist: the init boots, says why on the console and stops the enclave', async () => {
    const tiny = join(tmp, 'tiny-missing');
    mkdirSync(join(tiny, 'etc'), { recursive: true });
    writeFileSync(join(tiny, 'etc', 'hostname'), 'enclave\n');
    const eif = await buildEif({
      kernel: blobs.kernel,
      init: blobs.init,
      cmdline: blobs.cmdline,
      nsmKo: false,
      rootfs: { type: 'directory', path: tiny },
      cmd: ['/bin/not-there', 'arg'],
      env: ['PATH=/bin'],
      output: join(tmp, 'missing-cmd.eif'),
    });
    let text = '';
    const e = await startEnclave({
      eifPath: eif.path,
      cpuCount: 1,
      memoryMiB: 256,
      enclaveCid: 19,
      vsockDir,
      qemu: qemu as string,
      accel: 'tcg',
      onConsole: (d) => {
        text += d.toString('utf8');
      },
    });
    const end = await e.exited;
    expect(end.code).toBe(0); // the guest rebooted; -no-reboot makes QEMU exit
    expect(text).toContain(
      'ee-init: FATAL: exec /bin/not-there: No such file or directory (PATH=/bin)',
    );
    expect(text).toContain('ee-init: /bin/not-there exited with status 127; stopping the enclave');
  });

  it('an image whose init never sends the heartbeat: boot failure with the console tail', async () => {
    const src = join(tmp, 'silent.c');
    const bin = join(tmp, 'silent-init');
    writeFileSync(src, '#include <unistd.h>\nint main(void){ for(;;) pause(); }\n');
    execFileSync('gcc', ['-static', '-Os', src, '-o', bin]);
    const tiny = join(tmp, 'tiny');
    mkdirSync(join(tiny, 'bin'), { recursive: true });
    writeFileSync(join(tiny, 'bin', 'nothing'), '');
    const eif = await buildEif({
      kernel: blobs.kernel,
      init: bin,
      cmdline: blobs.cmdline,
      nsmKo: false,
      rootfs: { type: 'directory', path: tiny },
      cmd: ['/bin/nothing'],
      output: join(tmp, 'silent.eif'),
    });
    const err = await startEnclave({
      eifPath: eif.path,
      cpuCount: 1,
      memoryMiB: 256,
      enclaveCid: 18,
      vsockDir,
      qemu: qemu as string,
      accel: 'tcg',
      bootTimeoutMs: 45_000,
    }).then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    );
    expect(err?.code).toBe('ERR_LOCAL_ENCLAVE_BOOT_FAILED');
    expect(err?.message).toMatch(/no boot heartbeat \(vsock port 9000\) within 45000 ms/);
    expect(err?.message).toMatch(/Console tail:\n[\s\S]*(Linux version|Run \/init|Freeing unused)/);
  });
});
