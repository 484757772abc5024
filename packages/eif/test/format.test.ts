import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32Combine, crc32Js } from '../src/format/crc32.js';
import {
  EifError,
  type EifMetadata,
  readEif,
  type SectionSource,
  trimCmdline,
  writeEif,
} from '../src/index.js';
import { bytes, crcOf, expectedPcrs, fixCrc, parseRaw, pcrOf } from './independent.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eif-format-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const META: EifMetadata = {
  ImageName: 'test',
  ImageVersion: '1.0',
  BuildMetadata: {
    BuildTime: '1970-01-01T00:00:00+00:00',
    BuildTool: 'test',
    BuildToolVersion: '0',
    OperatingSystem: 'Linux',
    KernelVersion: '6.12',
  },
  DockerInfo: null,
  CustomMetadata: { z: 1, a: { y: 'b', c: [1, 2] } },
};

/** Yields `data` in chunks of varying sizes, like a gzip stream would. */
function chunked(data: Buffer, seed: number): Readable {
  const sizes = bytes(64, seed);
  return Readable.from(
    (function* gen() {
      let pos = 0;
      let i = 0;
      while (pos < data.length) {
        const n = 1 + sizes[i++ % sizes.length]! * 97;
        yield data.subarray(pos, pos + n);
        pos += n;
      }
    })(),
  );
}

async function expectEifError(p: Promise<unknown>, code: string): Promise<EifError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(EifError);
  expect((err as EifError).code).toBe(code);
  return err as EifError;
}

describe('crc32', () => {
  it('the JS fallback equals zlib and crc32_combine equals the CRC of the concatenation', () => {
    for (const [n, seed] of [
      [0, 1],
      [1, 2],
      [1000, 3],
      [70_000, 4],
    ] as const) {
      const a = bytes(n, seed);
      const b = bytes(n * 2 + 5, seed + 10);
      expect(crc32Js(a)).toBe(zlib.crc32(a));
      expect(crc32Combine(zlib.crc32(a), zlib.crc32(b), b.length)).toBe(
        zlib.crc32(Buffer.concat([a, b])),
      );
    }
  });
});

describe('writeEif / readEif round trip', () => {
  const sets: { name: string; kernel: Buffer; cmdline: string; ramdisks: Buffer[] }[] = [
    {
      name: 'one ramdisk',
      kernel: bytes(5000, 1),
      cmdline: 'console=ttyS0',
      ramdisks: [bytes(3000, 2)],
    },
    {
      name: 'two ramdisks',
      kernel: bytes(300_000, 3),
      cmdline: 'reboot=k panic=30 pci=off nomodules console=ttyS0',
      ramdisks: [bytes(20_000, 4), bytes(2_500_000, 5)],
    },
    {
      name: 'four ramdisks, empty cmdline',
      kernel: bytes(1, 6),
      cmdline: '',
      ramdisks: [bytes(1, 7), bytes(0, 8), bytes(77_777, 9), bytes(12, 10)],
    },
  ];

  for (const [n, set] of sets.entries()) {
    it(`${set.name}: layout, CRC and PCRs match an independent computation`, async () => {
      const out = join(dir, `rt-${n}.eif`);
      const kernelFile = join(dir, `kernel-${n}`);
      await writeFile(kernelFile, set.kernel);
      const sources: SectionSource[] = set.ramdisks.map((r, i) =>
        i % 3 === 0 ? chunked(r, i + 1) : i % 3 === 1 ? r : () => chunked(r, 99),
      );
      const res = await writeEif({
        output: out,
        kernel: { path: kernelFile },
        cmdline: set.cmdline,
        metadata: META,
        ramdisks: sources,
      });
      const file = await readFile(out);
      const raw = parseRaw(file);
      expect(raw.version).toBe(4);
      expect(raw.flags).toBe(0);
      expect(raw.defaultMem).toBe(1024n * 1024n * 1024n);
      expect(raw.defaultCpus).toBe(2n);
      expect(raw.numSections).toBe(3 + set.ramdisks.length);
      expect(raw.sections.map((s) => s.type)).toEqual([1, 2, 5, ...set.ramdisks.map(() => 3)]);
      for (let i = 0; i < 32; i++) {
        const s = raw.sections[i];
        expect(raw.offsets[i]).toBe(BigInt(s ? s.offset : 0));
        expect(raw.sizes[i]).toBe(BigInt(s ? s.data.length : 0));
      }
      expect(raw.sections[0]!.data.equals(set.kernel)).toBe(true);
      expect(raw.sections[1]!.data.toString()).toBe(set.cmdline);
      for (const [i, r] of set.ramdisks.entries()) {
        expect(raw.sections[3 + i]!.data.equals(r)).toBe(true);
      }
      // serde_json order of EifIdentityInfo, with serde_json::Value objects key-sorted.
      expect(raw.sections[2]!.data.toString()).toBe(
        '{"ImageName":"test","ImageVersion":"1.0","BuildMetadata":{"BuildTime":"1970-01-01T00:00:00+00:00","BuildTool":"test","BuildToolVersion":"0","OperatingSystem":"Linux","KernelVersion":"6.12"},"DockerInfo":null,"CustomMetadata":{"a":{"c":[1,2],"y":"b"},"z":1}}',
      );
      expect(raw.crc).toBe(crcOf(file));
      const want = {
        PCR0: pcrOf(set.kernel, Buffer.from(set.cmdline), ...set.ramdisks),
        PCR1: pcrOf(set.kernel, Buffer.from(set.cmdline), set.ramdisks[0]!),
        PCR2: pcrOf(...set.ramdisks.slice(1)),
      };
      expect(expectedPcrs(raw)).toEqual(want);
      expect(res.measurements).toEqual({ HashAlgorithm: 'Sha384 { ... }', ...want });
      expect(res.size).toBe(file.length);
      const back = await readEif(out, { sectionDigests: true });
      expect(back.measurements).toEqual(res.measurements);
      expect(back.crc.ok).toBe(true);
      expect(back.cmdline).toBe(set.cmdline);
      expect(back.metadata).toEqual(META);
      expect(back.sections.map((s) => s.size)).toEqual(res.sections.map((s) => s.size));
      expect(back.sections[0]!.sha384).toBe(
        (await import('node:crypto')).createHash('sha384').update(set.kernel).digest('hex'),
      );
    });
  }

  it('sets the aarch64 flag', async () => {
    const out = join(dir, 'arm.eif');
    await writeEif({
      output: out,
      kernel: bytes(10, 1),
      cmdline: 'x',
      metadata: META,
      ramdisks: [bytes(10, 2)],
      arch: 'aarch64',
    });
    expect(parseRaw(await readFile(out)).flags).toBe(1);
    expect((await readEif(out)).arch).toBe('aarch64');
  });
});

describe('writeEif failures leave nothing behind', () => {
  it('a ramdisk stream that fails: typed error, output untouched, no temporary file', async () => {
    const sub = await mkdtemp(join(dir, 'fail-'));
    const out = join(sub, 'app.eif');
    await writeFile(out, 'previous image');
    const failing = new Readable({
      read() {
        this.push(bytes(100_000, 3));
        this.destroy(new Error('disk on fire'));
      },
    });
    const err = await expectEifError(
      writeEif({
        output: out,
        kernel: bytes(10, 1),
        cmdline: 'x',
        metadata: META,
        ramdisks: [bytes(5, 1), failing],
      }),
      'ERR_EIF_SECTION_STREAM',
    );
    expect(err.message).toContain('ramdisk[1]');
    expect((err.cause as Error).message).toBe('disk on fire');
    expect(await readFile(out, 'utf8')).toBe('previous image');
    expect(await readdir(sub)).toEqual(['app.eif']);
  });

  it('an EifError from a stream keeps its code; an abort gives ERR_EIF_ABORTED', async () => {
    const sub = await mkdtemp(join(dir, 'fail2-'));
    const out = join(sub, 'app.eif');
    const traversal = Readable.from(
      (async function* g() {
        yield bytes(10, 1);
        throw new EifError('ERR_EIF_ROOTFS_TRAVERSAL', 'escape');
      })(),
    );
    await expectEifError(
      writeEif({
        output: out,
        kernel: bytes(10, 1),
        cmdline: 'x',
        metadata: META,
        ramdisks: [traversal],
      }),
      'ERR_EIF_ROOTFS_TRAVERSAL',
    );
    const ac = new AbortController();
    const endless = new Readable({
      read() {
        setTimeout(() => {
          this.push(bytes(1000, 2));
          ac.abort();
        }, 1);
      },
    });
    await expectEifError(
      writeEif({
        output: out,
        kernel: bytes(10, 1),
        cmdline: 'x',
        metadata: META,
        ramdisks: [endless],
        signal: ac.signal,
      }),
      'ERR_EIF_ABORTED',
    );
    expect(endless.destroyed).toBe(true);
    expect(await readdir(sub)).toEqual([]);
  });

  it('a missing output directory is ERR_EIF_WRITE; bad arguments are ERR_EIF_INVALID_ARGUMENT', async () => {
    await expectEifError(
      writeEif({
        output: join(dir, 'nope', 'a.eif'),
        kernel: bytes(1, 1),
        cmdline: '',
        metadata: META,
        ramdisks: [bytes(1, 1)],
      }),
      'ERR_EIF_WRITE',
    );
    await expectEifError(
      writeEif({
        output: join(dir, 'x.eif'),
        kernel: bytes(1, 1),
        cmdline: '',
        metadata: META,
        ramdisks: [],
      }),
      'ERR_EIF_INVALID_ARGUMENT',
    );
    await expectEifError(
      writeEif({
        output: join(dir, 'x.eif'),
        kernel: bytes(1, 1),
        cmdline: 'a\0b',
        metadata: META,
        ramdisks: [bytes(1, 1)],
      }),
      'ERR_EIF_BAD_CMDLINE',
    );
  });
});

const w16 = (b: Buffer, v: number, at: number): Buffer => (b.writeUInt16BE(v, at) && b) || b;
const w64 = (b: Buffer, v: bigint, at: number): Buffer => (b.writeBigUInt64BE(v, at) && b) || b;
const wstr = (b: Buffer, s: string, at: number, enc: BufferEncoding): Buffer =>
  (b.write(s, at, enc) && b) || b;
function flip(b: Buffer, at: number, mask: number): Buffer {
  b[at] = b[at]! ^ mask;
  return b;
}

describe('readEif rejects every tamper', () => {
  let good: Buffer;
  let raw: ReturnType<typeof parseRaw>;
  beforeAll(async () => {
    const out = join(dir, 'good.eif');
    await writeEif({
      output: out,
      kernel: bytes(4000, 1),
      cmdline: 'console=ttyS0',
      metadata: META,
      ramdisks: [bytes(3000, 2), bytes(9000, 3)],
    });
    good = await readFile(out);
    raw = parseRaw(good);
  });

  async function check(
    name: string,
    mutate: (b: Buffer) => Buffer,
    code: string,
  ): Promise<EifError> {
    const p = join(dir, `tamper-${name}.eif`);
    await writeFile(p, mutate(Buffer.from(good)));
    return expectEifError(readEif(p), code);
  }

  it('bad magic, unsupported version', async () => {
    await check('magic', (b) => fixCrc(wstr(b, '.elf', 0, 'latin1')), 'ERR_EIF_BAD_MAGIC');
    await check('empty', () => Buffer.alloc(0), 'ERR_EIF_BAD_MAGIC');
    await check('v5', (b) => fixCrc(w16(b, 5, 4)), 'ERR_EIF_UNSUPPORTED_VERSION');
    await check('v1', (b) => fixCrc(w16(b, 1, 4)), 'ERR_EIF_UNSUPPORTED_VERSION');
  });

  it('truncation anywhere', async () => {
    await check('trunc-header', (b) => b.subarray(0, 300), 'ERR_EIF_TRUNCATED');
    await check('trunc-last-byte', (b) => b.subarray(0, b.length - 1), 'ERR_EIF_TRUNCATED');
    await check(
      'trunc-in-section-header',
      (b) => b.subarray(0, raw.sections[3]!.offset + 5),
      'ERR_EIF_TRUNCATED',
    );
    const e = await check(
      'trunc-at-boundary',
      (b) => b.subarray(0, raw.sections[4]!.offset),
      'ERR_EIF_BAD_SECTION_TABLE',
    );
    expect(e.message).toContain('section count mismatch');
  });

  it('CRC: a flipped data byte, header byte or stored CRC', async () => {
    const e = await check(
      'flip-ramdisk',
      (b) => flip(b, raw.sections[4]!.offset + 12 + 100, 1),
      'ERR_EIF_BAD_CRC',
    );
    expect(e.message).toMatch(/CRC32 mismatch/);
    await check(
      'flip-kernel',
      (b) => flip(b, raw.sections[0]!.offset + 12, 0x80),
      'ERR_EIF_BAD_CRC',
    );
    await check(
      'flip-metadata',
      (b) => flip(b, raw.sections[2]!.offset + 20, 0x20),
      'ERR_EIF_BAD_CRC',
    );
    await check('default-mem', (b) => flip(b, 10, 1), 'ERR_EIF_BAD_CRC');
    await check('crc-field', (b) => flip(b, 547, 1), 'ERR_EIF_BAD_CRC');
    // The describe path can report it instead.
    const p = join(dir, 'tamper-flip-ramdisk.eif');
    const img = await readEif(p, { verifyCrc: false });
    expect(img.crc.ok).toBe(false);
  });

  it('section size past EOF, table/header disagreement, count mismatch, unknown types', async () => {
    const last = raw.sections[4]!;
    await check(
      'size-past-eof',
      (b) => {
        b.writeBigUInt64BE(BigInt(last.data.length + 10), last.offset + 4);
        b.writeBigUInt64BE(BigInt(last.data.length + 10), 284 + 8 * 4);
        return fixCrc(b);
      },
      'ERR_EIF_TRUNCATED',
    );
    await check(
      'huge-size',
      (b) => {
        b.writeBigUInt64BE(2n ** 62n, last.offset + 4);
        b.writeBigUInt64BE(2n ** 62n, 284 + 8 * 4);
        return fixCrc(b);
      },
      'ERR_EIF_TRUNCATED',
    );
    await check(
      'size-table-only',
      (b) => fixCrc(w64(b, 1n, 284 + 8 * 3)),
      'ERR_EIF_BAD_SECTION_TABLE',
    );
    await check(
      'offset-table',
      (b) => fixCrc(w64(b, BigInt(raw.sections[1]!.offset + 12), 28 + 8)),
      'ERR_EIF_BAD_SECTION_TABLE',
    );
    await check('count-plus', (b) => fixCrc(w16(b, 6, 26)), 'ERR_EIF_BAD_SECTION_TABLE');
    const minus = await check(
      'count-minus',
      (b) => fixCrc(w16(b, 4, 26)),
      'ERR_EIF_BAD_SECTION_TABLE',
    );
    expect(minus.message).toContain('section count mismatch');
    await check(
      'count-minus-table',
      (b) => {
        b.writeUInt16BE(4, 26);
        b.writeBigUInt64BE(0n, 28 + 8 * 4);
        b.writeBigUInt64BE(0n, 284 + 8 * 4);
        return fixCrc(b);
      },
      'ERR_EIF_BAD_SECTION_TABLE',
    );
    await check('count-zero', (b) => fixCrc(w16(b, 0, 26)), 'ERR_EIF_BAD_SECTION_TABLE');
    await check(
      'appended',
      (b) => fixCrc(Buffer.concat([b, Buffer.from('junk')])),
      'ERR_EIF_BAD_SECTION_TABLE',
    );
    const unk = await check(
      'type-9',
      (b) => fixCrc(w16(b, 9, raw.sections[3]!.offset)),
      'ERR_EIF_UNKNOWN_SECTION',
    );
    expect(unk.details.field).toBe('section[3].type');
    await check(
      'type-0',
      (b) => fixCrc(w16(b, 0, raw.sections[4]!.offset)),
      'ERR_EIF_UNKNOWN_SECTION',
    );
    await check(
      'two-kernels',
      (b) => fixCrc(w16(b, 1, raw.sections[3]!.offset)),
      'ERR_EIF_BAD_LAYOUT',
    );
    await check(
      'no-ramdisk-after-sig',
      (b) => fixCrc(w16(b, 4, raw.sections[3]!.offset)),
      'ERR_EIF_BAD_LAYOUT',
    );
    await check(
      'bad-metadata',
      (b) => fixCrc(wstr(b, '[', raw.sections[2]!.offset + 12, 'latin1')),
      'ERR_EIF_BAD_METADATA',
    );
  });
});

describe('trimCmdline (Rust str::trim, as nitro-cli)', () => {
  it('trims Unicode white space at both ends only', () => {
    expect(trimCmdline('  a  b \n')).toBe('a  b');
    expect(trimCmdline('\t\r\n\x0b\x0cx\u00a0')).toBe('x');
    expect(trimCmdline('\u0085x\u3000\u2028')).toBe('x'); // NEL is White_Space in Rust, not in JS
    expect(trimCmdline('\ufeffx')).toBe('\ufeffx'); // BOM is not White_Space in Rust, JS trims it
    expect(trimCmdline(Buffer.from('console=ttyS0\n'))).toBe('console=ttyS0');
    expect(() => trimCmdline(Buffer.from([0x63, 0xff]))).toThrow(/UTF-8/);
    expect(() => trimCmdline('a\0b')).toThrow(/NUL/);
  });
});

describe('readEif under random damage', () => {
  it('every single-byte change and every truncation is a typed EifError, never another exception', async () => {
    const out = join(dir, 'fuzz-base.eif');
    const written = await writeEif({
      output: out,
      kernel: bytes(700, 1),
      cmdline: 'console=ttyS0',
      metadata: META,
      ramdisks: [bytes(300, 2), bytes(500, 3)],
    });
    const good = await readFile(out);
    expect(good.length).toBe(written.size);
    const rnd = bytes(4000, 77);
    const p = join(dir, 'fuzz.eif');
    const seen = new Set<string>();
    for (let i = 0; i < 400; i++) {
      const b = Buffer.from(good);
      // Bias towards the header and section headers, where the structure lives.
      const r = rnd.readUInt16BE((i * 2) % (rnd.length - 1));
      const at = i % 2 === 0 ? r % 600 : r % b.length;
      b[at] = b[at]! ^ (1 + (rnd[i]! % 255));
      await writeFile(p, b);
      const err = await readEif(p).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, `byte ${at}`).toBeInstanceOf(EifError);
      seen.add((err as EifError).code);
    }
    for (let cut = 0; cut < good.length; cut += 37) {
      await writeFile(p, good.subarray(0, cut));
      const err = await readEif(p).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, `cut at ${cut}`).toBeInstanceOf(EifError);
      seen.add((err as EifError).code);
    }
    expect(seen).toContain('ERR_EIF_BAD_CRC');
    expect(seen).toContain('ERR_EIF_TRUNCATED');
    expect(seen).toContain('ERR_EIF_BAD_SECTION_TABLE');
  });
});
