#!/usr/bin/env node
// `pnpm demo:enclave`: the demo (examples/demo) inside a real enclave image booted on this
// machine under QEMU's nitro-enclave machine, instead of the emulation `pnpm demo` uses.
//
//   ee-parent kms-local --insecure-accept-unsigned-qemu-attestation (QEMU's NSM signs nothing)
//   ee-parent run (examples/demo/parent.yaml: egress gateway, policy allows only the KMS)
//   ee-parent credentials-relay (vsock 8002, only for the enclave's CID)
//        ^  vsock emulation folder  ^
//        |  vhost-user-vsock backend (@enclave-extras/vhost-vsock)
//   ee-parent run-enclave --attach-console: app.eif = node + ee-enclave + examples/demo/app.mjs,
//   built by @enclave-extras/eif with the local kernel and this package's init.
//
// 1. creates a KMS key and encrypts the secret (nobody may Decrypt yet),
// 2. builds the EIF and pins the PCR0 the builder predicts in the key policy, before boot,
// 3. boots it: the app decrypts with attestation through the egress gateway; without
//    attestation it is refused. Exit 0 when that is what happened.
// Needs: a QEMU with the nitro-enclave machine (--qemu / ENCLAVE_EXTRAS_QEMU, else nsm-vm) and
// the enclave kernel (--kernel / ENCLAVE_EXTRAS_KERNEL, else the enclave-kernel tool).
// Flags: --verbose (the whole console), --keep (leave the temp folder), --qemu P, --kernel P.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  assembleDemoRootfs,
  eeEnclaveCommand,
  IMAGE_PATH,
  localEifOptions,
  repo,
} from './demo-image.mjs';

const argv = process.argv.slice(2);
const flag = (n) => argv.includes(n);
const value = (n) => (argv.includes(n) ? argv[argv.indexOf(n) + 1] : undefined);
const verbose = flag('--verbose');
const demoDir = join(repo, 'examples/demo');
const cfg = JSON.parse(readFileSync(join(demoDir, 'demo.json'), 'utf8'));
const parentCli = join(repo, 'apps/parent/dist/cli.js');
const tools = join(repo, '..', 'shared', 'tools');
const CID = 16;
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const say = (who, text) => process.stdout.write(`${`[${who}]`.padEnd(10)} ${text}\n`);
const children = new Set();
let tmp;
let runDir;

async function cleanup() {
  if (runDir)
    spawnSync(process.execPath, [parentCli, 'terminate-enclave', '--all', '--run-dir', runDir]);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  if (tmp && !flag('--keep')) rmSync(tmp, { recursive: true, force: true });
}

/** The tail of each local enclave's supervisor log (QEMU's own messages land there). */
function supervisorLogTails() {
  if (!runDir || !existsSync(runDir)) return;
  for (const name of readdirSync(runDir).filter((n) => n.endsWith('.log'))) {
    const lines = readFileSync(join(runDir, name), 'utf8').trimEnd().split('\n').slice(-15);
    say('demo', `tail of ${name} (supervisor and QEMU):`);
    for (const line of lines) process.stdout.write(`           ${line}\n`);
  }
}

async function fail(message) {
  say('demo', `FAILED: ${message}`);
  supervisorLogTails();
  await cleanup();
  process.exit(1);
}
process.on('SIGINT', () => void fail('interrupted'));
process.on('SIGTERM', () => void fail('terminated'));

function start(name, args, env, readyRe) {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [parentCli, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(c);
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${name} not ready:\n${out}`)), 30_000);
    const on = (d) => {
      out += d;
      if (verbose) process.stderr.write(`  (${name}) ${d}`);
      if (readyRe.test(out)) {
        clearTimeout(timer);
        resolve(c);
      }
    };
    c.stdout.on('data', on);
    c.stderr.on('data', on);
    c.once('exit', (code) => reject(new Error(`${name} exited ${code}:\n${out}`)));
  });
}

function policy(account, pcr0) {
  const root = `arn:aws:iam::${account}:root`;
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'Key administration and encryption by the account (no Decrypt)',
        Effect: 'Allow',
        Principal: { AWS: root },
        Action: ['kms:Create*', 'kms:Describe*', 'kms:Get*', 'kms:Put*', 'kms:Encrypt'],
        Resource: '*',
      },
      ...(pcr0
        ? [
            {
              Sid: 'Decrypt only from the enclave image the builder predicted',
              Effect: 'Allow',
              Principal: { AWS: root },
              Action: ['kms:Decrypt'],
              Resource: '*',
              Condition: {
                StringEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': pcr0 },
              },
            },
          ]
        : []),
    ],
  });
}

async function main() {
  for (const f of [
    parentCli,
    join(repo, 'apps/enclave/dist/cli.js'),
    join(repo, 'packages/local-enclave/dist/init'),
  ]) {
    if (!existsSync(f)) await fail(`build first (pnpm build): ${f} is missing`);
  }
  const le = await import(join(repo, 'packages/local-enclave/dist/index.js'));
  const { buildEif } = await import(join(repo, 'packages/eif/dist/index.js'));
  const fromKms = createRequire(join(repo, 'packages/kms/package.json'));
  const { KMSClient, CreateKeyCommand, EncryptCommand, PutKeyPolicyCommand } =
    fromKms('@aws-sdk/client-kms');
  const { NodeHttpHandler } = fromKms('@smithy/node-http-handler');

  // QEMU and the local kernel (clear errors naming what is missing).
  const nsmVm = join(tools, 'nsm-vm');
  const qemu = le.resolveQemu({
    ...(value('--qemu') ? { qemu: value('--qemu') } : {}),
    ...(existsSync(nsmVm) ? { nsmVmTool: nsmVm } : {}),
  });
  const kernelTool = join(tools, 'enclave-kernel');
  if (!value('--kernel') && !process.env.ENCLAVE_EXTRAS_KERNEL && existsSync(kernelTool)) {
    say(
      'demo',
      `kernel from ${kernelTool} (built once and cached; the first build takes ~15-40 min)`,
    );
  }
  const blobs = le.localBlobs({
    ...(value('--kernel') ? { kernel: value('--kernel') } : {}),
    ...(existsSync(kernelTool) ? { kernelTool } : {}),
  });
  say('demo', `QEMU ${qemu}; kernel ${blobs.kernel}; init ${blobs.init}`);

  tmp = mkdtempSync(join(tmpdir(), 'ee-demo-enclave-'));
  const vsockDir = join(tmp, 'v');
  mkdirSync(vsockDir);
  runDir = join(tmp, 'run');
  const endpoint = new URL(cfg.kms.endpoint);
  const creds = {
    accessKeyId: cfg.credentials.accessKeyId,
    secretAccessKey: cfg.credentials.secretAccessKey,
  };

  // 1. The local KMS, HTTPS with a throwaway certificate, accepting QEMU's unsigned documents.
  const kmsCrt = join(tmp, 'kms.crt');
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
      `/CN=${endpoint.hostname}`,
      '-addext',
      `subjectAltName=DNS:${endpoint.hostname}`,
      '-keyout',
      kmsKey,
      '-out',
      kmsCrt,
    ],
    { stdio: 'ignore' },
  );
  await start(
    'kms-local',
    [
      'kms-local',
      '--data-dir',
      join(tmp, 'kms'),
      '--host',
      '127.0.0.1',
      '--port',
      endpoint.port,
      '--region',
      cfg.region,
      '--account-id',
      cfg.kms.accountId,
      '--tls-key',
      kmsKey,
      '--tls-cert',
      kmsCrt,
      '--insecure-accept-unsigned-qemu-attestation',
      '--log-level',
      'warn',
    ],
    { AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey },
    /kms-local listening on/,
  );
  say(
    'kms',
    `ee-parent kms-local on ${cfg.kms.endpoint} with --insecure-accept-unsigned-qemu-attestation (QEMU's NSM signs nothing)`,
  );

  // 2. ee-parent run + credentials relay on the vsock emulation folder the backend bridges to.
  const vsockEnv = { ENCLAVE_EXTRAS_VSOCK_DIR: vsockDir };
  await start(
    'ee-parent',
    ['run', '--config', join(demoDir, cfg.parentConfig)],
    vsockEnv,
    /"msg":"ready"/,
  );
  say('parent', `ee-parent run: egress gateway on vsock port 8001 (policy: ${cfg.parentConfig})`);
  const relayPort = String(cfg.credentials.relayPort ?? 8002);
  await start(
    'relay',
    [
      'credentials-relay',
      '--port',
      relayPort,
      '--region',
      cfg.region,
      '--enclave-cid',
      String(CID),
      '--log-level',
      'warn',
    ],
    {
      ...vsockEnv,
      AWS_ACCESS_KEY_ID: creds.accessKeyId,
      AWS_SECRET_ACCESS_KEY: creds.secretAccessKey,
    },
    /credentials-relay listening/,
  );
  say('parent', `ee-parent credentials-relay on vsock port ${relayPort} for CID ${CID}`);

  // 3. The key and the secret.
  const client = new KMSClient({
    endpoint: cfg.kms.endpoint,
    region: cfg.region,
    credentials: creds,
    maxAttempts: 1,
    requestHandler: new NodeHttpHandler({
      httpsAgent: new HttpsAgent({ ca: readFileSync(kmsCrt) }),
    }),
  });
  const { KeyMetadata } = await client.send(
    new CreateKeyCommand({ Policy: policy(cfg.kms.accountId) }),
  );
  const { CiphertextBlob } = await client.send(
    new EncryptCommand({ KeyId: KeyMetadata.KeyId, Plaintext: Buffer.from(cfg.secret) }),
  );
  say(
    'parent',
    `created key ${KeyMetadata.Arn}; encrypted the secret (${CiphertextBlob.length} bytes)`,
  );

  // 4. The image: node + ee-enclave + the demo app; entrypoint ee-enclave run.
  const root = join(tmp, 'rootfs');
  const paths = assembleDemoRootfs(root, {
    files: { '/app/kms-ca.pem': readFileSync(kmsCrt, 'utf8') },
  });
  const t0 = Date.now();
  const eif = await buildEif(
    localEifOptions(blobs, root, {
      cmd: eeEnclaveCommand(paths, paths.demoApp),
      env: [
        IMAGE_PATH,
        `AWS_REGION=${cfg.region}`,
        `DEMO_KMS_ENDPOINT=${cfg.kms.endpoint}`,
        'DEMO_KMS_CA=/app/kms-ca.pem',
        `DEMO_CIPHERTEXT=${Buffer.from(CiphertextBlob).toString('base64')}`,
        'DEMO_CREDENTIALS=relay',
        `DEMO_CREDENTIALS_PORT=${relayPort}`,
        'DEMO_EXPECT=decrypt',
      ],
      output: join(tmp, 'app.eif'),
    }),
  );
  say(
    'eif',
    `built app.eif (${(eif.size / 1048576).toFixed(1)} MiB) in ${Date.now() - t0} ms; predicted PCR0 ${eif.measurements.PCR0.slice(0, 16)}...`,
  );
  await client.send(
    new PutKeyPolicyCommand({
      KeyId: KeyMetadata.KeyId,
      PolicyName: 'default',
      Policy: policy(cfg.kms.accountId, eif.measurements.PCR0),
    }),
  );
  say(
    'parent',
    'key policy: Decrypt needs kms:RecipientAttestation:ImageSha384 = the predicted PCR0 (set before boot)',
  );

  // 5. ee-parent run-enclave --attach-console: boots, prints nitro-cli's JSON, streams the console.
  const args = [
    'run-enclave',
    '--eif-path',
    eif.path,
    '--cpu-count',
    '2',
    '--memory',
    '1536',
    '--enclave-cid',
    String(CID),
    '--attach-console',
    '--qemu',
    qemu,
    '--vsock-dir',
    vsockDir,
    '--run-dir',
    runDir,
  ];
  say(
    'parent',
    `ee-parent ${args.slice(0, 9).join(' ')} ... --attach-console (QEMU nitro-enclave, TCG: a minute or two)`,
  );
  const boot = async () => {
    const run = spawn(process.execPath, [parentCli, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(run);
    let out = '';
    let json = '';
    let inJson = true;
    run.stderr.on('data', (d) => process.stderr.write(d));
    run.stdout.on('data', (d) => {
      out += d;
      if (inJson) {
        json += d;
        const end = json.indexOf('\n}\n');
        if (end < 0) return;
        inJson = false;
        const info = JSON.parse(json.slice(0, end + 2));
        say(
          'enclave',
          `booted (heartbeat answered): ${info.EnclaveID}, CID ${info.EnclaveCID}, ${info.NumberOfCPUs} vCPUs, ${info.MemoryMiB} MiB`,
        );
        d = json.slice(end + 3);
      }
      for (const line of String(d).split('\n')) {
        if (verbose) process.stdout.write(`  | ${line}\n`);
        else if (/^(enclave|ee-init): /.test(line) && !line.startsWith('ee-init: warning'))
          say('enclave', line.replace(/^enclave: /, '').trim());
      }
    });
    const code = await new Promise((r) => run.once('exit', r));
    children.delete(run);
    return { code, out };
  };
  let { code, out } = await boot();
  // QEMU's virtio-nsm has been seen to leave the guest's NSM requests unanswered (about 1 boot in
  // 10, the driver gives up after 2 minutes). That is the emulator, not the image: boot it again.
  if (!out.includes(`"${cfg.secret}"`) && /did not answer in time|ETIMEDOUT/.test(out)) {
    say(
      'demo',
      "the enclave's NSM device (QEMU virtio-nsm) did not answer: a known intermittent emulator stall; booting the same EIF again",
    );
    ({ code, out } = await boot());
  }
  if (code !== 0) await fail(`ee-parent run-enclave exited ${code}`);
  if (!out.includes(`"${cfg.secret}"`))
    await fail('the enclave app did not print the decrypted secret');
  if (!/Decrypt without attestation refused: AccessDeniedException/.test(out))
    await fail('the request without attestation was not refused');
  say(
    'demo',
    'OK: the app in the booted EIF decrypted with attestation (PCR0 as predicted); without attestation it was refused',
  );
  await cleanup();
}

main().then(
  () => process.exit(0),
  (err) => fail(err?.stack ?? String(err)),
);
