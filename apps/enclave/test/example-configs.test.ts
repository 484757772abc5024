// Every examples/*/enclave.yaml a user copies parses with ee-enclave's schema (apps/parent checks
// the parent.yaml files). A key renamed in a schema and not in an example fails here.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigFile } from '@enclave-extras/proxy/config';
import { enclaveConfigSchema } from '@enclave-extras/runtime';
import { describe, expect, it } from 'vitest';

const examples = new URL('../../../examples/', import.meta.url).pathname;
const dirs = readdirSync(examples, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(examples, d.name, 'enclave.yaml')))
  .map((d) => d.name);

describe('example configs', () => {
  it('the examples are found', () => {
    expect(dirs).toEqual(expect.arrayContaining(['demo', 'kms-like', 'volumes']));
  });
  for (const dir of dirs) {
    it(`examples/${dir}/enclave.yaml parses`, async () => {
      await expect(
        loadConfigFile(join(examples, dir, 'enclave.yaml'), enclaveConfigSchema),
      ).resolves.toBeTypeOf('object');
    });
  }
  it('the volumes example sets the lock wait it documents', async () => {
    const c = await loadConfigFile(join(examples, 'volumes', 'enclave.yaml'), enclaveConfigSchema);
    const vault = c.volumes.find((v) => v.name === 'vault');
    expect(vault?.encryption?.lockWaitMs).toBe(120_000);
  });
});
