import { defineConfig } from 'vitest/config';

// The CLI tests spawn ee-parent (and ee-enclave) processes; on a loaded 2-core CI machine (the
// kernel build runs beside the unit suites) a spawn-heavy test can take well over vitest's 5 s
// default. The timeout only bounds a hang; no test asserts on time.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
