import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// The built ESM and CommonJS entry points, as `import` and `require` load them in one process.
type Api = typeof import('../src/index.js');
const esmUrl = new URL('../dist/index.js', import.meta.url).href;
const cjsPath = new URL('../dist/index.cjs', import.meta.url).pathname;

describe('KmsError across the ESM and CommonJS builds', () => {
  it('instanceof holds both ways, and only for KmsErrors', async () => {
    const esm = (await import(esmUrl)) as Api;
    const cjs = createRequire(import.meta.url)(cjsPath) as Api;
    expect(esm.KmsError).not.toBe(cjs.KmsError);
    const fromEsm = new esm.KmsError('ERR_KMS_CMS_MALFORMED', 'from esm');
    const fromCjs = new cjs.KmsError('ERR_KMS_CMS_MALFORMED', 'from cjs');
    for (const err of [fromEsm, fromCjs]) {
      expect(err instanceof esm.KmsError).toBe(true);
      expect(err instanceof cjs.KmsError).toBe(true);
      expect(err instanceof Error).toBe(true);
    }
    const lookalike = Object.assign(new Error('x'), {
      name: 'KmsError',
      code: 'ERR_KMS_CMS_MALFORMED',
    });
    for (const other of [lookalike, new Error('x'), null, undefined, 'ERR_KMS_CMS_MALFORMED', {}]) {
      expect(other instanceof esm.KmsError).toBe(false);
      expect(other instanceof cjs.KmsError).toBe(false);
    }
    // the brand is not enumerable: serialisation and logging are unchanged
    expect(Object.keys(fromEsm)).not.toContain('BRAND');
    expect(
      Object.getOwnPropertySymbols(fromEsm).every(
        (s) => !Object.getOwnPropertyDescriptor(fromEsm, s)?.enumerable,
      ),
    ).toBe(true);
    expect(JSON.parse(JSON.stringify(fromCjs)).code).toBe('ERR_KMS_CMS_MALFORMED');
  });
});
