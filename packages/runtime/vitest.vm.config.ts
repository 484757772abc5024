import { defineConfig } from 'vitest/config';

// Real-kernel suite: runs only inside ../shared/tools/vsock-vm (pnpm test:vm: ../../scripts/vm-suite.mjs).
export default defineConfig({
  test: {
    include: ['test/vm/**/*.vm.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
