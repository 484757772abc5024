import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** `<repo>/../shared/fixtures/attestation`, read in place. */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const FIXTURE_DIR = join(repoRoot, '..', 'shared', 'fixtures', 'attestation');
export const HAVE_FIXTURES = existsSync(join(FIXTURE_DIR, 'manifest.json'));

export interface FixtureEntry {
  file: string;
  expect: string;
  timestamp_ms?: number;
  n_pcrs?: number;
  debug_zero_pcr012?: boolean;
  module_id?: string;
  public_key?: number | null;
  user_data?: number | null;
  nonce?: number | null;
}

export interface Fixture extends FixtureEntry {
  bytes: Uint8Array;
}

export function loadFixtures(): Fixture[] {
  if (!HAVE_FIXTURES) return [];
  const manifest = JSON.parse(
    readFileSync(join(FIXTURE_DIR, 'manifest.json'), 'utf8'),
  ) as FixtureEntry[];
  return manifest.map((e) => ({
    ...e,
    bytes: new Uint8Array(readFileSync(join(FIXTURE_DIR, e.file))),
  }));
}

if (!HAVE_FIXTURES) {
  console.warn(`[attestation] SKIPPING fixture tests: ${FIXTURE_DIR} is missing`);
}
