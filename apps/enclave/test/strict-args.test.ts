// Issue 10 item 7 on the enclave side: duplicate route names in enclave.yaml and non-decimal
// ports in flags exit 2 with a code, checked by spawning the built `ee-enclave`.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-enclave-strict-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cliSync(args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { PATH: process.env.PATH },
  });
}

describe('ee-enclave: strict config and flags', () => {
  it('refuses two routes with one name and a route named like the default gateway', () => {
    const cfg = join(dir, 'dup.yaml');
    writeFileSync(
      cfg,
      'routes:\n  - {name: a, listen: "tcp:127.0.0.1:0", dial: "vsock:3:1"}\n  - {name: a, listen: "tcp:127.0.0.1:0", dial: "vsock:3:2"}\n',
    );
    const r = cliSync(['run', '--config', cfg, '--no-network-setup', '--', 'true']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ERR_CONFIG_INVALID/);
    expect(r.stderr).toMatch(/dup\.yaml:3:\d+: routes\[1\]\.name: name "a" is already used/);

    writeFileSync(
      cfg,
      'egressGateway: {listen: "tcp:127.0.0.1:0", parent: "vsock:3:8001"}\nroutes:\n  - {name: egress, listen: "tcp:127.0.0.1:0", dial: "vsock:3:1"}\n',
    );
    const g = cliSync(['run', '--config', cfg, '--no-network-setup', '--', 'true']);
    expect(g.status).toBe(2);
    expect(g.stderr).toMatch(
      /dup\.yaml:3:\d+: routes\[0\]\.name: name "egress" is already used by egressGateway/,
    );
  });

  it.each(['parent:0x50', 'parent:1e3', 'parent: ', 'parent:'])(
    'refuses --credentials %j (the port is decimal)',
    (credentials) => {
      const r = cliSync([
        'kms',
        'decrypt',
        '--region',
        'us-east-1',
        '--no-attest',
        '--credentials',
        credentials,
        '--ciphertext',
        'base64:AAAA',
      ]);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain('must be parent:PORT');
    },
  );

  it.each(['1e1', '0x10', ' 8', ''])('refuses kms generate-random --bytes %j', (bytes) => {
    const r = cliSync([
      'kms',
      'generate-random',
      '--region',
      'us-east-1',
      '--no-attest',
      '--bytes',
      bytes,
    ]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--bytes .* must be an integer/);
  });
});
