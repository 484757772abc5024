// ee-eif checked by spawning the built bin (dist/ comes from `pnpm build`, which `test` depends on).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { issueCertificate } from '@enclave-extras/attestation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bytes, expectedPcrs, fixCrc, parseRaw, pcrOf } from './independent.js';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(pkg, 'bin', 'ee-eif.js');

function run(args: string[], cwd = dir): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [bin, ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, SOURCE_DATE_EPOCH: '' },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

let dir: string;
let blobs: string;
let root: string;
let key: string;
let cert: string;
let otherCert: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eif-cli-'));
  blobs = join(dir, 'blobs');
  await mkdir(blobs);
  await writeFile(join(blobs, 'bzImage'), bytes(80_000, 41));
  await writeFile(join(blobs, 'cmdline'), 'console=ttyS0 \n');
  await writeFile(join(blobs, 'init'), bytes(9_000, 42));
  await writeFile(join(blobs, 'nsm.ko'), bytes(3_000, 43));
  root = join(dir, 'root');
  await mkdir(join(root, 'bin'), { recursive: true });
  await writeFile(join(root, 'bin', 'app'), 'app');
  const leaf = issueCertificate({ subject: 'cli signer' });
  key = join(dir, 'key.pem');
  cert = join(dir, 'cert.pem');
  await writeFile(key, leaf.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  await writeFile(cert, leaf.pem);
  otherCert = join(dir, 'other.pem');
  await writeFile(otherCert, issueCertificate({ subject: 'someone else' }).pem);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const build = (out: string, ...extra: string[]) =>
  run([
    'build',
    '--blobs',
    blobs,
    '--rootfs-dir',
    root,
    '--cmd',
    '["/bin/app", "x y"]',
    '-o',
    out,
    ...extra,
  ]);

describe('ee-eif', () => {
  it('build prints the Measurements, writes pcr.json and the key policy; PCRs are the independent ones', async () => {
    await mkdir(join(dir, 'b1'));
    const out = join(dir, 'b1', 'app.eif');
    const r = build(
      out,
      '--name',
      'cli-app',
      '--version',
      '2.5',
      '--policy-out',
      join(dir, 'b1', 'policy.json'),
      '--account-id',
      '123456789012',
      '--policy-pcrs',
      '1,2',
    );
    expect(r.err).toBe(''); // no progress when stderr is not a TTY
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.out) as { Measurements: Record<string, string> };
    expect(Object.keys(printed)).toEqual(['Measurements']);
    expect(Object.keys(printed.Measurements)).toEqual(['HashAlgorithm', 'PCR0', 'PCR1', 'PCR2']);
    expect(printed.Measurements).toMatchObject(expectedPcrs(parseRaw(await readFile(out))));
    expect(JSON.parse(await readFile(join(dir, 'b1', 'pcr.json'), 'utf8'))).toEqual(printed);
    const policy = JSON.parse(await readFile(join(dir, 'b1', 'policy.json'), 'utf8'));
    expect(policy.Statement[1].Condition.StringEqualsIgnoreCase).toEqual({
      'kms:RecipientAttestation:ImageSha384': printed.Measurements.PCR0,
      'kms:RecipientAttestation:PCR1': printed.Measurements.PCR1,
      'kms:RecipientAttestation:PCR2': printed.Measurements.PCR2,
    });
    const d = run(['describe', out]);
    expect(d.code).toBe(0);
    const desc = JSON.parse(d.out);
    expect(Object.keys(desc)).toEqual([
      'EifVersion',
      'Measurements',
      'IsSigned',
      'CheckCRC',
      'ImageName',
      'ImageVersion',
      'Metadata',
    ]);
    expect(Object.keys(desc.Metadata)).toEqual([
      'BuildTime',
      'BuildTool',
      'BuildToolVersion',
      'OperatingSystem',
      'KernelVersion',
      'DockerInfo',
    ]);
    expect(desc.Measurements).toEqual(printed.Measurements);
    expect([desc.ImageName, desc.ImageVersion]).toEqual(['cli-app', '2.5']);
    const p = run(['policy', out, '--account-id', '123456789012']);
    expect(p.code).toBe(0);
    expect(JSON.parse(p.out).Statement[1].Condition.StringEqualsIgnoreCase).toEqual({
      'kms:RecipientAttestation:ImageSha384': printed.Measurements.PCR0,
    });
  });

  it('pcr FILE / --input / --signing-certificate', async () => {
    const f = join(dir, 'blob.bin');
    await writeFile(f, bytes(1000, 1));
    for (const args of [
      ['pcr', f],
      ['pcr', '--input', f],
    ]) {
      const r = run(args);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out)).toEqual({ PCR: pcrOf(bytes(1000, 1)) });
    }
    const c = run(['pcr', '--signing-certificate', cert]);
    expect(c.code).toBe(0);
    expect(Object.keys(JSON.parse(c.out))).toEqual(['PCR8']);
    expect(run(['pcr']).code).toBe(2);
    expect(run(['pcr', f, '--input', f]).code).toBe(2);
  });

  it('sign and verify; a different signer or PCR is exit 1 with the code', async () => {
    await mkdir(join(dir, 's'));
    const out = join(dir, 's', 'app.eif');
    expect(build(out, '--private-key', key, '--signing-certificate', cert).code).toBe(0);
    const v = run(['verify', out, '--signing-certificate', cert]);
    expect(v.code).toBe(0);
    const vj = JSON.parse(v.out);
    expect(vj.Valid).toBe(true);
    expect(vj.SignatureCheck).toBe(true);
    expect(Object.keys(vj.Measurements)).toContain('PCR8');
    const bad = run(['verify', out, '--signing-certificate', otherCert]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^ee-eif: ERR_EIF_SIGNATURE_INVALID: /);
    const pcr0 = vj.Measurements.PCR0 as string;
    expect(run(['verify', out, '--expect-pcr', `0=${pcr0}`]).code).toBe(0);
    const wrong = run(['verify', out, '--expect-pcr', `2=${pcr0}`]);
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(/^ee-eif: ERR_EIF_PCR_MISMATCH: .*PCR2/);
    expect(run(['verify', out, '--expect-pcr', '3=ab']).code).toBe(2);
    // sign an unsigned image into another file
    const plain = join(dir, 's', 'plain.eif');
    expect(build(plain).code).toBe(0);
    expect(run(['verify', plain, '--require-signature']).code).toBe(1);
    const s = run([
      'sign',
      plain,
      '--private-key',
      key,
      '--signing-certificate',
      cert,
      '-o',
      join(dir, 's', 'signed.eif'),
    ]);
    expect(s.code).toBe(0);
    expect(JSON.parse(s.out).Measurements.PCR0).toBe(pcr0);
    expect(JSON.parse(s.out).Measurements.PCR8).toBe(vj.Measurements.PCR8);
  });

  it('usage errors exit 2; runtime errors exit 1 with the error code; --help everywhere', async () => {
    for (const args of [
      ['build'],
      ['build', '--blobs', blobs, '-o', join(dir, 'u.eif')],
      [
        'build',
        '--blobs',
        blobs,
        '--rootfs-dir',
        root,
        '--oci-layout',
        root,
        '-o',
        join(dir, 'u.eif'),
      ],
      ['build', '--blobs', blobs, '--rootfs-dir', root, '--cmd', '[1]', '-o', join(dir, 'u.eif')],
      [
        'build',
        '--blobs',
        blobs,
        '--rootfs-dir',
        root,
        '--cmd',
        '/x',
        '-o',
        join(dir, 'u.eif'),
        '--policy-out',
        'p.json',
      ],
      [
        'build',
        '--blobs',
        blobs,
        '--rootfs-dir',
        root,
        '--cmd',
        '/x',
        '-o',
        join(dir, 'u.eif'),
        '--private-key',
        key,
      ],
      ['build', '--bogus'],
      ['describe'],
      ['frobnicate'],
    ]) {
      const r = run(args);
      expect(r.code, args.join(' ')).toBe(2);
    }
    expect(existsSync(join(dir, 'u.eif'))).toBe(false);
    const noBlob = run([
      'build',
      '--blobs',
      join(dir, 'root'),
      '--rootfs-dir',
      root,
      '--cmd',
      '/x',
      '-o',
      join(dir, 'm.eif'),
    ]);
    expect(noBlob.code).toBe(1);
    expect(noBlob.err).toMatch(/^ee-eif: ERR_EIF_BLOB_MISSING: kernel/);
    expect(existsSync(join(dir, 'm.eif'))).toBe(false);
    const missing = run(['describe', join(dir, 'nope.eif')]);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('ERR_EIF_READ');
    for (const c of [
      'build',
      'describe',
      'pcr',
      'sign',
      'verify',
      'compare',
      'verify-reproducible',
      'policy',
    ]) {
      const h = run([c, '--help']);
      expect(h.code, c).toBe(0);
      expect(h.out).toContain(`Usage: ee-eif ${c}`);
    }
    expect(run(['--help']).code).toBe(0);
    const v = run(['--version']);
    expect(v.code).toBe(0);
    expect(v.out).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('describe of a tampered image fails with ERR_EIF_BAD_CRC unless --allow-bad-crc', async () => {
    await mkdir(join(dir, 't'));
    const out = join(dir, 't', 'app.eif');
    expect(build(out).code).toBe(0);
    const f = await readFile(out);
    f[f.length - 10] = f[f.length - 10]! ^ 0xff;
    await writeFile(out, f);
    const r = run(['describe', out]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('ERR_EIF_BAD_CRC');
    const ok = run(['describe', out, '--allow-bad-crc']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.out).CheckCRC).toBe(false);
    // A structural tamper stays an error.
    f.writeUInt16BE(7, 26);
    await writeFile(out, fixCrc(f));
    const s = run(['describe', out, '--allow-bad-crc']);
    expect(s.code).toBe(1);
    expect(s.err).toContain('ERR_EIF_BAD_SECTION_TABLE');
  });

  it('compare and verify-reproducible name the differing section', async () => {
    await mkdir(join(dir, 'c'));
    const a = join(dir, 'c', 'a.eif');
    const b = join(dir, 'c', 'b.eif');
    expect(build(a).code).toBe(0);
    expect(
      run(['build', '--blobs', blobs, '--rootfs-dir', root, '--cmd', '/bin/other', '-o', b]).code,
    ).toBe(0);
    const c = run(['compare', a, b]);
    expect(c.code).toBe(1);
    const cj = JSON.parse(c.out);
    expect(cj.identical).toBe(false);
    expect(cj.sections.map((s: { section: string }) => s.section)).toEqual([
      'metadata',
      'ramdisk[1]',
    ]);
    expect(cj.sections[0].keys).toEqual(['ImageName']);
    expect(c.err).toMatch(/ERR_EIF_NOT_REPRODUCIBLE: .*ramdisk\[1\] \(section 4\) differs/);
    const same = run(['compare', a, a]);
    expect(same.code).toBe(0);
    const args = [
      'verify-reproducible',
      '--blobs',
      blobs,
      '--rootfs-dir',
      root,
      '--cmd',
      '["/bin/app", "x y"]',
    ];
    const v = run(args);
    expect(v.code).toBe(0);
    expect(JSON.parse(v.out).Reproducible).toBe(true);
    // Against the existing a.eif: same inputs, same bytes.
    expect(run([...args, '--against', a]).code).toBe(0);
    const diff = run([...args.slice(0, -1), '/bin/other', '--against', a]);
    expect(diff.code).toBe(1);
    expect(JSON.parse(diff.out).Explanation).toContain('ramdisk[1]');
  });

  it('the README example runs as written', async () => {
    const work = join(dir, 'example');
    const r = spawnSync(process.execPath, ['examples/dir-to-eif.mjs', work], {
      cwd: pkg,
      encoding: 'utf8',
      env: { ...process.env, BLOBS: join(dir, 'no-blobs') },
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const m = JSON.parse(r.stdout.slice(0, r.stdout.indexOf('\n}\n') + 3)).Measurements;
    const raw = parseRaw(await readFile(join(work, 'app.eif')));
    expect(m).toMatchObject(expectedPcrs(raw));
    const policy = JSON.parse(await readFile(join(work, 'policy.json'), 'utf8'));
    expect(
      policy.Statement[1].Condition.StringEqualsIgnoreCase['kms:RecipientAttestation:ImageSha384'],
    ).toBe(m.PCR0);
  });
});
