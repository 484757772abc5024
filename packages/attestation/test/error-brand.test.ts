import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// The built ESM and CommonJS entry points, as `import` and `require` load them in one process.
type Api = typeof import('../src/index.js');
const esmUrl = new URL('../dist/index.js', import.meta.url).href;
const cjsPath = new URL('../dist/index.cjs', import.meta.url).pathname;

describe('AttestationError across the ESM and CommonJS builds', () => {
  it('instanceof holds both ways, and only for AttestationErrors', async () => {
    const esm = (await import(esmUrl)) as Api;
    const cjs = createRequire(import.meta.url)(cjsPath) as Api;
    expect(esm.AttestationError).not.toBe(cjs.AttestationError);
    const fromEsm = new esm.AttestationError('ERR_ATTESTATION_BAD_INPUT', 'from esm');
    const fromCjs = new cjs.AttestationError('ERR_ATTESTATION_BAD_INPUT', 'from cjs');
    for (const err of [fromEsm, fromCjs]) {
      expect(err instanceof esm.AttestationError).toBe(true);
      expect(err instanceof cjs.AttestationError).toBe(true);
      expect(err instanceof Error).toBe(true);
    }
    const lookalike = Object.assign(new Error('x'), {
      name: 'AttestationError',
      code: 'ERR_ATTESTATION_BAD_INPUT',
    });
    for (const other of [
      lookalike,
      new Error('x'),
      null,
      undefined,
      'ERR_ATTESTATION_BAD_INPUT',
      {},
    ]) {
      expect(other instanceof esm.AttestationError).toBe(false);
      expect(other instanceof cjs.AttestationError).toBe(false);
    }
    // the brand is not enumerable: serialisation and logging are unchanged
    expect(Object.keys(fromEsm)).not.toContain('BRAND');
    expect(
      Object.getOwnPropertySymbols(fromEsm).every(
        (s) => !Object.getOwnPropertyDescriptor(fromEsm, s)?.enumerable,
      ),
    ).toBe(true);
    expect(JSON.parse(JSON.stringify(fromCjs)).code).toBe('ERR_ATTESTATION_BAD_INPUT');
  });
});
