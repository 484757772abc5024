import { defineConfig } from 'tsup';

export default defineConfig([
  {
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    dts: true,
    target: 'node22',
    clean: true,
    sourcemap: false,
  },
  {
    entry: ['src/cli.ts'],
    format: ['esm'],
    target: 'node22',
    clean: false,
    sourcemap: false,
  },
]);
