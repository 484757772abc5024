import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { HAVE_FIXTURES } from './fixtures.js';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = existsSync(join(pkg, 'dist/index.js'));
if (!built) console.warn('[attestation] SKIPPING README example test: run `pnpm build` first');

describe.skipIf(!HAVE_FIXTURES || !built)('README example (examples/verify-fixture.mjs)', () => {
  it('verifies the fixture at its time and reports CERT_EXPIRED now', () => {
    const out = execFileSync(process.execPath, ['examples/verify-fixture.mjs'], {
      cwd: pkg,
      encoding: 'utf8',
    });
    expect(out).toContain(
      'module i-084e1dd2f1b2c529b-enc0190fecc5b166251, signed 2024-08-07T06:38:09.640Z (ES384)',
    );
    expect(out).toContain(
      'chain ends in root 641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b',
    );
    expect(out).toMatch(
      /at today's time: ERR_ATTESTATION_CERT_EXPIRED \(payload\.cabundle\[\d\]\)/,
    );
  });
});
