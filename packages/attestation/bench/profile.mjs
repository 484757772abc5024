// CPU profile of one verification path under the bench's documents, to find what costs time
// before optimizing. `pnpm --filter @enclave-extras/attestation bench:profile` (builds first)
// runs `node --cpu-prof` on the cached verifier (PROFILE_PATH=cold|floor for the others) for
// PROFILE_SECONDS (default 4), prints the functions with the most self time, and leaves the
// .cpuprofile (open it in Chrome DevTools or speedscope for a flame graph) in PROFILE_DIR
// (default a new directory under the OS temp dir; never commit profiles).

import { spawnSync } from 'node:child_process';
import { verify as cryptoVerify, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = resolve(here, '..');
const fixtureDir = resolve(pkgDir, '../../../shared/fixtures/attestation');
const which = process.env.PROFILE_PATH ?? 'cached';
const SECONDS = Number(process.env.PROFILE_SECONDS ?? 4);

if (process.argv[2] !== '--child') {
  // Parent: run this file again under --cpu-prof, then summarize the profile it wrote.
  const dir = process.env.PROFILE_DIR ?? mkdtempSync(join(tmpdir(), 'attestation-prof-'));
  const r = spawnSync(
    process.execPath,
    ['--cpu-prof', '--cpu-prof-dir', dir, fileURLToPath(import.meta.url), '--child'],
    { stdio: 'inherit' },
  );
  if (r.status !== 0) process.exit(r.status ?? 1);
  const file = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .sort()
    .at(-1);
  if (!file) throw new Error(`no .cpuprofile written in ${dir}`);
  summarize(JSON.parse(readFileSync(join(dir, file), 'utf8')), join(dir, file));
  process.exit(0);
}

// ---------------------------------------------------------------- child: the measured loop
if (!existsSync(join(pkgDir, 'dist/index.js'))) {
  console.error('dist/ is missing: run `pnpm --filter @enclave-extras/attestation build` first');
  process.exit(1);
}
const att = await import(join(pkgDir, 'dist/index.js'));
let docs;
let roots;
if (existsSync(join(fixtureDir, 'manifest.json'))) {
  const manifest = JSON.parse(readFileSync(join(fixtureDir, 'manifest.json'), 'utf8'));
  docs = manifest
    .filter((e) => e.expect === 'valid')
    .map((e) => new Uint8Array(readFileSync(join(fixtureDir, e.file))));
} else {
  const chain = att.createCertificateChain();
  roots = [chain.root.pem];
  docs = Array.from({ length: 10 }, (_, i) =>
    att.signDocument(
      { moduleId: `i-prof-${i}`, pcrs: { 0: new Uint8Array(48).fill(i + 1) } },
      {
        privateKey: chain.leaf.privateKey,
        certificate: chain.leaf.certificate,
        cabundle: chain.cabundle,
      },
    ),
  );
}
const opts = { at: 'document', policy: { allowDebug: true } };
let fn;
if (which === 'floor') {
  const inputs = docs.map((bytes) => {
    const doc = att.parseDocument(bytes);
    const leaf = new X509Certificate(doc.certificate);
    const issuerKey = new X509Certificate(doc.cabundle.at(-1)).publicKey;
    const tbs = att.encodeCbor([
      'Signature1',
      doc.raw.protected,
      new Uint8Array(0),
      doc.raw.payload,
    ]);
    return { leaf, issuerKey, tbs, sig: doc.raw.signature };
  });
  let i = 0;
  fn = () => {
    const f = inputs[i++ % inputs.length];
    f.leaf.verify(f.issuerKey);
    cryptoVerify('sha384', f.tbs, { key: f.leaf.publicKey, dsaEncoding: 'ieee-p1363' }, f.sig);
  };
} else if (which === 'cached' || which === 'cold') {
  const v = new att.AttestationVerifier({
    ...(roots ? { roots } : {}),
    ...(which === 'cold' ? { cacheSize: 0 } : {}),
  });
  let i = 0;
  fn = () => v.verify(docs[i++ % docs.length], opts);
} else {
  throw new Error(`PROFILE_PATH must be cached, cold or floor, not ${which}`);
}
for (let i = 0; i < docs.length; i++) fn(); // warm-up; throws if a document is refused
let n = 0;
const end = performance.now() + SECONDS * 1000;
while (performance.now() < end) {
  for (let i = 0; i < 50; i++) fn();
  n += 50;
}
console.log(`profiled ${which}: ${n} verifications in ${SECONDS}s (${(n / SECONDS).toFixed(0)}/s)`);

// ---------------------------------------------------------------- summary
function summarize(profile, path) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map();
  const counts = new Map();
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1);
  let total = 0;
  for (const [id, c] of counts) {
    const { functionName, url, lineNumber } = byId.get(id).callFrame;
    const where = url
      ? `${url.replace(/^.*\/(packages|node:|internal)/, '$1')}:${lineNumber + 1}`
      : '';
    const key = `${functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + c);
    total += c;
  }
  console.log(`\ntop self time (${total} samples) in ${path}:`);
  for (const [key, c] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.log(`${((100 * c) / total).toFixed(1).padStart(6)}%  ${key}`);
  }
}
