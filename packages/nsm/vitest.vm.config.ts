import { defineConfig } from 'vitest/config';

// Runs INSIDE nsm-vm (see test/vm/launch.mjs): one file, one device, strictly in order.
export default defineConfig({
  test: {
    include: ['test/vm/*.vm.test.ts'],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
