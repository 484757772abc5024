// enclave.yaml parsing (moved from @enclave-extras/proxy's config-strict test with the schema).
import { ProxyError } from '@enclave-extras/proxy';
import { parseConfig } from '@enclave-extras/proxy/config';
import { describe, expect, it } from 'vitest';
import { enclaveConfigSchema } from '../src/index.js';

function issuesOf(
  fn: () => unknown,
): Array<{ path: string; line: number; col: number; message: string }> {
  try {
    fn();
  } catch (e) {
    if (e instanceof ProxyError && e.code === 'ERR_CONFIG_INVALID') {
      return e.details?.issues as Array<{
        path: string;
        line: number;
        col: number;
        message: string;
      }>;
    }
    throw e;
  }
  throw new Error('no error');
}

describe('enclave.yaml names', () => {
  it('refuses duplicate names in enclave.yaml, also a route named like the default gateway name', () => {
    const dup = issuesOf(() =>
      parseConfig(
        'routes:\n  - {name: a, listen: "tcp:127.0.0.1:1", dial: "vsock:3:1"}\n  - {name: a, listen: "tcp:127.0.0.1:2", dial: "vsock:3:2"}\n',
        enclaveConfigSchema,
      ),
    );
    expect(dup).toEqual([expect.objectContaining({ path: 'routes[1].name', line: 3 })]);
    const egress = issuesOf(() =>
      parseConfig(
        'egressGateway: {listen: "tcp:127.0.0.1:3128", parent: "vsock:3:8080"}\nroutes:\n  - {name: egress, listen: "tcp:127.0.0.1:1", dial: "vsock:3:1"}\n',
        enclaveConfigSchema,
      ),
    );
    expect(egress[0]).toMatchObject({ path: 'routes[0].name', line: 3 });
    expect(egress[0]?.message).toMatch(/"egress" is already used by egressGateway/);
  });
});
