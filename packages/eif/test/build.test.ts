import {
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildEif, describeEif, EifError, eifKeyPolicy, readEif } from '../src/index.js';
import { bytes, expectedPcrs, parseRaw, pcrOf } from './independent.js';

let dir: string;
let blobs: string;
const kernel = bytes(150_000, 21);
const init = bytes(30_000, 22);
const nsm = bytes(8_000, 23);
const CONFIG =
  '#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86_64 4.14.256-209.484.amzn2 Kernel Configuration\n#\n';

async function makeBlobs(
  at: string,
  cmdline = 'reboot=k panic=30 pci=off console=ttyS0\n',
): Promise<string> {
  await mkdir(at, { recursive: true });
  await writeFile(join(at, 'bzImage'), kernel);
  await writeFile(join(at, 'bzImage.config'), CONFIG);
  await writeFile(join(at, 'cmdline'), cmdline);
  await writeFile(join(at, 'init'), init);
  await writeFile(join(at, 'nsm.ko'), nsm);
  return at;
}

/** A small tree; `reverse` creates it in the opposite order, `mtime` stamps every entry. */
async function makeTree(
  at: string,
  opts: { reverse?: boolean; mtime?: number; extra?: string } = {},
): Promise<string> {
  const files: [string, string | Buffer][] = [
    ['bin/app', '#!/bin/sh\necho hello\n'],
    ['etc/app.conf', 'port=8080\n'],
    ['lib/big.bin', bytes(300_000, 31)],
    ['zz/last', 'z'],
    ['a/b/c/deep.txt', 'deep'],
  ];
  if (opts.extra) files.push(['etc/extra', opts.extra]);
  if (opts.reverse) files.reverse();
  for (const [p, c] of files) {
    await mkdir(join(at, p, '..'), { recursive: true });
    await writeFile(join(at, p), c);
  }
  await symlink('app', join(at, 'bin', 'app-link'));
  if (opts.mtime !== undefined) {
    const t = opts.mtime;
    for (const p of [...files.map(([f]) => f), 'bin', 'etc', 'lib', 'zz', 'a/b/c', 'a/b', 'a']) {
      await utimes(join(at, p), t, t);
    }
  }
  return at;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eif-build-'));
  blobs = await makeBlobs(join(dir, 'blobs'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function expectCode(p: Promise<unknown>, code: string): Promise<EifError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EifError);
  expect((err as EifError).code).toBe(code);
  return err as EifError;
}

describe('buildEif', () => {
  it('composes kernel, trimmed cmdline, metadata, bootstrap and customer ramdisks; PCRs match an independent computation', async () => {
    const root = await makeTree(join(dir, 'root1'));
    const out = join(dir, 'out1', 'app.eif');
    await mkdir(join(dir, 'out1'));
    const r = await buildEif({
      blobs,
      rootfs: { type: 'directory', path: root },
      cmd: ['/bin/app', '--flag'],
      env: ['A=1'],
      output: out,
      sourceDateEpoch: 1_700_000_000,
    });
    const file = await readFile(out);
    const raw = parseRaw(file);
    expect(raw.sections.map((s) => s.type)).toEqual([1, 2, 5, 3, 3]);
    expect(raw.sections[0]!.data.equals(kernel)).toBe(true);
    // nitro-cli stores cmdline.trim(): no trailing newline, no NUL.
    expect(raw.sections[1]!.data.toString('latin1')).toBe(
      'reboot=k panic=30 pci=off console=ttyS0',
    );
    const want = expectedPcrs(raw);
    expect(r.measurements).toEqual({ HashAlgorithm: 'Sha384 { ... }', ...want });
    expect(r.pcrs).toEqual({ 0: want.PCR0, 1: want.PCR1, 2: want.PCR2 });
    expect(want.PCR0).toBe(
      pcrOf(
        kernel,
        Buffer.from('reboot=k panic=30 pci=off console=ttyS0'),
        raw.sections[3]!.data,
        raw.sections[4]!.data,
      ),
    );
    // The bootstrap ramdisk holds init and nsm.ko; the customer ramdisk cmd/env and rootfs/.
    const boot = gunzipSync(raw.sections[3]!.data).toString('latin1');
    expect(boot).toContain('init');
    expect(boot).toContain('nsm.ko');
    expect(gunzipSync(raw.sections[3]!.data).includes(init)).toBe(true);
    const app = gunzipSync(raw.sections[4]!.data);
    expect(app.includes(Buffer.from('/bin/app\n--flag\n'))).toBe(true);
    expect(app.includes(Buffer.from('rootfs/etc/app.conf'))).toBe(true);
    expect(r.cmd).toEqual(['/bin/app', '--flag']);
    expect(r.env).toEqual(['A=1']);
    // Metadata as nitro-cli writes it, BuildTime from sourceDateEpoch, OS/kernel from the config.
    expect(r.metadata).toEqual({
      ImageName: 'app',
      ImageVersion: '1.0',
      BuildMetadata: {
        BuildTime: '2023-11-14T22:13:20+00:00',
        BuildTool: 'ee-eif',
        BuildToolVersion: r.metadata.BuildMetadata.BuildToolVersion,
        OperatingSystem: 'Linux',
        KernelVersion: '4.14.256',
      },
      DockerInfo: null,
      CustomMetadata: null,
    });
    expect(JSON.parse(raw.sections[2]!.data.toString())).toEqual(r.metadata);
    const d = await describeEif(out);
    expect(d.Measurements).toEqual(r.measurements);
    expect(d.ImageName).toBe('app');
  });

  it('PCR1 depends on kernel, cmdline and bootstrap blobs only; PCR2 on the application only', async () => {
    const outDir = await mkdtemp(join(dir, 'pcrs-'));
    const rootA = await makeTree(join(outDir, 'a'));
    const rootB = await makeTree(join(outDir, 'b'), { extra: 'one more file' });
    const base = { blobs, cmd: ['/bin/app'], sourceDateEpoch: 0 };
    const a = await buildEif({
      ...base,
      rootfs: { type: 'directory', path: rootA },
      output: join(outDir, 'a.eif'),
    });
    const b = await buildEif({
      ...base,
      rootfs: { type: 'directory', path: rootB },
      output: join(outDir, 'b.eif'),
    });
    expect(b.measurements.PCR1).toBe(a.measurements.PCR1);
    expect(b.measurements.PCR2).not.toBe(a.measurements.PCR2);
    expect(b.measurements.PCR0).not.toBe(a.measurements.PCR0);
    const c = await buildEif({
      ...base,
      cmdline: 'reboot=k panic=30 pci=off console=ttyS1',
      rootfs: { type: 'directory', path: rootA },
      output: join(outDir, 'c.eif'),
    });
    expect(c.measurements.PCR2).toBe(a.measurements.PCR2);
    expect(c.measurements.PCR1).not.toBe(a.measurements.PCR1);
    // Trimming: white space around the same cmdline changes nothing; one byte more does.
    const d = await buildEif({
      ...base,
      cmdline: '\n  reboot=k panic=30 pci=off console=ttyS0 \t\n',
      rootfs: { type: 'directory', path: rootA },
      output: join(outDir, 'd.eif'),
    });
    expect(d.measurements).toEqual(a.measurements);
    const e = await buildEif({
      ...base,
      cmdline: 'reboot=k panic=30 pci=off console=ttyS0 x',
      rootfs: { type: 'directory', path: rootA },
      output: join(outDir, 'e.eif'),
    });
    expect(e.measurements.PCR1).not.toBe(a.measurements.PCR1);
    // No nsm.ko (kernels with NSM built in): a different bootstrap ramdisk, same application.
    const f = await buildEif({
      ...base,
      nsmKo: false,
      rootfs: { type: 'directory', path: rootA },
      output: join(outDir, 'f.eif'),
    });
    expect(f.measurements.PCR1).not.toBe(a.measurements.PCR1);
    expect(f.measurements.PCR2).toBe(a.measurements.PCR2);
    for (const r of [a, b, c, d, e, f]) {
      const raw = parseRaw(await readFile(r.path));
      const want = expectedPcrs(raw);
      expect(r.measurements).toMatchObject(want);
    }
  });

  it('is reproducible: different folders, mtimes and creation order give byte-identical EIFs', async () => {
    const one = await mkdtemp(join(tmpdir(), 'eif-repro-one-'));
    const two = await mkdtemp(join(tmpdir(), 'eif-repro-two-'));
    try {
      const rootA = await makeTree(join(one, 'srcA'), { mtime: 1_000_000 });
      const rootB = await makeTree(join(two, 'other-name'), {
        reverse: true,
        mtime: 1_600_000_000,
      });
      const blobsB = await makeBlobs(join(two, 'blobs-copy'));
      for (const compression of ['gzip', 'none'] as const) {
        const a = await buildEif({
          blobs,
          rootfs: { type: 'directory', path: rootA },
          cmd: ['/bin/app'],
          output: join(one, 'app.eif'),
          sourceDateEpoch: 1234,
          compression,
        });
        const b = await buildEif({
          blobs: blobsB,
          rootfs: { type: 'directory', path: rootB },
          cmd: ['/bin/app'],
          output: join(two, 'app.eif'),
          sourceDateEpoch: 1234,
          compression,
        });
        const fa = await readFile(a.path);
        const fb = await readFile(b.path);
        expect(fa.equals(fb), `${compression}: byte-identical`).toBe(true);
        expect(a.measurements).toEqual(b.measurements);
      }
      // SOURCE_DATE_EPOCH from the environment is the default.
      process.env.SOURCE_DATE_EPOCH = '86400';
      try {
        const c = await buildEif({
          blobs,
          rootfs: { type: 'directory', path: rootA },
          cmd: ['/bin/app'],
          output: join(one, 'env.eif'),
        });
        expect(c.metadata.BuildMetadata.BuildTime).toBe('1970-01-02T00:00:00+00:00');
      } finally {
        delete process.env.SOURCE_DATE_EPOCH;
      }
    } finally {
      await rm(one, { recursive: true, force: true });
      await rm(two, { recursive: true, force: true });
    }
  });

  it('a missing blob is ERR_EIF_BLOB_MISSING naming it, and nothing is written', async () => {
    const root = await makeTree(join(dir, 'root-missing'));
    for (const name of ['bzImage', 'cmdline', 'init', 'nsm.ko']) {
      const b = await makeBlobs(join(dir, `blobs-no-${name}`));
      await rm(join(b, name));
      const outDir = await mkdtemp(join(dir, 'nothing-'));
      const e = await expectCode(
        buildEif({
          blobs: b,
          rootfs: { type: 'directory', path: root },
          cmd: ['/bin/app'],
          output: join(outDir, 'app.eif'),
        }),
        'ERR_EIF_BLOB_MISSING',
      );
      expect(e.message).toContain(name === 'bzImage' ? 'kernel' : name);
      expect(e.message).toContain(join(b, name));
      expect(await readdir(outDir)).toEqual([]);
    }
    await expectCode(
      buildEif({
        rootfs: { type: 'directory', path: root },
        cmd: ['/x'],
        output: join(dir, 'x.eif'),
      }),
      'ERR_EIF_BLOB_MISSING',
    );
    await expectCode(
      buildEif({
        blobs: join(dir, 'no-such-dir'),
        rootfs: { type: 'directory', path: root },
        cmd: ['/x'],
        output: join(dir, 'x.eif'),
      }),
      'ERR_EIF_BLOB_MISSING',
    );
    // Individual files work without a blobs folder (nsm.ko optional then).
    const r = await buildEif({
      kernel: join(blobs, 'bzImage'),
      cmdlineFile: join(blobs, 'cmdline'),
      init: join(blobs, 'init'),
      rootfs: { type: 'directory', path: root },
      cmd: ['/bin/app'],
      output: join(dir, 'files.eif'),
    });
    expect((await readEif(r.path)).cmdline).toBe('reboot=k panic=30 pci=off console=ttyS0');
  });

  it('a failing root file system leaves no output', async () => {
    const outDir = await mkdtemp(join(dir, 'rootfs-fail-'));
    await expect(
      buildEif({
        blobs,
        rootfs: { type: 'directory', path: join(dir, 'does-not-exist') },
        cmd: ['/x'],
        output: join(outDir, 'app.eif'),
      }),
    ).rejects.toBeInstanceOf(EifError);
    expect(await readdir(outDir)).toEqual([]);
  });

  it('eifKeyPolicy pins the predicted PCR0 (and PCR1/2 when asked)', async () => {
    const root = await makeTree(join(dir, 'root-policy'));
    const r = await buildEif({
      blobs,
      rootfs: { type: 'directory', path: root },
      cmd: ['/bin/app'],
      output: join(dir, 'policy.eif'),
    });
    const p = await eifKeyPolicy(r.measurements, {
      accountId: '123456789012',
      pcrs: [1, 2],
      principal: 'arn:aws:iam::123456789012:role/parent',
    });
    const st = p.Statement.find((s) => s.Sid === 'AllowAttestedEnclave')!;
    expect(st.Principal.AWS).toBe('arn:aws:iam::123456789012:role/parent');
    expect(st.Condition!.StringEqualsIgnoreCase).toEqual({
      'kms:RecipientAttestation:ImageSha384': r.measurements.PCR0,
      'kms:RecipientAttestation:PCR1': r.measurements.PCR1,
      'kms:RecipientAttestation:PCR2': r.measurements.PCR2,
    });
    await expectCode(
      eifKeyPolicy(r.measurements, { accountId: '123456789012', pcrs: [8] }),
      'ERR_EIF_INVALID_ARGUMENT',
    );
  });
});
