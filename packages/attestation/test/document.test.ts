import { sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CborTag, type CborValue, decodeCbor, encodeCbor, IndefiniteMap } from '../src/cbor.js';
import {
  ATTESTATION_ERROR_CODES,
  AttestationError,
  createCertificateChain,
  decodeDocumentInput,
  parseDocument,
  verifyDocument,
} from '../src/index.js';
import { sigStructure } from '../src/verify.js';
import { HAVE_FIXTURES, loadFixtures } from './fixtures.js';
import { codeOf, join, pcr, signWith, split } from './helpers.js';

const chain = createCertificateChain();
const roots = [chain.root.pem];
const ok = (doc: Uint8Array) => verifyDocument(doc, { roots });

/** Re-signs the document after `edit` changed its payload map (bypassing signDocument's checks). */
function crafted(edit: (m: Map<CborValue, CborValue>) => void, doc = signWith(chain)): Uint8Array {
  const parts = split(doc);
  const payload = new Map(parts.payload);
  edit(payload);
  return join({ ...parts, payload }, chain.leaf.privateKey);
}

describe('parseDocument structure', () => {
  it('reads every field of an own document', () => {
    const doc = parseDocument(
      signWith(chain, {
        publicKey: pcr(1, 91),
        userData: pcr(2, 3),
        nonce: pcr(3, 20),
        timestamp: 1_700_000_000_123,
      }),
    );
    expect(doc).toMatchObject({
      alg: 'ES384',
      tagged: false,
      digest: 'SHA384',
      timestamp: 1_700_000_000_123,
    });
    expect(doc.date.toISOString()).toBe('2023-11-14T22:13:20.123Z');
    expect(doc.publicKey).toEqual(pcr(1, 91));
    expect(doc.userData).toEqual(pcr(2, 3));
    expect(doc.nonce).toEqual(pcr(3, 20));
    expect(doc.certificate).toEqual(chain.leaf.certificate);
    expect(doc.cabundle).toEqual(chain.cabundle);
    expect([...doc.pcrs.keys()]).toEqual([0, 1, 2, 3, 4, 8]);
    expect(doc.raw.signature).toHaveLength(96);
    expect([...doc.raw.protected]).toEqual([0xa1, 0x01, 0x38, 0x22]);
  });

  it('accepts tag 18 (COSE_Sign1) and reports it', () => {
    const doc = signWith(chain, {}, { tagged: true });
    expect(doc[0]).toBe(0xd2);
    expect(ok(doc).tagged).toBe(true);
  });

  it('rejects other tags', () => {
    const inner = decodeCbor(signWith(chain), 'd');
    expect(codeOf(() => parseDocument(encodeCbor(new CborTag(98, inner))))).toBe(
      'ERR_ATTESTATION_BAD_STRUCTURE',
    );
  });

  it('accepts indefinite-length payload maps', () => {
    const doc = signWith(chain, {}, { indefiniteLength: true });
    expect(parseDocument(doc).raw.payload[0]).toBe(0xbf);
    expect(ok(doc).moduleId).toMatch(/^i-/);
  });

  it('accepts indefinite-length byte strings and arrays inside the payload', () => {
    // chunked module_id text, indefinite cabundle array, chunked PCR value
    const doc = signWith(chain);
    const parts = split(doc);
    const payload = encodeCbor(parts.payload);
    const cab = encodeCbor(parts.payload.get('cabundle') as CborValue);
    const indefCab = new Uint8Array([0x9f, ...cab.subarray(1), 0xff]);
    const idx = Buffer.from(payload).indexOf(Buffer.from(cab));
    const pcr4 = encodeCbor(pcr(4));
    const chunked = new Uint8Array([0x5f, 0x50, ...pcr(4, 16), 0x58, 0x20, ...pcr(4, 32), 0xff]);
    let edited = Buffer.concat([
      payload.subarray(0, idx),
      indefCab,
      payload.subarray(idx + cab.length),
    ]);
    const p4 = edited.indexOf(Buffer.from(pcr4));
    edited = Buffer.concat([edited.subarray(0, p4), chunked, edited.subarray(p4 + pcr4.length)]);
    const sig = sign('sha384', sigStructure(parts.protectedBytes, edited), {
      key: chain.leaf.privateKey,
      dsaEncoding: 'ieee-p1363',
    });
    const bytes = encodeCbor([
      parts.protectedBytes,
      new Map(),
      new Uint8Array(edited),
      new Uint8Array(sig),
    ]);
    const v = ok(bytes);
    expect(v.cabundle).toEqual(chain.cabundle);
    expect(v.pcrs.get(4)).toEqual(pcr(4));
  });

  it('accepts 1, 17 and 32 PCRs of 32, 48 and 64 bytes', () => {
    const seventeen = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [i, pcr(i + 1)]));
    expect(ok(signWith(chain, { pcrs: seventeen })).pcrs.size).toBe(17);
    const all = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [i, pcr(i + 1, 64)]));
    expect(ok(signWith(chain, { pcrs: all, digest: 'SHA512' })).pcrs.size).toBe(32);
    expect(
      ok(signWith(chain, { pcrs: { 5: pcr(5, 32) }, digest: 'SHA256' })).pcrs.get(5),
    ).toHaveLength(32);
  });

  it('rejects 0 or 33 PCRs, index 32 or -1, and 47-byte values', () => {
    expect(codeOf(() => parseDocument(crafted((m) => m.set('pcrs', new Map()))))).toBe(
      'ERR_ATTESTATION_BAD_STRUCTURE',
    );
    const many = new Map<CborValue, CborValue>(Array.from({ length: 33 }, (_, i) => [i, pcr(1)]));
    expect(codeOf(() => parseDocument(crafted((m) => m.set('pcrs', many))))).toBe(
      'ERR_ATTESTATION_BAD_STRUCTURE',
    );
    for (const bad of [32, -1, 'x']) {
      const pcrs = new Map<CborValue, CborValue>([[bad, pcr(1)]]);
      expect(codeOf(() => parseDocument(crafted((m) => m.set('pcrs', pcrs))))).toBe(
        'ERR_ATTESTATION_BAD_STRUCTURE',
      );
    }
    const short = new Map<CborValue, CborValue>([[0, pcr(1, 47)]]);
    expect(codeOf(() => parseDocument(crafted((m) => m.set('pcrs', short))))).toBe(
      'ERR_ATTESTATION_FIELD_SIZE',
    );
    // the signer refuses to make such a document
    expect(codeOf(() => signWith(chain, { pcrs: { 0: pcr(1, 47) } }))).toBe(
      'ERR_ATTESTATION_SIGNER',
    );
  });

  it('accepts 1024-byte public_key, user_data and nonce; rejects 1025', () => {
    const big = (b: number) => pcr(b, 1024);
    const v = ok(signWith(chain, { publicKey: big(1), userData: big(2), nonce: big(3) }));
    expect([v.publicKey?.length, v.userData?.length, v.nonce?.length]).toEqual([1024, 1024, 1024]);
    for (const field of ['public_key', 'user_data', 'nonce']) {
      const e = (() => {
        try {
          parseDocument(crafted((m) => m.set(field, pcr(1, 1025))));
        } catch (err) {
          return err as AttestationError;
        }
        throw new Error('accepted');
      })();
      expect(e.code).toBe('ERR_ATTESTATION_FIELD_SIZE');
      expect(e.field).toBe(`payload.${field}`);
      expect(e.message).toContain(`payload.${field}`);
    }
  });

  it('treats absent and null optional fields alike', () => {
    const doc = crafted((m) => {
      m.delete('public_key');
      m.delete('nonce');
    });
    const v = ok(doc);
    expect(v.publicKey).toBeNull();
    expect(v.nonce).toBeNull();
  });

  it('rejects missing or mistyped required fields naming them', () => {
    const cases: [string, CborValue | undefined, string][] = [
      ['module_id', undefined, 'ERR_ATTESTATION_BAD_STRUCTURE'],
      ['module_id', '', 'ERR_ATTESTATION_FIELD_SIZE'],
      ['module_id', 5, 'ERR_ATTESTATION_BAD_STRUCTURE'],
      ['digest', 'MD5', 'ERR_ATTESTATION_BAD_STRUCTURE'],
      ['timestamp', -5, 'ERR_ATTESTATION_BAD_STRUCTURE'],
      ['timestamp', '2024', 'ERR_ATTESTATION_BAD_STRUCTURE'],
      ['timestamp', 2n ** 64n - 1n, 'ERR_ATTESTATION_BAD_STRUCTURE'],
      ['certificate', new Uint8Array(0), 'ERR_ATTESTATION_FIELD_SIZE'],
      ['certificate', pcr(1, 1025), 'ERR_ATTESTATION_FIELD_SIZE'],
      ['cabundle', pcr(1, 10), 'ERR_ATTESTATION_BAD_STRUCTURE'],
      ['cabundle', [new Uint8Array(0)], 'ERR_ATTESTATION_FIELD_SIZE'],
      ['pcrs', [pcr(1)], 'ERR_ATTESTATION_BAD_STRUCTURE'],
      ['nonce', 'text', 'ERR_ATTESTATION_BAD_STRUCTURE'],
    ];
    for (const [field, value, code] of cases) {
      const doc = crafted((m) => (value === undefined ? m.delete(field) : m.set(field, value)));
      let err: AttestationError | undefined;
      try {
        parseDocument(doc);
      } catch (e) {
        err = e as AttestationError;
      }
      expect(err, field).toBeInstanceOf(AttestationError);
      expect(err?.code, `${field}=${String(value)}`).toBe(code);
      expect(err?.message).toContain(`payload.${field}`);
    }
  });

  it('rejects payloads over 16 KiB (FIELD_SIZE) and non-array COSE (BAD_STRUCTURE)', () => {
    const doc = crafted((m) => m.set('extra', new Uint8Array(17 * 1024)));
    expect(codeOf(() => parseDocument(doc))).toBe('ERR_ATTESTATION_FIELD_SIZE');
    expect(codeOf(() => parseDocument(encodeCbor(new Map([[1, 2]]))))).toBe(
      'ERR_ATTESTATION_BAD_STRUCTURE',
    );
    expect(codeOf(() => parseDocument(encodeCbor([new Uint8Array(1), new Map()])))).toBe(
      'ERR_ATTESTATION_BAD_STRUCTURE',
    );
  });

  it('rejects unsupported or missing algorithms', () => {
    const parts = split(signWith(chain));
    for (const [hdr, code] of [
      [new Map([[1, -37]]), 'ERR_ATTESTATION_UNSUPPORTED_ALG'],
      [new Map([[1, 'ES384']]), 'ERR_ATTESTATION_UNSUPPORTED_ALG'],
      [new Map([[4, new Uint8Array(2)]]), 'ERR_ATTESTATION_BAD_STRUCTURE'],
      [
        new Map<CborValue, CborValue>([
          [1, -35],
          [2, [99]],
        ]),
        'ERR_ATTESTATION_UNSUPPORTED_ALG',
      ],
    ] as const) {
      const doc = join({ ...parts, protectedBytes: encodeCbor(hdr) });
      expect(codeOf(() => parseDocument(doc))).toBe(code);
    }
    expect(codeOf(() => parseDocument(join({ ...parts, protectedBytes: new Uint8Array(0) })))).toBe(
      'ERR_ATTESTATION_BAD_STRUCTURE',
    );
  });

  it('rejects bad CBOR: duplicate keys, bad UTF-8, huge declared lengths, deep nesting', () => {
    const dup = new Uint8Array([0xa2, 0x01, 0x01, 0x01, 0x02]);
    expect(codeOf(() => decodeCbor(dup, 'x'))).toBe('ERR_ATTESTATION_MALFORMED_CBOR');
    expect(codeOf(() => decodeCbor(new Uint8Array([0x62, 0xc3, 0x28]), 'x'))).toBe(
      'ERR_ATTESTATION_MALFORMED_CBOR',
    );
    expect(
      codeOf(() =>
        decodeCbor(new Uint8Array([0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 'x'),
      ),
    ).toBe('ERR_ATTESTATION_MALFORMED_CBOR');
    expect(codeOf(() => decodeCbor(new Uint8Array([0x9b, 0, 0, 0, 1, 0, 0, 0, 0]), 'x'))).toBe(
      'ERR_ATTESTATION_MALFORMED_CBOR',
    );
    expect(codeOf(() => parseDocument(new Uint8Array(1000).fill(0x81)))).toBe(
      'ERR_ATTESTATION_MALFORMED_CBOR',
    );
    expect(codeOf(() => parseDocument(new Uint8Array([0x9f, 0x9f, 0x9f])))).toBe(
      'ERR_ATTESTATION_MALFORMED_CBOR',
    );
    expect(codeOf(() => decodeCbor(new Uint8Array([0xff]), 'x'))).toBe(
      'ERR_ATTESTATION_MALFORMED_CBOR',
    );
    expect(codeOf(() => decodeCbor(new Uint8Array([0x1c]), 'x'))).toBe(
      'ERR_ATTESTATION_MALFORMED_CBOR',
    );
  });

  it('round-trips the CBOR encoder and decoder', () => {
    const v: CborValue = [
      0,
      23,
      24,
      255,
      256,
      65535,
      65536,
      2 ** 32,
      2 ** 53 - 1,
      -1,
      -24,
      -25,
      -1000,
      'ü',
      pcr(7, 300),
      null,
      true,
      false,
    ];
    expect(decodeCbor(encodeCbor(v), 'x')).toEqual(v);
    const m = new IndefiniteMap([['a', 1]]);
    expect(encodeCbor(m)).toEqual(new Uint8Array([0xbf, 0x61, 0x61, 0x01, 0xff]));
    expect(decodeCbor(new Uint8Array([0xf9, 0x3c, 0x00]), 'x')).toBe(1);
    expect(decodeCbor(new Uint8Array([0xfa, 0x3f, 0xc0, 0, 0]), 'x')).toBe(1.5);
  });
});

describe('parsed documents own their bytes', () => {
  it('changing the input afterwards changes nothing in the parsed document', () => {
    const bytes = signWith(chain, { nonce: pcr(9, 32) });
    for (const input of [bytes.slice(), bytes.slice().buffer]) {
      const doc = parseDocument(input);
      const before = structuredClone({ ...doc, date: undefined });
      (input instanceof ArrayBuffer ? new Uint8Array(input) : input).fill(0);
      expect({ ...doc, date: undefined }).toEqual(before);
      expect(
        verifyDocument(
          encodeCbor([doc.raw.protected, new Map(), doc.raw.payload, doc.raw.signature]),
          { roots: [chain.root.pem] },
        ).moduleId,
      ).toBe(doc.moduleId);
    }
  });
});

describe('sigStructure', () => {
  it('writes the same bytes as the CBOR encoder for every length form', () => {
    for (const pn of [0, 1, 23, 24, 255, 256]) {
      for (const n of [0, 23, 24, 255, 256, 4500, 65_535, 65_536, 70_000]) {
        const prot = pcr(0x11, pn);
        const payload = pcr(0x22, n);
        const want = encodeCbor(['Signature1', prot, new Uint8Array(0), payload]);
        // Buffer comparison: toEqual on 70 kB arrays takes seconds
        expect(Buffer.from(sigStructure(prot, payload)).equals(Buffer.from(want))).toBe(true);
      }
    }
  });
});

describe('input helpers', () => {
  const doc = signWith(chain);
  it('decodes hex, 0x-hex, base64, base64url and wrapped base64', () => {
    const hex = Buffer.from(doc).toString('hex');
    const b64 = Buffer.from(doc).toString('base64');
    const url = Buffer.from(doc).toString('base64url');
    expect(decodeDocumentInput(hex)).toEqual(doc);
    expect(decodeDocumentInput(`0x${hex.toUpperCase()}`)).toEqual(doc);
    expect(decodeDocumentInput(b64)).toEqual(doc);
    expect(decodeDocumentInput(url)).toEqual(doc);
    expect(decodeDocumentInput(b64.replace(/(.{76})/g, '$1\n'))).toEqual(doc);
    expect(ok(b64 as unknown as Uint8Array).moduleId).toBe(parseDocument(hex).moduleId);
  });

  it('rejects non-encodings with BAD_INPUT', () => {
    for (const bad of ['', 'not base64 !!', 'abc*', '=']) {
      expect(codeOf(() => decodeDocumentInput(bad))).toBe('ERR_ATTESTATION_BAD_INPUT');
    }
    for (const bad of [null, undefined, 42, {}, [1, 2]]) {
      expect(codeOf(() => parseDocument(bad as unknown as Uint8Array))).toBe(
        'ERR_ATTESTATION_BAD_INPUT',
      );
      expect(codeOf(() => verifyDocument(bad as unknown as Uint8Array))).toBe(
        'ERR_ATTESTATION_BAD_INPUT',
      );
    }
  });

  it('rejects bad options with BAD_INPUT', () => {
    for (const bad of [null, 5, 'x']) {
      expect(codeOf(() => verifyDocument(doc, bad as never))).toBe('ERR_ATTESTATION_BAD_INPUT');
      if (bad !== null) {
        expect(codeOf(() => verifyDocument(doc, { roots, policy: bad as never }))).toBe(
          'ERR_ATTESTATION_BAD_INPUT',
        );
      }
    }
    expect(codeOf(() => verifyDocument(doc, { roots, at: 'yesterday' as never }))).toBe(
      'ERR_ATTESTATION_BAD_INPUT',
    );
    expect(codeOf(() => verifyDocument(doc, { roots: 'pem' as never }))).toBe(
      'ERR_ATTESTATION_BAD_INPUT',
    );
  });

  it('exports the stable code list', () => {
    expect(ATTESTATION_ERROR_CODES).toContain('ERR_ATTESTATION_CERT_EXPIRED');
    expect(new Set(ATTESTATION_ERROR_CODES).size).toBe(ATTESTATION_ERROR_CODES.length);
  });
});

describe.skipIf(!HAVE_FIXTURES)('real documents in text form', () => {
  it('verifies a fixture given as base64 and as hex', () => {
    const f = loadFixtures().find((x) => x.expect === 'valid' && !x.debug_zero_pcr012)!;
    for (const text of [
      Buffer.from(f.bytes).toString('base64'),
      Buffer.from(f.bytes).toString('hex'),
    ]) {
      expect(verifyDocument(text, { at: 'document' }).moduleId).toBe(f.module_id);
    }
  });
});
