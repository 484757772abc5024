// Spawns the built `ee-parent credentials-relay` over the vsock emulation and reads the
// credentials back with the enclave-side provider (fromParentInstance), from an allowed and a
// not-allowed emulated enclave CID.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromParentInstance } from '@enclave-extras/kms';
import { createEmulatedTransport } from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Proc, spawnCli } from './helpers.js';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
let dir: string;
let relay: Proc;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ee-creds-cli-'));
  relay = spawnCli(
    cli,
    [
      'credentials-relay',
      '--port',
      '8802',
      '--enclave-cid',
      '16',
      '--region',
      'eu-west-3',
      '--log-level',
      'info',
    ],
    {
      HOME: dir, // no profile files: the chain finds the environment variables below
      ENCLAVE_EXTRAS_VSOCK_DIR: join(dir, 'vsock'),
      AWS_ACCESS_KEY_ID: 'AKIDRELAYTEST',
      AWS_SECRET_ACCESS_KEY: 'relay-secret',
      AWS_SESSION_TOKEN: 'relay-token',
    },
  );
  await relay.waitLog((l) => l.msg === 'kms: credentials relay listening', 'listening');
});

afterAll(() => {
  if (relay.child.exitCode === null) relay.child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const from = (cid: number) =>
  fromParentInstance({
    port: 8802,
    transport: createEmulatedTransport({ dir: join(dir, 'vsock'), localCid: cid }),
  });

describe('ee-parent credentials-relay', () => {
  it('hands the provider chain credentials to the enclave CID given with --enclave-cid, logging the peer', async () => {
    const c = await from(16)();
    expect(c.accessKeyId).toBe('AKIDRELAYTEST');
    expect(c.secretAccessKey).toBe('relay-secret');
    expect(c.sessionToken).toBe('relay-token');
    const line = await relay.waitLog((l) => l.msg === 'kms: credentials handed out', 'hand-out');
    expect(line.peer).toMatch(/^vm\(16\):\d+$/);
    expect(relay.stdout()).toContain('credentials-relay listening on');
  });

  it('refuses any other CID, logging the peer', async () => {
    const err = await from(17)().catch((e) => e);
    expect(err.code).toBe('ERR_KMS_CREDENTIALS');
    expect(err.message).toContain('PeerNotAllowed');
    const line = await relay.waitLog((l) => String(l.msg).includes('refused'), 'refusal');
    expect(line.peer).toMatch(/^vm\(17\):\d+$/);
    expect(relay.stderr()).not.toContain('relay-secret');
  });

  it('exits 0 on SIGTERM', async () => {
    relay.child.kill('SIGTERM');
    expect((await relay.exited).code).toBe(0);
  });

  it('exits 2 on a bad port, and without an allow list (no silent "serve anyone" default)', () => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [cli, 'credentials-relay', ...args], {
        encoding: 'utf8',
        env: { PATH: process.env.PATH ?? '', ENCLAVE_EXTRAS_VSOCK_DIR: join(dir, 'vsock') },
      });
    const port = run('--port', 'x', '--enclave-cid', '16');
    expect(port.status).toBe(2);
    expect(port.stderr).toContain('--port');
    const none = run('--port', '8803');
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('--enclave-cid');
    expect(none.stderr).toContain('--allow-any-cid');
    const both = run('--port', '8803', '--enclave-cid', '16', '--allow-any-cid');
    expect(both.status).toBe(2);
    const badCid = run('--port', '8803', '--enclave-cid', '16,x');
    expect(badCid.status).toBe(2);
    expect(badCid.stderr).toContain('--enclave-cid');
    const badTimeout = run('--port', '8803', '--enclave-cid', '16', '--timeout', '0');
    expect(badTimeout.status).toBe(2);
    expect(badTimeout.stderr).toContain('--timeout');
  });
});
