// ee-parent kms-local --insecure-accept-unsigned-qemu-attestation: off by default; when given,
// the KMS says loudly at start that it accepts QEMU's unsigned attestation documents.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'ee-kms-local-qemu-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts kms-local, waits until it listens, stops it; returns its stderr (JSON log lines). */
function startAndStop(extra: string[], name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        cli,
        'kms-local',
        '--data-dir',
        join(dir, name),
        '--port',
        '0',
        '--log-level',
        'warn',
        ...extra,
      ],
      {
        env: {
          ...process.env,
          AWS_ACCESS_KEY_ID: 'AKIDQEMUCLI',
          AWS_SECRET_ACCESS_KEY: 'qemu-cli',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString();
    });
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (/kms-local listening on/.test(out)) setTimeout(() => child.kill('SIGTERM'), 200);
    });
    child.once('exit', () =>
      /kms-local listening on/.test(out) ? resolve(err) : reject(new Error(err)),
    );
  });
}

describe('kms-local and unsigned QEMU attestation documents', () => {
  it('off by default: no insecure warning', async () => {
    expect(await startAndStop([], 'default')).not.toContain('INSECURE');
  });

  it('--insecure-accept-unsigned-qemu-attestation: a loud warning at start', async () => {
    const err = await startAndStop(['--insecure-accept-unsigned-qemu-attestation'], 'insecure');
    expect(err).toContain('INSECURE DEVELOPMENT MODE');
    expect(err).toContain('UNSIGNED QEMU attestation documents');
  });
});
