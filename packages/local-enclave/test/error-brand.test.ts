import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// The built ESM and CommonJS entry points, as `import` and `require` load them in one process.
type Api = typeof import('../src/index.js');
const esmUrl = new URL('../dist/index.js', import.meta.url).href;
const cjsPath = new URL('../dist/index.cjs', import.meta.url).pathname;

describe('LocalEnclaveError across the ESM and CommonJS builds', () => {
  it('instanceof holds both ways, and only for LocalEnclaveErrors', async () => {
    const esm = (await import(esmUrl)) as Api;
    const cjs = createRequire(import.meta.url)(cjsPath) as Api;
    expect(esm.LocalEnclaveError).not.toBe(cjs.LocalEnclaveError);
    const fromEsm = new esm.LocalEnclaveError('ERR_LOCAL_ENCLAVE_KERNEL_MISSING', 'from esm');
    const fromCjs = new cjs.LocalEnclaveError('ERR_LOCAL_ENCLAVE_KERNEL_MISSING', 'from cjs');
    for (const err of [fromEsm, fromCjs]) {
      expect(err instanceof esm.LocalEnclaveError).toBe(true);
      expect(err instanceof cjs.LocalEnclaveError).toBe(true);
      expect(err instanceof Error).toBe(true);
    }
    const lookalike = Object.assign(new Error('x'), {
      name: 'LocalEnclaveError',
      code: 'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
    });
    for (const other of [
      lookalike,
      new Error('x'),
      null,
      undefined,
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      {},
    ]) {
      expect(other instanceof esm.LocalEnclaveError).toBe(false);
      expect(other instanceof cjs.LocalEnclaveError).toBe(false);
    }
    // the brand is not enumerable: serialisation and logging are unchanged
    expect(Object.keys(fromEsm)).not.toContain('BRAND');
    expect(
      Object.getOwnPropertySymbols(fromEsm).every(
        (s) => !Object.getOwnPropertyDescriptor(fromEsm, s)?.enumerable,
      ),
    ).toBe(true);
    expect(JSON.parse(JSON.stringify(fromCjs)).code).toBe('ERR_LOCAL_ENCLAVE_KERNEL_MISSING');
  });
});
