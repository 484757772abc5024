#!/usr/bin/env node
// `pnpm demo`: the whole attested-KMS flow on one machine, with a short transcript.
//
//   local attested KMS (ee-parent kms-local)  <-- only reachable through -->  egress gateway
//   ee-parent run (parent.yaml: gateway server, policy allows only the KMS)     (vsock emulation)
//   ee-enclave run (enclave.yaml: gateway) -- node examples/demo/app.mjs  +  NSM simulator daemon
//
// 1. creates a KMS key whose policy pins the simulated enclave's PCR0 (ImageSha384),
// 2. encrypts a secret on the parent side (the parent itself cannot decrypt it),
// 3. the enclave app decrypts it through the egress gateway with attestation,
// 4. the same request without attestation, and an enclave with another PCR0, are refused.
// Settings live in examples/demo/ (demo.json, parent.yaml, enclave.yaml): pointing the demo at
// real AWS changes those files, not this script. Exit 0 when every step went as expected.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const demoDir = join(root, 'examples/demo');
const cfg = JSON.parse(readFileSync(join(demoDir, 'demo.json'), 'utf8'));
const parentCli = join(root, 'apps/parent/dist/cli.js');
const enclaveCli = join(root, 'apps/enclave/dist/cli.js');
const simulatorBin = join(root, 'packages/nsm/dist/bin.js');
const verbose = process.argv.includes('--verbose');
// The AWS SDK warns once per process that Node 20 support ends in 2027; keep the transcript short.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const children = new Set();
let tmp;

function say(who, text) {
  console.log(`${`[${who}]`.padEnd(10)} ${text}`);
}

function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  const deadline = Date.now() + 3000;
  for (const c of children) {
    while (c.exitCode === null && c.signalCode === null && Date.now() < deadline) {
      spawnSync('sleep', ['0.05']);
    }
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  children.clear();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  tmp = undefined;
}

function fail(message) {
  say('demo', `FAILED: ${message}`);
  cleanup();
  process.exit(1);
}

process.on('SIGINT', () => fail('interrupted'));
process.on('SIGTERM', () => fail('terminated'));
process.on('uncaughtException', (err) => fail(err.stack ?? String(err)));
process.on('unhandledRejection', (err) => fail(err?.stack ?? String(err)));

/** Builds the packages and apps when their dist is missing (or with --build). */
function buildIfNeeded() {
  const outputs = [
    parentCli,
    enclaveCli,
    simulatorBin,
    join(root, 'packages/kms/dist/local/index.js'),
  ];
  if (!process.argv.includes('--build') && outputs.every((f) => existsSync(f))) return;
  say('demo', 'building the packages and apps (pnpm build) ...');
  const r = spawnSync(
    'pnpm',
    ['--filter', '@enclave-extras/parent...', '--filter', '@enclave-extras/enclave...', 'build'],
    { cwd: root, stdio: verbose ? 'inherit' : 'pipe', encoding: 'utf8' },
  );
  if (r.status !== 0) fail(`build failed:\n${r.stdout ?? ''}${r.stderr ?? ''}`);
}

/** Starts a long-running child; resolves when `ready(text)` matches its output. */
function start(name, cmd, args, { env = {}, ready, timeoutMs = 20_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`${name} not ready within ${timeoutMs} ms:\n${out}`)),
      timeoutMs,
    );
    const onData = (b) => {
      out += b.toString();
      if (verbose) process.stderr.write(`  (${name}) ${b}`);
      const m = ready(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? sig}) before it was ready:\n${out}`));
    });
  });
}

/** Runs a command to completion, returning its output. */
function runToEnd(name, cmd, args, env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => {
      stdout += b;
    });
    child.stderr.on('data', (b) => {
      stderr += b;
      if (verbose) process.stderr.write(`  (${name}) ${b}`);
    });
    child.once('exit', (code) => {
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

function pcrValue(spec) {
  if (/^[0-9a-fA-F]{96}$/.test(spec)) return spec.toLowerCase();
  if (spec.startsWith('sha384:')) return createHash('sha384').update(spec.slice(7)).digest('hex');
  fail(`demo.json: PCR value "${spec}" must be 96 hex digits or sha384:TEXT`);
}

/** The metrics URL of parent.yaml (`metrics.listen: tcp:HOST:PORT`), if any. */
function metricsEndpoint() {
  const m = /^\s*listen:\s*tcp:([0-9.]+):(\d+)/m.exec(
    readFileSync(join(demoDir, cfg.parentConfig), 'utf8').split('egressGateway:')[0],
  );
  return m ? `http://${m[1]}:${m[2]}/metrics` : undefined;
}

function readyLine(re) {
  return (out) => re.exec(out);
}

/** An SDK request handler trusting one more CA (the local KMS's development certificate). */
function httpsTrusting(caFile) {
  const fromKms = createRequire(join(root, 'packages/kms/package.json'));
  const { NodeHttpHandler } = fromKms('@smithy/node-http-handler');
  return new NodeHttpHandler({ httpsAgent: new HttpsAgent({ ca: readFileSync(caFile) }) });
}

function sdk() {
  // The AWS SDK as @enclave-extras/kms resolves it (the checkout has no root dependency on it).
  const fromKms = createRequire(join(root, 'packages/kms/package.json'));
  return fromKms('@aws-sdk/client-kms');
}

async function main() {
  buildIfNeeded();
  tmp = mkdtempSync(join(tmpdir(), 'ee-demo-'));
  const vsockDir = join(tmp, 'vsock');
  const { KMSClient, CreateKeyCommand, EncryptCommand, DecryptCommand } = sdk();

  // Credentials: static dev ones for the local KMS; mode 'instance' uses the parent's own
  // provider chain (IAM role, env, profile) for real AWS.
  const creds =
    cfg.credentials.mode === 'static'
      ? {
          accessKeyId: cfg.credentials.accessKeyId,
          secretAccessKey: cfg.credentials.secretAccessKey,
        }
      : undefined;
  const credEnv = creds
    ? { AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey }
    : {};

  // 1. The NSM simulator daemons: "our" enclave and one with another PCR0, same dev CA.
  const pcr0 = pcrValue(cfg.nsm.imagePcr0);
  const nsmSource = {};
  let rootPem;
  if (cfg.nsm.mode === 'simulator') {
    const stateDir = join(tmp, 'nsm-state');
    const r = spawnSync(process.execPath, [simulatorBin, '--state-dir', stateDir, '--print-root'], {
      encoding: 'utf8',
    });
    if (r.status !== 0) fail(`nsm-simulator --print-root: ${r.stderr}`);
    rootPem = join(tmp, 'nsm-dev-root.pem');
    writeFileSync(rootPem, r.stdout);
    for (const [which, value] of [
      ['good', pcr0],
      ['other', pcrValue(cfg.nsm.otherPcr0)],
    ]) {
      const sock = join(tmp, `nsm-${which}.sock`);
      await start(
        `nsm-${which}`,
        process.execPath,
        [
          simulatorBin,
          '--socket',
          sock,
          '--state-dir',
          stateDir,
          '--pcr',
          `0=${value}`,
          '--verbose',
        ],
        {
          ready: () => existsSync(sock),
        },
      );
      nsmSource[which] = `socket:${sock}`;
    }
    say(
      'nsm',
      `simulator daemons up: enclave PCR0 ${pcr0.slice(0, 16)}..., "other" enclave PCR0 ${pcrValue(cfg.nsm.otherPcr0).slice(0, 16)}...`,
    );
  } else {
    nsmSource.good = 'device';
    say('nsm', 'using /dev/nsm (PCR0 from demo.json imagePcr0 must be the EIF measurement)');
  }

  // 2. The KMS: the local attested one (trusting the simulator's dev root), or real AWS.
  const endpoint = cfg.kms.endpoint;
  let kmsCa; // PEM file of the local KMS's development TLS certificate (https endpoints)
  if (cfg.kms.mode === 'local') {
    const port = new URL(endpoint).port;
    const tlsArgs = [];
    if (new URL(endpoint).protocol === 'https:') {
      // A throwaway certificate for the endpoint's IP: TLS runs end to end from the enclave app
      // to KMS, so the parent and its gateway only ever carry ciphertext.
      const host = new URL(endpoint).hostname;
      kmsCa = join(tmp, 'kms-tls.crt');
      const key = join(tmp, 'kms-tls.key');
      const san = /^[\d.]+$/.test(host) ? `IP:${host}` : `DNS:${host}`;
      const r = spawnSync(
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
          `/CN=${host}`,
          '-addext',
          `subjectAltName=${san}`,
          '-keyout',
          key,
          '-out',
          kmsCa,
        ],
        { encoding: 'utf8' },
      );
      if (r.status !== 0) fail(`openssl could not make the local KMS certificate: ${r.stderr}`);
      tlsArgs.push('--tls-key', key, '--tls-cert', kmsCa);
    }
    const { match } = await start(
      'kms-local',
      process.execPath,
      [
        parentCli,
        'kms-local',
        '--data-dir',
        join(tmp, 'kms-data'),
        '--port',
        port,
        '--region',
        cfg.region,
        '--account-id',
        cfg.kms.accountId,
        '--root-pem',
        rootPem,
        '--log-level',
        'warn',
        ...tlsArgs,
      ],
      { env: credEnv, ready: readyLine(/kms-local listening on (\S+)/) },
    );
    say(
      'kms',
      `local attested KMS on ${match[1]} (SigV4 checked, trusts the NSM simulator's dev root${kmsCa ? '; TLS end to end with a throwaway certificate' : ''})`,
    );
  } else {
    say('kms', `AWS KMS at ${endpoint}`);
  }

  // 3. ee-parent run: the egress gateway server whose policy allows only the KMS.
  const vsockEnv = { ENCLAVE_EXTRAS_VSOCK_DIR: vsockDir };
  await start(
    'ee-parent',
    process.execPath,
    [parentCli, 'run', '--config', join(demoDir, cfg.parentConfig)],
    {
      env: vsockEnv,
      ready: readyLine(/"msg":"ready"/),
    },
  );
  say(
    'parent',
    `ee-parent run: egress gateway on vsock port 8001, its policy (${cfg.parentConfig}) allows only the KMS`,
  );

  // The parent hands its credentials to the enclave over vsock (the enclave has none of its own).
  const relayPort = String(cfg.credentials.relayPort ?? 8002);
  await start(
    'credentials-relay',
    process.execPath,
    [
      parentCli,
      'credentials-relay',
      '--port',
      relayPort,
      // the emulated enclave dials from the emulation's default CID, local(1); on AWS this is
      // the CID given to nitro-cli run-enclave --enclave-cid
      '--enclave-cid',
      '1',
      '--region',
      cfg.region,
      '--log-level',
      'warn',
    ],
    { env: { ...vsockEnv, ...credEnv }, ready: readyLine(/credentials-relay listening on (\S+)/) },
  );
  say(
    'parent',
    `ee-parent credentials-relay on vsock port ${relayPort} hands the enclave its AWS credentials`,
  );

  // 4. Parent side: a key whose policy pins PCR0, and the secret encrypted under it.
  const kms = new KMSClient({
    endpoint,
    region: cfg.region,
    maxAttempts: 1,
    ...(creds ? { credentials: creds } : {}),
    ...(kmsCa ? { requestHandler: httpsTrusting(kmsCa) } : {}),
  });
  const account = cfg.kms.accountId;
  const policy = {
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'Key administration and encryption by the account (no Decrypt)',
        Effect: 'Allow',
        Principal: { AWS: `arn:aws:iam::${account}:root` },
        Action: [
          'kms:Create*',
          'kms:Describe*',
          'kms:Get*',
          'kms:Put*',
          'kms:List*',
          'kms:Encrypt',
          'kms:ScheduleKeyDeletion',
        ],
        Resource: '*',
      },
      {
        Sid: 'Decrypt only from the attested enclave image',
        Effect: 'Allow',
        Principal: { AWS: `arn:aws:iam::${account}:root` },
        Action: ['kms:Decrypt', 'kms:GenerateDataKey', 'kms:GenerateRandom'],
        Resource: '*',
        Condition: { StringEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': pcr0 } },
      },
    ],
  };
  const { KeyMetadata } = await kms.send(
    new CreateKeyCommand({ Description: 'enclave-extras demo', Policy: JSON.stringify(policy) }),
  );
  say('parent', `created key ${KeyMetadata.Arn}`);
  say(
    'parent',
    `  policy: Decrypt needs kms:RecipientAttestation:ImageSha384 = ${pcr0.slice(0, 16)}...`,
  );
  const { CiphertextBlob } = await kms.send(
    new EncryptCommand({ KeyId: KeyMetadata.KeyId, Plaintext: Buffer.from(cfg.secret) }),
  );
  say('parent', `encrypted the secret: ${CiphertextBlob.length} bytes of ciphertext`);
  try {
    await kms.send(new DecryptCommand({ CiphertextBlob }));
    fail('the parent could decrypt the secret: the key policy is too open');
  } catch (err) {
    if (err.name !== 'AccessDeniedException') throw err;
    say('parent', `the parent itself cannot decrypt it: ${err.name}`);
  }

  // 5. The enclave: ee-enclave run with the gateway, the app decrypts with attestation.
  // The enclave app gets no AWS credentials in its environment: only the relay's.
  const appEnv = {
    ...vsockEnv,
    AWS_ACCESS_KEY_ID: '',
    AWS_SECRET_ACCESS_KEY: '',
    AWS_SESSION_TOKEN: '',
    AWS_PROFILE: '',
    DEMO_CREDENTIALS: 'relay',
    DEMO_CREDENTIALS_PORT: relayPort,
    AWS_REGION: cfg.region,
    DEMO_KMS_ENDPOINT: endpoint,
    ...(kmsCa ? { DEMO_KMS_CA: kmsCa } : {}),
    DEMO_CIPHERTEXT: Buffer.from(CiphertextBlob).toString('base64'),
  };
  const enclaveArgs = [
    enclaveCli,
    'run',
    '--config',
    join(demoDir, cfg.enclaveConfig),
    '--log-level',
    'warn',
    '--',
    process.execPath,
    join(demoDir, cfg.app),
  ];
  const good = await runToEnd('enclave', process.execPath, enclaveArgs, {
    ...appEnv,
    ENCLAVE_EXTRAS_NSM: nsmSource.good,
    DEMO_EXPECT: 'decrypt',
  });
  for (const line of good.stdout.split('\n').filter(Boolean))
    say('enclave', line.replace(/^enclave: /, ''));
  if (good.code !== 0) fail(`the enclave app exited ${good.code}:\n${good.stderr}`);
  if (!good.stdout.includes(`"${cfg.secret}"`))
    fail('the enclave app did not print the decrypted secret');

  // The parent's metrics show the KMS traffic went through the egress gateway.
  const metricsUrl = metricsEndpoint();
  if (metricsUrl) {
    const text = await (await fetch(metricsUrl)).text();
    const conns = /ee_proxy_connections_total\{[^}]*route="egress"[^}]*\} (\d+)/.exec(text)?.[1];
    const up = /ee_proxy_bytes_total\{[^}]*route="egress"[^}]*direction="up"\} (\d+)/.exec(
      text,
    )?.[1];
    const down = /ee_proxy_bytes_total\{[^}]*route="egress"[^}]*direction="down"\} (\d+)/.exec(
      text,
    )?.[1];
    if (conns)
      say(
        'parent',
        `egress gateway carried ${conns} connection(s), ${up} bytes up / ${down} bytes down (ee-parent /metrics)`,
      );
  }

  // 6. Another enclave image (another PCR0): refused.
  if (nsmSource.other) {
    const other = await runToEnd('enclave', process.execPath, enclaveArgs, {
      ...appEnv,
      ENCLAVE_EXTRAS_NSM: nsmSource.other,
      DEMO_EXPECT: 'denied',
    });
    for (const line of other.stdout.split('\n').filter(Boolean))
      say('other', line.replace(/^enclave: /, ''));
    if (other.code !== 0)
      fail(
        `the other-PCR0 enclave was not refused as expected (exit ${other.code}):\n${other.stderr}`,
      );
  } else {
    say('other', 'skipped: needs the NSM simulator to fake another PCR0');
  }

  say('demo', 'OK: attested decrypt worked; no attestation and another PCR0 were refused');
  cleanup();
}

main().then(
  () => process.exit(0),
  (err) => fail(err?.stack ?? String(err)),
);
