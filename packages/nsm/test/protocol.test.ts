import { describe, expect, it } from 'vitest';
import { NsmError } from '../src/index.js';
import {
  checkRawRequest,
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  expectResponse,
  type NsmRequest,
  type NsmResponse,
} from '../src/protocol.js';
import { cbor, hex, rejectsWith } from './helpers.js';

const fromHex = (h: string) => new Uint8Array(Buffer.from(h, 'hex'));

describe('request encoding (serde_cbor shape)', () => {
  it('matches the byte examples of nitro-facts.md', () => {
    expect(hex(encodeRequest({ kind: 'GetRandom' }))).toBe('6947657452616e646f6d');
    expect(hex(encodeRequest({ kind: 'DescribePCR', index: 0 }))).toBe(
      'a16b4465736372696265504352a165696e64657800',
    );
    expect(hex(encodeRequest({ kind: 'LockPCRs', range: 32 }))).toBe(
      'a1684c6f636b50435273a16572616e67651820',
    );
  });

  it('matches the bytes the selftest sent to a real /dev/nsm', () => {
    expect(hex(encodeRequest({ kind: 'DescribeNSM' }))).toBe('6b44657363726962654e534d');
    const att = encodeRequest({
      kind: 'Attestation',
      userData: new TextEncoder().encode('hello from nsm-vm'),
      nonce: null,
      publicKey: null,
    });
    expect(
      hex(att).startsWith('a16b4174746573746174696f6ea369757365725f646174615168656c6c6f'),
    ).toBe(true);
  });

  it('writes every index in its shortest uint form (QEMU rejects longer forms)', () => {
    const idx = (index: number) => hex(encodeRequest({ kind: 'LockPCR', index })).slice(32);
    expect(idx(23)).toBe('17');
    expect(idx(24)).toBe('1818');
    expect(idx(255)).toBe('18ff');
    expect(idx(256)).toBe('190100');
    expect(idx(65535)).toBe('19ffff');
  });

  it('writes ExtendPCR fields in order, data as a byte string, absent options as null', () => {
    expect(hex(encodeRequest({ kind: 'ExtendPCR', index: 16, data: Uint8Array.of(1, 2) }))).toBe(
      'a169457874656e64504352a265696e646578106464617461420102',
    );
    expect(hex(encodeRequest({ kind: 'ExtendPCR', index: 16, data: Buffer.from([9]) }))).toBe(
      'a169457874656e64504352a265696e646578106464617461' + '4109',
    );
    expect(
      hex(encodeRequest({ kind: 'Attestation', userData: null, nonce: null, publicKey: null })),
    ).toBe(
      'a16b4174746573746174696f6ea369757365725f64617461f6656e6f6e6365f66a7075626c69635f6b6579f6',
    );
  });

  it('round-trips every request through the simulator decoder', () => {
    const reqs: NsmRequest[] = [
      { kind: 'DescribeNSM' },
      { kind: 'GetRandom' },
      { kind: 'DescribePCR', index: 31 },
      { kind: 'LockPCR', index: 40 },
      { kind: 'LockPCRs', range: 0 },
      { kind: 'ExtendPCR', index: 65535, data: new Uint8Array(300).fill(3) },
      {
        kind: 'Attestation',
        userData: Uint8Array.of(1),
        nonce: null,
        publicKey: new Uint8Array(0),
      },
    ];
    for (const r of reqs) expect(decodeRequest(encodeRequest(r))).toEqual(r);
  });

  it('decodes what the NSM rejects as InvalidOperation to null', () => {
    for (const bad of [
      Uint8Array.of(0xff),
      cbor('NoSuchRequest'),
      cbor({ DescribePCR: { index: 70000 } }),
      cbor({ DescribePCR: { index: -1 } }),
      cbor({ DescribePCR: {} }),
      cbor({ ExtendPCR: { index: 1, data: 'text' } }),
      cbor({ GetRandom: {} }),
      cbor({ DescribePCR: { index: 1 }, LockPCR: { index: 1 } }),
      cbor({ Attestation: { nonce: 5 } }),
      cbor([1, 2]),
    ]) {
      expect(decodeRequest(bad)).toBeNull();
    }
    // serde: missing Option fields are None
    expect(decodeRequest(cbor({ Attestation: {} }))).toEqual({
      kind: 'Attestation',
      userData: null,
      nonce: null,
      publicKey: null,
    });
  });
});

describe('response decoding', () => {
  it('decodes the DescribeNSM answer of a real /dev/nsm (QEMU field order)', () => {
    const raw = fromHex(
      'a16b44657363726962654e534da76664696765737466534841333834686d61785f706372731820696d6f64756c655f69646d692d3233342d656e63353637386b6c6f636b65645f70637273806d76657273696f6e5f6d616a6f72016d76657273696f6e5f6d696e6f72006d76657273696f6e5f706174636800',
    );
    expect(decodeResponse(raw)).toEqual({
      kind: 'DescribeNSM',
      description: {
        versionMajor: 1,
        versionMinor: 0,
        versionPatch: 0,
        moduleId: 'i-234-enc5678',
        maxPcrs: 32,
        lockedPcrs: [],
        digest: 'SHA384',
      },
    });
  });

  it('decodes unit answers and device errors', () => {
    expect(decodeResponse(fromHex('674c6f636b504352'))).toEqual({ kind: 'LockPCR' });
    expect(decodeResponse(fromHex('684c6f636b50435273'))).toEqual({ kind: 'LockPCRs' });
    const err = fromHex('a1654572726f726c496e76616c6964496e646578');
    expect(decodeResponse(err)).toEqual({ kind: 'Error', error: 'InvalidIndex' });
    let thrown: unknown;
    try {
      expectResponse(err, 'DescribePCR', 'describePcr(40)');
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(NsmError);
    expect((thrown as NsmError).code).toBe('ERR_NSM_INVALID_INDEX');
    expect((thrown as NsmError).nsmError).toBe('InvalidIndex');
    expect((thrown as NsmError).message).toContain('describePcr(40)');
  });

  it('maps every NSM error name to its code', () => {
    const table: Record<string, string> = {
      InvalidArgument: 'ERR_NSM_INVALID_ARGUMENT',
      InvalidIndex: 'ERR_NSM_INVALID_INDEX',
      InvalidResponse: 'ERR_NSM_INVALID_RESPONSE',
      ReadOnlyIndex: 'ERR_NSM_READ_ONLY_INDEX',
      InvalidOperation: 'ERR_NSM_INVALID_OPERATION',
      BufferTooSmall: 'ERR_NSM_BUFFER_TOO_SMALL',
      InputTooLarge: 'ERR_NSM_INPUT_TOO_LARGE',
      InternalError: 'ERR_NSM_INTERNAL_ERROR',
      Whatever: 'ERR_NSM_UNEXPECTED_RESPONSE',
    };
    for (const [name, code] of Object.entries(table)) {
      try {
        expectResponse(encodeResponse({ kind: 'Error', error: name }), 'GetRandom', 'x');
        expect.unreachable();
      } catch (e) {
        expect((e as NsmError).code).toBe(code);
      }
    }
  });

  it('round-trips every response', () => {
    const res: NsmResponse[] = [
      { kind: 'DescribePCR', lock: true, data: new Uint8Array(48).fill(1) },
      { kind: 'ExtendPCR', data: new Uint8Array(48).fill(2) },
      { kind: 'LockPCR' },
      { kind: 'LockPCRs' },
      { kind: 'Attestation', document: new Uint8Array(2000).fill(3) },
      { kind: 'GetRandom', random: new Uint8Array(256).fill(4) },
      { kind: 'Error', error: 'ReadOnlyIndex' },
      {
        kind: 'DescribeNSM',
        description: {
          versionMajor: 1,
          versionMinor: 2,
          versionPatch: 3,
          moduleId: 'i-1-enc2',
          maxPcrs: 32,
          lockedPcrs: [0, 1, 300],
          digest: 'SHA512',
        },
      },
    ];
    for (const r of res) {
      const back = decodeResponse(encodeResponse(r));
      expect(JSON.stringify(back)).toBe(JSON.stringify(r));
    }
  });

  it('rejects responses that are not NSM answers with ERR_NSM_UNEXPECTED_RESPONSE', () => {
    for (const bad of [
      Uint8Array.of(0xff),
      cbor(5),
      cbor({ DescribePCR: { lock: 'yes', data: new Uint8Array(48) } }),
      cbor({ DescribeNSM: { version_major: 1 } }),
      cbor({ Nope: {} }),
      cbor({ Error: 5 }),
    ]) {
      expect(() => decodeResponse(bad, 'describePcr(1)')).toThrowError(
        expect.objectContaining({ code: 'ERR_NSM_UNEXPECTED_RESPONSE' }),
      );
    }
    expect(() => expectResponse(encodeResponse({ kind: 'LockPCR' }), 'LockPCRs', 'x')).toThrowError(
      expect.objectContaining({ code: 'ERR_NSM_UNEXPECTED_RESPONSE' }),
    );
  });
});

describe("codec (the attestation package's CBOR, checked against cbor-x)", () => {
  const requests: NsmRequest[] = [
    { kind: 'DescribeNSM' },
    { kind: 'GetRandom' },
    { kind: 'DescribePCR', index: 0 },
    { kind: 'LockPCR', index: 300 },
    { kind: 'LockPCRs', range: 65535 },
    { kind: 'ExtendPCR', index: 23, data: new Uint8Array(1024).fill(9) },
    {
      kind: 'Attestation',
      userData: Uint8Array.of(1, 2),
      nonce: null,
      publicKey: new Uint8Array(300).fill(7),
    },
  ];
  const responses: NsmResponse[] = [
    { kind: 'DescribePCR', lock: false, data: new Uint8Array(48).fill(1) },
    { kind: 'LockPCRs' },
    { kind: 'Error', error: 'InvalidIndex' },
    {
      kind: 'DescribeNSM',
      description: {
        versionMajor: 1,
        versionMinor: 0,
        versionPatch: 7,
        moduleId: 'i-0123456789abcdef0-enc0123456789abcdef',
        maxPcrs: 32,
        lockedPcrs: [0, 1, 2, 3, 4, 8],
        digest: 'SHA384',
      },
    },
  ];
  // The values cbor-x encoded before the switch (serde_cbor's shape), built independently of src/.
  const wire = (m: NsmRequest | NsmResponse): unknown => {
    switch (m.kind) {
      case 'DescribeNSM':
        return 'description' in m
          ? {
              DescribeNSM: {
                version_major: m.description.versionMajor,
                version_minor: m.description.versionMinor,
                version_patch: m.description.versionPatch,
                module_id: m.description.moduleId,
                max_pcrs: m.description.maxPcrs,
                locked_pcrs: m.description.lockedPcrs,
                digest: m.description.digest,
              },
            }
          : 'DescribeNSM';
      case 'GetRandom':
        return 'GetRandom';
      case 'LockPCRs':
        return 'range' in m ? { LockPCRs: { range: m.range } } : 'LockPCRs';
      case 'DescribePCR':
        return 'index' in m
          ? { DescribePCR: { index: m.index } }
          : { DescribePCR: { lock: m.lock, data: m.data } };
      case 'LockPCR':
        return 'index' in m ? { LockPCR: { index: m.index } } : 'LockPCR';
      case 'ExtendPCR':
        return 'index' in m
          ? { ExtendPCR: { index: m.index, data: m.data } }
          : { ExtendPCR: { data: m.data } };
      case 'Attestation':
        return 'userData' in m
          ? {
              Attestation: { user_data: m.userData, nonce: m.nonce, public_key: m.publicKey },
            }
          : { Attestation: { document: m.document } };
      case 'Error':
        return { Error: m.error };
      default:
        throw new Error('unreachable');
    }
  };

  it('encodes every request and response byte-identical to cbor-x with serde options', () => {
    for (const r of requests) expect(hex(encodeRequest(r))).toBe(hex(cbor(wire(r))));
    for (const r of responses) expect(hex(encodeResponse(r))).toBe(hex(cbor(wire(r))));
  });

  it('decodes what cbor-x encodes, and rejects tags and non-text keys like malformed input', () => {
    for (const r of requests) expect(decodeRequest(cbor(wire(r)))).toEqual(r);
    for (const r of responses) expect(decodeResponse(cbor(wire(r)))).toEqual(r);
    expect(decodeRequest(Uint8Array.of(0xa1, 0x01, 0xa0))).toBeNull(); // {1: {}}
    expect(decodeRequest(Uint8Array.of(0xc1, 0x6b, ...Buffer.from('DescribeNSM')))).toBeNull();
    expect(() => decodeResponse(Uint8Array.of(0xa1, 0x01, 0xa0), 'x')).toThrowError(
      expect.objectContaining({ code: 'ERR_NSM_UNEXPECTED_RESPONSE' }),
    );
  });
});

describe('checkRawRequest', () => {
  it('rejects empty, oversize and non-byte requests', async () => {
    const run = (r: unknown, sizeLimit = true) =>
      Promise.resolve().then(() => checkRawRequest(r as Uint8Array, 't', { sizeLimit }));
    await rejectsWith(run(new Uint8Array(0)), 'ERR_NSM_INVALID_ARGUMENT');
    await rejectsWith(run(new Uint8Array(4097)), 'ERR_NSM_INPUT_TOO_LARGE');
    await rejectsWith(run('x'), 'ERR_NSM_INVALID_ARGUMENT');
    await run(new Uint8Array(4096));
    await run(new Uint8Array(5000), false);
  });
});
