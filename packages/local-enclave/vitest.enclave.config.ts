import { defineConfig } from 'vitest/config';

// Whole-enclave suite: boots EIFs under QEMU's nitro-enclave machine on this machine (TCG).
// Run through `pnpm test:vm` (scripts/enclave-suite.mjs), which finds QEMU and the kernel or skips.
export default defineConfig({
  test: {
    include: ['test/enclave/**/*.enclave.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 600_000,
    fileParallelism: false,
  },
});
