import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// The built ESM and CommonJS entry points, as `import` and `require` load them in one process.
type Api = typeof import('../src/index.js');
const esmUrl = new URL('../dist/index.js', import.meta.url).href;
const cjsPath = new URL('../dist/index.cjs', import.meta.url).pathname;

describe('VsockError across the ESM and CommonJS builds', () => {
  it('instanceof holds both ways, and only for VsockErrors', async () => {
    const esm = (await import(esmUrl)) as Api;
    const cjs = createRequire(import.meta.url)(cjsPath) as Api;
    expect(esm.VsockError).not.toBe(cjs.VsockError);
    const fromEsm = new esm.VsockError('ERR_VSOCK_LISTEN', 'from esm');
    const fromCjs = new cjs.VsockError('ERR_VSOCK_LISTEN', 'from cjs');
    for (const err of [fromEsm, fromCjs]) {
      expect(err instanceof esm.VsockError).toBe(true);
      expect(err instanceof cjs.VsockError).toBe(true);
      expect(err instanceof Error).toBe(true);
    }
    const lookalike = Object.assign(new Error('x'), {
      name: 'VsockError',
      code: 'ERR_VSOCK_LISTEN',
    });
    for (const other of [lookalike, new Error('x'), null, undefined, 'ERR_VSOCK_LISTEN', {}]) {
      expect(other instanceof esm.VsockError).toBe(false);
      expect(other instanceof cjs.VsockError).toBe(false);
    }
    // the brand is not enumerable: serialisation and logging are unchanged
    expect(Object.keys(fromEsm)).not.toContain('BRAND');
    expect(
      Object.getOwnPropertySymbols(fromEsm).every(
        (s) => !Object.getOwnPropertyDescriptor(fromEsm, s)?.enumerable,
      ),
    ).toBe(true);
    expect(JSON.parse(JSON.stringify(fromCjs)).code).toBe('ERR_VSOCK_LISTEN');
  });
});
