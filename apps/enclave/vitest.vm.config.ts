import { defineConfig } from 'vitest/config';

// Runs inside /work/shared/tools/vsock-vm (real AF_VSOCK, loopback CID 1): pnpm test:vm runs it through ../../scripts/vm-suite.mjs.
export default defineConfig({
  test: {
    include: ['test/vm/**/*.vm.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 240_000,
    fileParallelism: false,
    pool: 'threads',
  },
});
