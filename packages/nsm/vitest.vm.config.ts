import { defineConfig } from 'vitest/config';

// Runs INSIDE nsm-vm (pnpm test:vm: ../../scripts/vm-suite.mjs): one file, one device, strictly in order.
export default defineConfig({
  test: {
    include: ['test/vm/*.vm.test.ts'],
    fileParallelism: false,
    // a worker thread starts faster than a forked node under TCG (vitest gives workers 60 s)
    pool: 'threads',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
