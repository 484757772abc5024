// Every example config a user copies parses with the schemas the apps use: examples/*/enclave.yaml
// with ee-enclave's, examples/*/parent.yaml with ee-parent's (its module, imported from the
// sibling app's source). A key renamed in a schema and not in an example fails here.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigFile } from '@enclave-extras/proxy/config';
import { enclaveConfigSchema } from '@enclave-extras/runtime';
import { describe, expect, it } from 'vitest';
import { parentConfigSchema } from '../../parent/src/config.js';

const examples = new URL('../../../examples/', import.meta.url).pathname;
const dirs = readdirSync(examples, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name);

describe('example configs', () => {
  it('there are examples with both configs', () => {
    expect(dirs).toEqual(expect.arrayContaining(['demo', 'kms-like', 'volumes']));
  });
  for (const dir of dirs) {
    it(`examples/${dir}: enclave.yaml and parent.yaml parse`, async () => {
      const files = readdirSync(join(examples, dir));
      if (files.includes('enclave.yaml'))
        await expect(
          loadConfigFile(join(examples, dir, 'enclave.yaml'), enclaveConfigSchema),
        ).resolves.toBeTypeOf('object');
      if (files.includes('parent.yaml'))
        await expect(
          loadConfigFile(join(examples, dir, 'parent.yaml'), parentConfigSchema),
        ).resolves.toBeTypeOf('object');
    });
  }
  it('the volumes example sets the lock wait it documents', async () => {
    const c = await loadConfigFile(join(examples, 'volumes', 'enclave.yaml'), enclaveConfigSchema);
    const vault = c.volumes.find((v) => v.name === 'vault');
    expect(vault?.encryption?.lockWaitMs).toBe(120_000);
  });
});
