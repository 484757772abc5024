import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// The built ESM and CommonJS entry points, as `import` and `require` load them in one process.
type Api = typeof import('../src/index.js');
const esmUrl = new URL('../dist/index.js', import.meta.url).href;
const cjsPath = new URL('../dist/index.cjs', import.meta.url).pathname;

describe('ProxyError across the ESM and CommonJS builds', () => {
  it('instanceof holds both ways, and only for ProxyErrors', async () => {
    const esm = (await import(esmUrl)) as Api;
    const cjs = createRequire(import.meta.url)(cjsPath) as Api;
    expect(esm.ProxyError).not.toBe(cjs.ProxyError);
    const fromEsm = new esm.ProxyError('ERR_PROXY_BAD_ENDPOINT', 'from esm');
    const fromCjs = new cjs.ProxyError('ERR_PROXY_BAD_ENDPOINT', 'from cjs');
    for (const err of [fromEsm, fromCjs]) {
      expect(err instanceof esm.ProxyError).toBe(true);
      expect(err instanceof cjs.ProxyError).toBe(true);
      expect(err instanceof Error).toBe(true);
    }
    const lookalike = Object.assign(new Error('x'), {
      name: 'ProxyError',
      code: 'ERR_PROXY_BAD_ENDPOINT',
    });
    for (const other of [
      lookalike,
      new Error('x'),
      null,
      undefined,
      'ERR_PROXY_BAD_ENDPOINT',
      {},
    ]) {
      expect(other instanceof esm.ProxyError).toBe(false);
      expect(other instanceof cjs.ProxyError).toBe(false);
    }
    // the brand is not enumerable: serialisation and logging are unchanged
    expect(Object.keys(fromEsm)).not.toContain('BRAND');
    expect(
      Object.getOwnPropertySymbols(fromEsm).every(
        (s) => !Object.getOwnPropertyDescriptor(fromEsm, s)?.enumerable,
      ),
    ).toBe(true);
    expect(JSON.parse(JSON.stringify(fromCjs)).code).toBe('ERR_PROXY_BAD_ENDPOINT');
  });
});
