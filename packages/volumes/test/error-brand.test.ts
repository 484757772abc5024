import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// The built ESM and CommonJS entry points, as `import` and `require` load them in one process.
type Api = typeof import('../src/index.js');
const esmUrl = new URL('../dist/index.js', import.meta.url).href;
const cjsPath = new URL('../dist/index.cjs', import.meta.url).pathname;

describe('VolumeError across the ESM and CommonJS builds', () => {
  it('instanceof holds both ways, and only for VolumeErrors', async () => {
    const esm = (await import(esmUrl)) as Api;
    const cjs = createRequire(import.meta.url)(cjsPath) as Api;
    expect(esm.VolumeError).not.toBe(cjs.VolumeError);
    const fromEsm = new esm.VolumeError('ERR_VOLUME_CORRUPT', 'from esm');
    const fromCjs = new cjs.VolumeError('ERR_VOLUME_CORRUPT', 'from cjs');
    for (const err of [fromEsm, fromCjs]) {
      expect(err instanceof esm.VolumeError).toBe(true);
      expect(err instanceof cjs.VolumeError).toBe(true);
      expect(err instanceof Error).toBe(true);
    }
    const lookalike = Object.assign(new Error('x'), {
      name: 'VolumeError',
      code: 'ERR_VOLUME_CORRUPT',
    });
    for (const other of [lookalike, new Error('x'), null, undefined, 'ERR_VOLUME_CORRUPT', {}]) {
      expect(other instanceof esm.VolumeError).toBe(false);
      expect(other instanceof cjs.VolumeError).toBe(false);
    }
    // the brand is not enumerable: serialisation and logging are unchanged
    expect(Object.keys(fromEsm)).not.toContain('BRAND');
    expect(
      Object.getOwnPropertySymbols(fromEsm).every(
        (s) => !Object.getOwnPropertyDescriptor(fromEsm, s)?.enumerable,
      ),
    ).toBe(true);
    expect(JSON.parse(JSON.stringify(fromCjs)).code).toBe('ERR_VOLUME_CORRUPT');
  });
});
