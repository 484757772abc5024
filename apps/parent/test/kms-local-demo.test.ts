// Runs `pnpm demo` (scripts/demo.mjs) end to end: local attested KMS, NSM simulator daemons,
// ee-parent run and ee-enclave run over the vsock emulation, and the example app.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('../../../', import.meta.url).pathname;
const built = [
  'apps/enclave/dist/cli.js',
  'apps/parent/dist/cli.js',
  'packages/nsm/dist/bin.js',
].every((f) => existsSync(root + f));

describe('pnpm demo', () => {
  if (!built) {
    it.skip('needs apps/enclave, apps/parent and packages/nsm built (pnpm build) — skipped', () => {});
    return;
  }
  it('exits 0 with the transcript of an attested decrypt and both refusals, leaving nothing behind', () => {
    // The demo's temp dir goes under a TMPDIR of our own, to check it is removed afterwards.
    const scratch = mkdtempSync(join(tmpdir(), 'ee-demo-test-'));
    const r = spawnSync(process.execPath, [`${root}scripts/demo.mjs`], {
      cwd: root,
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, TMPDIR: scratch },
    });
    const leftovers = readdirSync(scratch);
    const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
    rmSync(scratch, { recursive: true, force: true });

    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    const t = r.stdout;
    expect(t).toMatch(
      /\[kms\]\s+local attested KMS on https:\/\/127\.0\.0\.1:4599 .*TLS end to end/,
    );
    expect(t).toMatch(/\[parent\]\s+ee-parent credentials-relay on vsock port 8002/);
    expect(t).toMatch(/\[parent\]\s+created key arn:aws:kms:us-east-1:111122223333:key\//);
    expect(t).toMatch(/\[parent\]\s+the parent itself cannot decrypt it: AccessDeniedException/);
    expect(t).toMatch(
      /\[enclave\]\s+attested Decrypt via the egress gateway -> "the database password is correct-horse-battery-staple"/,
    );
    expect(t).toMatch(/\[enclave\]\s+Decrypt without attestation refused: AccessDeniedException/);
    expect(t).toMatch(/\[parent\]\s+egress gateway carried [1-9]\d* connection/);
    expect(t).toMatch(
      /\[other\]\s+attested Decrypt refused: AccessDeniedException \(the attestation document's ImageSha384/,
    );
    expect(t).toMatch(/\[demo\]\s+OK:/);
    // Everything it started is gone: no temp dir left, no process still using it.
    expect(leftovers).toEqual([]);
    expect(ps).not.toContain(scratch);
  }, 150_000);
});
