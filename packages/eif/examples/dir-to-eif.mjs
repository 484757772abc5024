#!/usr/bin/env node
// From a directory to an enclave image, its PCRs and a KMS key policy, without Docker.
//
//   node examples/dir-to-eif.mjs [WORKDIR]
//
// Blobs: $BLOBS, else nitro-cli's /usr/share/nitro_enclaves/blobs when installed; otherwise the
// script writes small stand-in blobs (random "kernel" and "init": the image is well formed and
// its PCRs are exact for these bytes, but it does not boot; point BLOBS at real ones for that).
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildEif, describeEif, eifKeyPolicy } from '@enclave-extras/eif';

const work = process.argv[2] ?? (await mkdtemp(join(tmpdir(), 'eif-example-')));
await mkdir(work, { recursive: true });

// 1. The application: a plain directory.
const app = join(work, 'app');
await mkdir(join(app, 'bin'), { recursive: true });
await writeFile(join(app, 'bin', 'hello'), '#!/bin/sh\necho "hello from the enclave"\n', {
  mode: 0o755,
});

// 2. The blobs (kernel, cmdline, init, nsm.ko).
let blobs = process.env.BLOBS ?? '/usr/share/nitro_enclaves/blobs';
if (!existsSync(join(blobs, 'bzImage'))) {
  blobs = join(work, 'stand-in-blobs');
  await mkdir(blobs, { recursive: true });
  const seeded = (n, seed) =>
    Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
  await writeFile(join(blobs, 'bzImage'), seeded(64 * 1024, 1));
  await writeFile(join(blobs, 'cmdline'), 'reboot=k panic=30 pci=off nomodules console=ttyS0\n');
  await writeFile(join(blobs, 'init'), seeded(16 * 1024, 2));
  await writeFile(join(blobs, 'nsm.ko'), seeded(4 * 1024, 3));
}

// 3. Build: same inputs, same bytes, same PCRs (time stamps from SOURCE_DATE_EPOCH or 0).
const image = await buildEif({
  blobs,
  rootfs: { type: 'directory', path: app },
  cmd: ['/bin/hello'],
  env: ['GREETING=hi'],
  output: join(work, 'app.eif'),
});
console.log(JSON.stringify({ Measurements: image.measurements }, null, 2));

// 4. The key policy: only enclaves running exactly this image (PCR0) may decrypt.
const policy = await eifKeyPolicy(image.measurements, {
  accountId: '111122223333',
  principal: 'arn:aws:iam::111122223333:role/enclave-parent',
});
await writeFile(join(work, 'policy.json'), `${JSON.stringify(policy, null, 2)}\n`);

// 5. Read it back like `nitro-cli describe-eif`.
const described = await describeEif(image.path);
console.log(
  `${image.path}: EIF v${described.EifVersion}, CRC ${described.CheckCRC ? 'ok' : 'BAD'}, ${image.size} bytes`,
);
console.log(
  `policy: ${join(work, 'policy.json')} pins ImageSha384 ${policy.Statement[1].Condition.StringEqualsIgnoreCase['kms:RecipientAttestation:ImageSha384']}`,
);
