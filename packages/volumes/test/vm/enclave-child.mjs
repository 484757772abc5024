// One "enclave boot" for the VM suite: its own process (fresh keys, NSM state and NFS route),
// like ee-enclave run: enclave-side route TCP -> vsock, mount the volume, run one action as the
// app would, then sync + unmount. Reads its job as JSON from EE_VOLUME_JOB; prints JSON lines.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AttestedKmsClient } from '@enclave-extras/kms';
import { NsmClient, NsmSimulator } from '@enclave-extras/nsm';
import { createRoute } from '@enclave-extras/proxy';
import { kmsDataKeys, mountVolume, volumeSchema } from '../../dist/index.js';

const execFileAsync = promisify(execFile);
/** The `logon` keys named fscrypt:<descriptor> this process can see (/proc/keys), valid ones only. */
function fscryptLogonKeys() {
  return readFileSync('/proc/keys', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter(
      (c) =>
        c[7] === 'logon' &&
        /^fscrypt:[0-9a-f]{16}:?$/.test(c[8] ?? '') &&
        !/[iRD]/.test(c[1] ?? ''),
    );
}

const job = JSON.parse(process.env.EE_VOLUME_JOB ?? '{}');
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

/** Deterministic content for file i (so the reader can check it without the writer). */
export function content(seed, size) {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(seed).digest();
  for (let at = 0; at < size; at += block.length) {
    block.copy(out, at);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

async function writeSynced(path, data) {
  const fh = await open(path, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

// one attested client per PCR0 (an enclave has one NSM; the RSA key is made once per boot)
const clients = new Map();
async function kmsFor(k) {
  if (!clients.has(k.pcr0)) {
    const sim = new NsmSimulator({ stateDir: k.nsmState, pcrs: { 0: k.pcr0 } });
    const nsm = await NsmClient.open({ transport: sim });
    clients.set(
      k.pcr0,
      new AttestedKmsClient({
        endpoint: k.endpoint,
        region: 'us-east-1',
        credentials: k.credentials,
        attestation: { nsm },
      }),
    );
  }
  return clients.get(k.pcr0);
}

const mountedSteps = new Map();
/** Resolves once step `i` has mounted its volume (or has ended, mounted or not). */
function mountedOrDone(i, running) {
  return Promise.race([new Promise((r) => mountedSteps.set(i, r)), running]);
}

async function step(i, st) {
  const v = volumeSchema.parse(st.volume);
  let dataKeys;
  if (st.kms) {
    const kms = await kmsFor(st.kms);
    dataKeys = () =>
      kmsDataKeys({
        kms,
        keyId: st.kms.keyId,
        encryptionContext: { 'enclave-extras:volume': v.name },
      });
  }
  const volume = await mountVolume(v, {
    dataKeys,
    stateDir: st.stateDir ?? job.stateDir,
    ...(st.fscryptKeyring ? { fscryptKeyring: st.fscryptKeyring } : {}),
  });
  say({ step: i, mounted: v.mountPoint });
  mountedSteps.get(i)?.();
  if (st.report) say({ step: i, encryption: volume.encryption });
  try {
    const a = st.action;
    if (a.kind === 'write') {
      for (const f of a.files)
        await writeSynced(
          join(v.mountPoint, f.name),
          f.text !== undefined ? Buffer.from(f.text) : content(f.seed, f.size),
        );
      say({ step: i, wrote: a.files.length });
    } else if (a.kind === 'read') {
      const got = {};
      for (const name of a.names)
        got[name] = createHash('sha256')
          .update(await readFile(join(v.mountPoint, name)))
          .digest('hex');
      say({ step: i, read: got });
    } else if (a.kind === 'readInChild') {
      // the app is a child process: it must reach the files with the key this process added
      const { stdout } = await execFileAsync(
        'sha256sum',
        a.names.map((n) => join(v.mountPoint, n)),
      );
      const got = {};
      for (const line of stdout.trim().split('\n')) {
        const [hash, path] = line.split(/\s+/);
        got[path.slice(v.mountPoint.length + 1)] = hash;
      }
      say({ step: i, readInChild: got, sessionKey: fscryptLogonKeys().length });
    } else if (a.kind === 'hold') {
      // an app that keeps its volume open for a while (the lock test)
      await new Promise((r) => setTimeout(r, a.ms));
      say({ step: i, held: a.ms });
    } else if (a.kind === 'writeLoop') {
      // the app keeps writing; each file is fsync'd before it is announced
      for (let n = 0; ; n++) {
        await writeSynced(join(v.mountPoint, `f${n}`), content(`loop-${n}`, a.size));
        say({ step: i, synced: n });
      }
    }
  } finally {
    await volume.unmount();
  }
  say({
    step: i,
    unmounted: true,
    ...(st.fscryptKeyring ? { sessionKeyAfter: fscryptLogonKeys().length } : {}),
  });
}

// `listen: null`: the enclave-side route runs in another process (the kill test: see the suite)
const route = job.listen
  ? createRoute({
      name: 'nfs-enclave',
      listen: job.listen,
      dial: job.dial,
      dialRetries: { attempts: 3, delayMs: 50 },
    })
  : undefined;
await route?.start();
let failed = 0;
const background = [];
for (const [i, st] of job.steps.entries()) {
  const running = step(i, st).catch((err) => {
    failed++;
    say({ step: i, error: err.code ?? 'ERR_UNKNOWN', message: err.message });
  });
  // `background: true`: the next step starts once this one has mounted (two apps writing at once)
  if (st.background) {
    background.push(running);
    await mountedOrDone(i, running);
  } else await running;
}
await Promise.all(background);
await route?.close({ drain: false });
process.exit(failed === 0 ? 0 : 1);
