import { defineConfig } from 'vitest/config';

// The QEMU suite (`pnpm test:vm`) or, with VHV_BENCH=1, the throughput bench (`pnpm bench`).
export default defineConfig({
  test: {
    include: process.env.VHV_BENCH ? ['test/vm/*.vmbench.ts'] : ['test/vm/**/*.vm.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    fileParallelism: false,
  },
});
