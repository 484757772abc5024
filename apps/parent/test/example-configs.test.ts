// Every examples/*/parent.yaml a user copies parses with ee-parent's schema (apps/enclave checks
// the enclave.yaml files). A key renamed in a schema and not in an example fails here.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigFile } from '@enclave-extras/proxy/config';
import { describe, expect, it } from 'vitest';
import { parentConfigSchema } from '../src/config.js';

const examples = new URL('../../../examples/', import.meta.url).pathname;
const dirs = readdirSync(examples, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(examples, d.name, 'parent.yaml')))
  .map((d) => d.name);

describe('example configs', () => {
  it('the examples are found', () => {
    expect(dirs).toEqual(expect.arrayContaining(['demo', 'kms-like', 'volumes']));
  });
  for (const dir of dirs) {
    it(`examples/${dir}/parent.yaml parses`, async () => {
      await expect(
        loadConfigFile(join(examples, dir, 'parent.yaml'), parentConfigSchema),
      ).resolves.toBeTypeOf('object');
    });
  }
});
