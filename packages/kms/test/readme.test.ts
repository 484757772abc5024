// Runs the README's example block with node against the built package (dist), so the README
// stays true. The block is written to node_modules/.cache (ignored by git) so that its bare
// imports resolve through this package's node_modules.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const built =
  existsSync(join(pkg, 'dist/index.js')) && existsSync(join(pkg, 'dist/local/index.js'));
if (!built)
  console.warn('[kms] SKIPPING the README example: build the package first (dist/ missing)');

describe.skipIf(!built)('README example', () => {
  it('runs and prints the decrypted secret, then the refusal without attestation', async () => {
    const readme = readFileSync(join(pkg, 'README.md'), 'utf8');
    const block = /## Example[^\n]*\n+```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeTruthy();
    const code = (block as string)
      .replace(
        "'@enclave-extras/kms/local'",
        `'${pathToFileURL(join(pkg, 'dist/local/index.js')).href}'`,
      )
      .replace("'@enclave-extras/kms'", `'${pathToFileURL(join(pkg, 'dist/index.js')).href}'`);
    const dir = join(pkg, 'node_modules/.cache/kms-readme');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'example.mjs');
    writeFileSync(file, code);
    const { stdout } = await promisify(execFile)(process.execPath, ['--no-warnings', file], {
      timeout: 60_000,
    });
    expect(stdout.trim().split('\n')).toEqual(['s3cret', 'AccessDeniedException']);
  });
});
