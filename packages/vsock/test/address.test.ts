import { describe, expect, it } from 'vitest';
import {
  CID_ANY,
  CID_HOST,
  CID_HYPERVISOR,
  CID_LOCAL,
  CID_PARENT,
  formatVsockAddress,
  PORT_ANY,
  parseVsockAddress,
  VsockError,
} from '../src/index.js';

describe('constants', () => {
  it('match the kernel values', () => {
    expect([CID_HYPERVISOR, CID_LOCAL, CID_HOST, CID_PARENT]).toEqual([0, 1, 2, 3]);
    expect(CID_ANY).toBe(0xffffffff);
    expect(PORT_ANY).toBe(0xffffffff);
  });
});

describe('formatVsockAddress', () => {
  it('prints mdlayher-style names', () => {
    expect(formatVsockAddress({ cid: 16, port: 5000 })).toBe('vm(16):5000');
    expect(formatVsockAddress({ cid: 1, port: 5000 })).toBe('local(1):5000');
    expect(formatVsockAddress({ cid: 2, port: 80 })).toBe('host(2):80');
    expect(formatVsockAddress({ cid: 0, port: 1 })).toBe('hypervisor(0):1');
    expect(formatVsockAddress({ cid: 3, port: 8000 })).toBe('vm(3):8000');
    expect(formatVsockAddress({ cid: CID_ANY, port: 9 })).toBe('any(4294967295):9');
  });

  it('rejects bad fields with typed errors', () => {
    expect(() => formatVsockAddress({ cid: -1, port: 1 })).toThrow(
      expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }),
    );
    expect(() => formatVsockAddress({ cid: 1, port: 2 ** 32 })).toThrow(/address\.port/);
    expect(() => formatVsockAddress(null as never)).toThrow(VsockError);
  });
});

describe('parseVsockAddress', () => {
  it.each([
    ['vsock://16:5000', 16, 5000],
    ['vsock://16:5000/', 16, 5000],
    ['vsock:3:8000', 3, 8000],
    ['16:5000', 16, 5000],
    [' 1:1 ', 1, 1],
    ['vm(16):5000', 16, 5000],
    ['local(1):5000', 1, 5000],
    ['host(2):443', 2, 443],
    ['hypervisor(0):1', 0, 1],
    ['host:443', 2, 443],
    ['any:7', CID_ANY, 7],
    ['4294967295:4294967295', CID_ANY, PORT_ANY],
  ])('%s', (input, cid, port) => {
    expect(parseVsockAddress(input)).toEqual({ cid, port });
  });

  it('round-trips formatVsockAddress', () => {
    for (const a of [
      { cid: 0, port: 0 },
      { cid: 1, port: 22 },
      { cid: 2, port: 3 },
      { cid: 99, port: 65536 },
      { cid: CID_ANY, port: 1 },
    ]) {
      expect(parseVsockAddress(formatVsockAddress(a))).toEqual(a);
    }
  });

  it.each([
    ['', 'ERR_INVALID_ARG_VALUE'],
    ['16', 'ERR_INVALID_ARG_VALUE'],
    ['16:', 'ERR_INVALID_ARG_VALUE'],
    [':5000', 'ERR_INVALID_ARG_VALUE'],
    ['x:5000', 'ERR_INVALID_ARG_VALUE'],
    ['16:http', 'ERR_INVALID_ARG_VALUE'],
    ['16:-1', 'ERR_INVALID_ARG_VALUE'],
    ['local(2):5000', 'ERR_INVALID_ARG_VALUE'],
    ['4294967296:1', 'ERR_OUT_OF_RANGE'],
    ['1:4294967296', 'ERR_OUT_OF_RANGE'],
  ])('rejects %j with %s naming the input', (input, code) => {
    try {
      parseVsockAddress(input);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(VsockError);
      expect((err as VsockError).code).toBe(code);
    }
  });

  it('rejects non-strings with ERR_INVALID_ARG_TYPE', () => {
    expect(() => parseVsockAddress(16 as never)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }),
    );
  });
});
