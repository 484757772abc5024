// The demo's enclave app, started by `ee-enclave run --config enclave.yaml -- node app.mjs`.
// It decrypts a KMS ciphertext the parent gave it, the way an enclave must: KMS is reached
// through the egress gateway (HTTPS_PROXY, set by ee-enclave run), and the request carries an
// attestation document from the NSM, so KMS answers with CiphertextForRecipient that only
// this process can open. It then makes the same request without attestation to show that
// KMS refuses it.
//
// Inputs (environment): DEMO_KMS_ENDPOINT (+ DEMO_KMS_CA for a development CA), AWS_REGION, DEMO_CIPHERTEXT (base64),
// ENCLAVE_EXTRAS_NSM (device | socket:PATH), DEMO_CREDENTIALS=relay (+ DEMO_CREDENTIALS_PORT) to
// take AWS credentials from the parent's credentials relay (else the SDK default chain),
// DEMO_EXPECT (decrypt | denied).
// Output: one line per step, "enclave: ...", and exit 0 when every step went as expected.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

// In a real enclave image these are plain imports of the published packages:
//   import { AttestedKmsClient, createDialingRequestHandler } from '@enclave-extras/kms';
//   import { NsmClient, socketTransport } from '@enclave-extras/nsm';
//   import { httpConnectDialer } from '@enclave-extras/proxy';
//   import { KMSClient, DecryptCommand } from '@aws-sdk/client-kms';
// Here they resolve from the checkout (through the ee-enclave app, which depends on them all).
const fromApp = createRequire(new URL('../../apps/enclave/package.json', import.meta.url));
const kmsPkg = fromApp('@enclave-extras/kms');
const { NsmClient, socketTransport } = fromApp('@enclave-extras/nsm');
const { httpConnectDialer } = fromApp('@enclave-extras/proxy');
const { KMSClient, DecryptCommand } = createRequire(fromApp.resolve('@enclave-extras/kms'))(
  '@aws-sdk/client-kms',
);

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`enclave: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const endpoint = need('DEMO_KMS_ENDPOINT');
const region = need('AWS_REGION');
const ciphertext = Buffer.from(need('DEMO_CIPHERTEXT'), 'base64');
const proxy = process.env.HTTPS_PROXY ?? process.env.https_proxy;
const expect = process.env.DEMO_EXPECT ?? 'decrypt';
if (!proxy) {
  console.error(
    'enclave: HTTPS_PROXY is not set: run me under `ee-enclave run` with the egress gateway on',
  );
  process.exit(2);
}

// Every KMS connection goes through the egress gateway (HTTP CONNECT), whatever NO_PROXY says:
// inside an enclave there is no other way out.
const connect = httpConnectDialer(proxy);
// A development CA for a local KMS endpoint (real AWS endpoints need none).
const ca = process.env.DEMO_KMS_CA ? readFileSync(process.env.DEMO_KMS_CA, 'utf8') : undefined;

async function credentials() {
  if (process.env.DEMO_CREDENTIALS === 'relay') {
    // The parent's `ee-parent credentials-relay` over vsock (CID 3).
    return kmsPkg.fromParentInstance({ port: Number(process.env.DEMO_CREDENTIALS_PORT ?? 8002) });
  }
  return undefined; // the SDK's default chain (environment variables here)
}

async function openNsm() {
  const source = process.env.ENCLAVE_EXTRAS_NSM ?? 'device';
  if (source.startsWith('socket:')) {
    return NsmClient.open({ transport: await socketTransport(source.slice('socket:'.length)) });
  }
  return NsmClient.open(); // /dev/nsm
}

const creds = await credentials();
const common = { endpoint, region, maxAttempts: 1, ...(creds ? { credentials: creds } : {}) };
const nsm = await openNsm();
let ok = true;
try {
  const attested = new kmsPkg.AttestedKmsClient({
    ...common,
    attestation: { nsm },
    connect,
    ...(ca ? { ca } : {}),
  });
  try {
    const out = await attested.send(new DecryptCommand({ CiphertextBlob: ciphertext }));
    const text = Buffer.from(out.Plaintext).toString('utf8');
    console.log(`enclave: attested Decrypt via the egress gateway -> "${text}"`);
    if (expect !== 'decrypt') ok = false;
  } catch (err) {
    const why = /because (.*)$/.exec(err.message)?.[1] ?? err.message;
    console.log(`enclave: attested Decrypt refused: ${err.name} (${why})`);
    if (expect !== 'denied' || err.name !== 'AccessDeniedException') ok = false;
  }

  if (expect === 'decrypt') {
    const plain = new KMSClient({
      ...common,
      requestHandler: kmsPkg.createDialingRequestHandler({ connect, ...(ca ? { ca } : {}) }),
    });
    try {
      await plain.send(new DecryptCommand({ CiphertextBlob: ciphertext }));
      console.log('enclave: Decrypt WITHOUT attestation succeeded (the key policy is too open!)');
      ok = false;
    } catch (err) {
      const why = /because (.*?)(?:; call it.*)?$/.exec(err.message)?.[1] ?? err.message;
      console.log(`enclave: Decrypt without attestation refused: ${err.name} (${why})`);
      if (err.name !== 'AccessDeniedException') ok = false;
    }
  }
} finally {
  await nsm.close();
}
process.exit(ok ? 0 : 1);
