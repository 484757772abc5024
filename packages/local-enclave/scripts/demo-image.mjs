// The root file system of the local demo image, assembled from this machine: node and `ip`
// (iproute2, for ee-enclave's loopback setup) with the shared libraries `ldd` lists, the built
// ee-enclave app with its production node_modules (`pnpm deploy`), and the demo app laid out as
// in the checkout (examples/demo/app.mjs resolves its packages through ../../apps/enclave).
// Used by `pnpm demo:enclave` and the whole-enclave suite (test/enclave).
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Copies an executable and every library `ldd` lists to the same paths under `root`. */
export function copyWithLibs(binary, root) {
  const real = resolve(binary);
  const files = new Set([real]);
  const out = execFileSync('ldd', [real], { encoding: 'utf8' });
  for (const line of out.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s+(\/\S+)\s+\(/.exec(line);
    if (m) files.add(m[1]);
  }
  for (const f of files) {
    const dest = join(root, f);
    mkdirSync(dirname(dest), { recursive: true });
    copyFileSync(f, dest);
    chmodSync(dest, 0o755);
  }
  return [...files];
}

function which(name) {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  if (r.status !== 0)
    throw new Error(`${name} is not installed on this machine (needed in the demo image)`);
  return r.stdout.trim();
}

/** PATH inside the demo images (the init looks the command up on it). */
export const IMAGE_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** `buildEif` options for a local image: the local blobs (no nsm.ko) and `root` as its rootfs. */
export function localEifOptions(blobs, root, options) {
  return {
    kernel: blobs.kernel,
    init: blobs.init,
    cmdline: blobs.cmdline,
    nsmKo: false,
    rootfs: { type: 'directory', path: root },
    ...options,
  };
}

/** The image command: `ee-enclave run` with the demo's enclave.yaml, then node `app`. */
export function eeEnclaveCommand(paths, app) {
  const run = ['run', '--config', paths.enclaveYaml, '--log-level', 'warn'];
  return [paths.node, paths.eeEnclave, ...run, '--', paths.node, app];
}

/**
 * Builds the demo root file system in `root` (which must not exist or be empty). `files` adds
 * more files: { '/app/x.pem': 'content' }. Returns the in-image paths the image's command uses.
 */
export function assembleDemoRootfs(root, { files = {} } = {}) {
  for (const d of ['etc', 'tmp', 'proc', 'sys', 'dev', 'run', 'var', 'root', 'app/examples/demo']) {
    mkdirSync(join(root, d), { recursive: true });
  }
  writeFileSync(join(root, 'etc/hosts'), '127.0.0.1 localhost\n');
  writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  copyWithLibs(process.execPath, root);
  copyWithLibs(which('ip'), root);
  // node is looked up on PATH by the init: keep the binary where PATH finds it.
  if (!existsSync(join(root, 'usr/bin/node'))) {
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    copyFileSync(join(root, process.execPath), join(root, 'usr/bin/node'));
    chmodSync(join(root, 'usr/bin/node'), 0o755);
  }
  const enclaveApp = join(root, 'app/apps/enclave');
  const dist = join(repo, 'apps/enclave/dist/cli.js');
  if (!existsSync(dist)) throw new Error(`build first: ${dist} is missing (pnpm build)`);
  // --offline: everything is in the store after `pnpm install`. Run by Node 22 (CI's first line),
  // pnpm deploy without it sat at "resolved 396" for good, idle (a registry request that never
  // ends here); under Node 20 it did not. Bounded, and tried once more into a clean dir.
  for (let attempt = 1; ; attempt++) {
    try {
      execFileSync(
        'pnpm',
        [
          '--filter',
          '@enclave-extras/enclave',
          'deploy',
          '--prod',
          '--legacy',
          '--offline',
          enclaveApp,
        ],
        { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'], timeout: 180_000, killSignal: 'SIGKILL' },
      );
      break;
    } catch (err) {
      if (attempt >= 2) throw err;
      process.stderr.write(
        `demo image: pnpm deploy failed or hung (${err.message.split('\n')[0]}); once more\n`,
      );
      rmSync(enclaveApp, { recursive: true, force: true });
    }
  }
  const demo = join(repo, 'examples/demo');
  copyFileSync(join(demo, 'app.mjs'), join(root, 'app/examples/demo/app.mjs'));
  // The demo's enclave.yaml with network setup on: inside a real (here: local) enclave, lo is
  // down until ee-enclave brings it up.
  const yaml = readFileSync(join(demo, 'enclave.yaml'), 'utf8').replace(
    /^(\s*setup:\s*)false\b.*$/m,
    '$1true # lo up with the aliases (the image runs as an enclave)',
  );
  writeFileSync(join(root, 'app/enclave.yaml'), yaml);
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), content);
  }
  return {
    node: '/usr/bin/node',
    eeEnclave: '/app/apps/enclave/bin/ee-enclave.js',
    enclaveYaml: '/app/enclave.yaml',
    demoApp: '/app/examples/demo/app.mjs',
  };
}

/** In-image script: prints the PCRs read from /dev/nsm (and an attestation document), then runs E2E_THEN. */
export const GUEST_PROBE = `// e2e probe: PCRs from /dev/nsm via @enclave-extras/nsm, then the demo app.
import { createRequire } from 'node:module';
const req = createRequire('/app/apps/enclave/package.json');
const { NsmClient } = req('@enclave-extras/nsm');
const t0 = Date.now();
let step = 'open';
try {
  const nsm = await NsmClient.open();
  const pcrs = {};
  for (const i of [0, 1, 2, 3, 4, 8]) {
    step = 'DescribePCR ' + i;
    pcrs[i] = Buffer.from((await nsm.describePcr(i)).data).toString('hex');
  }
  console.log('E2E-PCRS ' + JSON.stringify(pcrs));
  if (process.env.E2E_ATTEST_SPKI) {
    step = 'Attestation';
    const doc = await nsm.getAttestationDocument({ publicKey: Buffer.from(process.env.E2E_ATTEST_SPKI, 'base64') });
    console.log('E2E-DOC ' + Buffer.from(doc).toString('base64'));
  }
  await nsm.close();
} catch (err) {
  // One line the host can match: which NSM request failed, its code, after how long.
  console.log('E2E-NSM-ERROR ' + JSON.stringify({ step, code: err.code, errno: err.cause?.code, ms: Date.now() - t0, message: err.message }));
  process.exit(3);
}
if (process.env.E2E_THEN) await import(process.env.E2E_THEN);
`;
