import { describe, expect, it } from 'vitest';
import {
  connect,
  createEmulatedTransport,
  createServer,
  localCid,
  VsockError,
  vsockDialer,
} from '../src/index.js';

const emu = createEmulatedTransport({ dir: '/tmp/ee-vsock-validation' });

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(VsockError);
    return (err as VsockError).code;
  }
  return undefined;
}

describe('argument validation (synchronous, typed, before any socket exists)', () => {
  it('connect checks cid/port ranges and types', () => {
    expect(codeOf(() => connect({ cid: -1, port: 1, transport: emu }))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => connect({ cid: 1.5, port: 1, transport: emu }))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => connect({ cid: 2 ** 32, port: 1, transport: emu }))).toBe(
      'ERR_OUT_OF_RANGE',
    );
    expect(codeOf(() => connect({ cid: 3, port: 2 ** 32, transport: emu }))).toBe(
      'ERR_OUT_OF_RANGE',
    );
    expect(codeOf(() => connect({ cid: '3' as never, port: 1, transport: emu }))).toBe(
      'ERR_INVALID_ARG_TYPE',
    );
    expect(codeOf(() => connect({ cid: 3, port: 1, timeout: -5, transport: emu }))).toBe(
      'ERR_OUT_OF_RANGE',
    );
    expect(
      codeOf(() => connect({ cid: 3, port: 1, connectTimeout: Number.NaN, transport: emu })),
    ).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => connect({ cid: 3, port: 1, signal: {} as never, transport: emu }))).toBe(
      'ERR_INVALID_ARG_TYPE',
    );
    expect(codeOf(() => connect(null as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(codeOf(() => connect('nonsense'))).toBe('ERR_INVALID_ARG_VALUE');
  });

  it('the message names the failing field', () => {
    expect(() => connect({ cid: 3, port: -2, transport: emu })).toThrow(/options\.port/);
    expect(() => connect({ cid: 3, port: 1, transport: {} as never })).toThrow(
      /options\.transport/,
    );
  });

  it('rejects transports that are not from this package', () => {
    expect(codeOf(() => connect({ cid: 3, port: 1, transport: { kind: 'kernel' } as never }))).toBe(
      'ERR_INVALID_ARG_TYPE',
    );
    expect(codeOf(() => createServer({ transport: {} as never }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(codeOf(() => localCid({ transport: {} as never }))).toBe('ERR_INVALID_ARG_TYPE');
  });

  it('listen checks port, cid and backlog', () => {
    const s = createServer({ transport: emu });
    expect(codeOf(() => s.listen({ port: -1 }))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => s.listen({ port: 1, cid: 2 ** 33 }))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => s.listen({ port: 1, backlog: -3 }))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => s.listen(undefined as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(s.listening).toBe(false);
  });

  it('createEmulatedTransport checks dir and localCid', () => {
    expect(codeOf(() => createEmulatedTransport({ dir: '' }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(codeOf(() => createEmulatedTransport({ dir: `/tmp/${'x'.repeat(120)}` }))).toBe(
      'ERR_INVALID_ARG_VALUE',
    );
    expect(codeOf(() => createEmulatedTransport({ dir: '/tmp/a', localCid: -1 }))).toBe(
      'ERR_OUT_OF_RANGE',
    );
  });

  it('vsockDialer validates eagerly', () => {
    expect(codeOf(() => vsockDialer({ cid: 3, port: -1 }))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => vsockDialer(undefined as never))).toBe('ERR_INVALID_ARG_TYPE');
  });

  it('close on a server that never listened reports ERR_SERVER_NOT_RUNNING', async () => {
    const err = await new Promise<Error | undefined>((resolve) =>
      createServer({ transport: emu }).close(resolve),
    );
    expect(err).toBeInstanceOf(VsockError);
    expect((err as VsockError).code).toBe('ERR_SERVER_NOT_RUNNING');
  });
});
