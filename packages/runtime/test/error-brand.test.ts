import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// The built ESM and CommonJS entry points, as `import` and `require` load them in one process.
type Api = typeof import('../src/index.js');
const esmUrl = new URL('../dist/index.js', import.meta.url).href;
const cjsPath = new URL('../dist/index.cjs', import.meta.url).pathname;

describe('RuntimeError across the ESM and CommonJS builds', () => {
  it('instanceof holds both ways, and only for RuntimeErrors', async () => {
    const esm = (await import(esmUrl)) as Api;
    const cjs = createRequire(import.meta.url)(cjsPath) as Api;
    expect(esm.RuntimeError).not.toBe(cjs.RuntimeError);
    const fromEsm = new esm.RuntimeError('ERR_RUNTIME_HOSTS', 'from esm');
    const fromCjs = new cjs.RuntimeError('ERR_RUNTIME_HOSTS', 'from cjs');
    for (const err of [fromEsm, fromCjs]) {
      expect(err instanceof esm.RuntimeError).toBe(true);
      expect(err instanceof cjs.RuntimeError).toBe(true);
      expect(err instanceof Error).toBe(true);
    }
    const lookalike = Object.assign(new Error('x'), {
      name: 'RuntimeError',
      code: 'ERR_RUNTIME_HOSTS',
    });
    for (const other of [lookalike, new Error('x'), null, undefined, 'ERR_RUNTIME_HOSTS', {}]) {
      expect(other instanceof esm.RuntimeError).toBe(false);
      expect(other instanceof cjs.RuntimeError).toBe(false);
    }
    // the brand is not enumerable: serialisation and logging are unchanged
    expect(Object.keys(fromEsm)).not.toContain('BRAND');
    expect(
      Object.getOwnPropertySymbols(fromEsm).every(
        (s) => !Object.getOwnPropertyDescriptor(fromEsm, s)?.enumerable,
      ),
    ).toBe(true);
    expect(JSON.parse(JSON.stringify(fromCjs)).code).toBe('ERR_RUNTIME_HOSTS');
  });
});
