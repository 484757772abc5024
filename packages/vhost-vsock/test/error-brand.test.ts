import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// The built ESM and CommonJS entry points, as `import` and `require` load them in one process.
type Api = typeof import('../src/index.js');
const esmUrl = new URL('../dist/index.js', import.meta.url).href;
const cjsPath = new URL('../dist/index.cjs', import.meta.url).pathname;

describe('VhostVsockError across the ESM and CommonJS builds', () => {
  it('instanceof holds both ways, and only for VhostVsockErrors', async () => {
    const esm = (await import(esmUrl)) as Api;
    const cjs = createRequire(import.meta.url)(cjsPath) as Api;
    expect(esm.VhostVsockError).not.toBe(cjs.VhostVsockError);
    const fromEsm = new esm.VhostVsockError('ERR_VHOST_VSOCK_CLOSED', 'from esm');
    const fromCjs = new cjs.VhostVsockError('ERR_VHOST_VSOCK_CLOSED', 'from cjs');
    for (const err of [fromEsm, fromCjs]) {
      expect(err instanceof esm.VhostVsockError).toBe(true);
      expect(err instanceof cjs.VhostVsockError).toBe(true);
      expect(err instanceof Error).toBe(true);
    }
    const lookalike = Object.assign(new Error('x'), {
      name: 'VhostVsockError',
      code: 'ERR_VHOST_VSOCK_CLOSED',
    });
    for (const other of [
      lookalike,
      new Error('x'),
      null,
      undefined,
      'ERR_VHOST_VSOCK_CLOSED',
      {},
    ]) {
      expect(other instanceof esm.VhostVsockError).toBe(false);
      expect(other instanceof cjs.VhostVsockError).toBe(false);
    }
    // the brand is not enumerable: serialisation and logging are unchanged
    expect(Object.keys(fromEsm)).not.toContain('BRAND');
    expect(
      Object.getOwnPropertySymbols(fromEsm).every(
        (s) => !Object.getOwnPropertyDescriptor(fromEsm, s)?.enumerable,
      ),
    ).toBe(true);
    expect(JSON.parse(JSON.stringify(fromCjs)).code).toBe('ERR_VHOST_VSOCK_CLOSED');
  });
});
