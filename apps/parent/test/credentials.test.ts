// Spawns the built `ee-parent credentials-relay` over the vsock emulation and reads the
// credentials back with the enclave-side provider (fromParentInstance).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromParentInstance } from '@enclave-extras/kms';
import { createEmulatedTransport } from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
let dir: string;
let child: ChildProcess;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ee-creds-cli-'));
  child = spawn(
    process.execPath,
    [cli, 'credentials-relay', '--port', '8802', '--region', 'eu-west-3', '--log-level', 'warn'],
    {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: dir, // no profile files: the chain finds the environment variables below
        ENCLAVE_EXTRAS_VSOCK_DIR: join(dir, 'vsock'),
        AWS_ACCESS_KEY_ID: 'AKIDRELAYTEST',
        AWS_SECRET_ACCESS_KEY: 'relay-secret',
        AWS_SESSION_TOKEN: 'relay-token',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('credentials-relay listening on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`credentials-relay exited early (${code})`)));
  });
});

afterAll(() => {
  if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('ee-parent credentials-relay', () => {
  it('hands the provider chain credentials to fromParentInstance over vsock', async () => {
    const provider = fromParentInstance({
      port: 8802,
      transport: createEmulatedTransport({ dir: join(dir, 'vsock') }),
    });
    const c = await provider();
    expect(c.accessKeyId).toBe('AKIDRELAYTEST');
    expect(c.secretAccessKey).toBe('relay-secret');
    expect(c.sessionToken).toBe('relay-token');
  });

  it('exits 0 on SIGTERM', async () => {
    const code = await new Promise<number | null>((resolve) => {
      child.once('exit', (c) => resolve(c));
      child.kill('SIGTERM');
    });
    expect(code).toBe(0);
  });

  it('exits 2 on a bad port, naming the flag', () => {
    const r = spawnSync(process.execPath, [cli, 'credentials-relay', '--port', 'x'], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--port');
  });
});
