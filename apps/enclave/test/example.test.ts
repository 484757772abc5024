// examples/kms-like end to end on this machine: ee-parent with examples/kms-like/parent.yaml,
// a KMS-like TLS server, and ee-enclave with examples/kms-like/enclave.yaml inside a private
// network + mount namespace (real lo setup, 127.0.0.2 alias and /etc/hosts entry, bind-mounted
// so this machine's own /etc/hosts is never touched). The vsock link is the emulation (Unix
// sockets cross network namespaces); the VM suite runs the same files over real vsock.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnCli } from './helpers.js';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const example = new URL('../../../examples/kms-like/', import.meta.url).pathname;
const parentCli = join(
  dirname(createRequire(import.meta.url).resolve('@enclave-extras/parent/package.json')),
  'dist',
  'cli.js',
);

const canUnshare =
  process.getuid?.() === 0 &&
  spawnSync('unshare', ['--net', '--mount', 'true']).status === 0 &&
  spawnSync('openssl', ['version']).status === 0;
if (!canUnshare) {
  console.warn('[example.test] SKIPPED: needs root, unshare(1) and openssl');
}

let dir: string;
let kms: ChildProcess | undefined;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-example-'));
});
afterAll(() => {
  kms?.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!canUnshare)('examples/kms-like', () => {
  it('the enclave app reaches the KMS-like server by its real name through both proxies', async () => {
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    const gen = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=kms.us-east-1.amazonaws.com',
        '-addext',
        'subjectAltName=DNS:kms.us-east-1.amazonaws.com',
      ],
      { encoding: 'utf8' },
    );
    expect(gen.status, gen.stderr).toBe(0);
    kms = spawn(process.execPath, [join(example, 'kms-like-server.mjs'), cert, key], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      kms?.stdout?.once('data', () => resolve());
      kms?.once('exit', (c) => reject(new Error(`kms-like server exited ${c}`)));
    });

    const vdir = join(dir, 'vsock');
    const parent = spawnCli(parentCli, [
      'run',
      '--config',
      join(example, 'parent.yaml'),
      '--vsock-dir',
      vdir,
    ]);
    try {
      const ready = await parent.waitLog((l) => l.msg === 'ready', 'parent ready');
      expect(ready.metricsPort).toBe(9100);

      const hosts = join(dir, 'hosts');
      writeFileSync(hosts, '127.0.0.1\tlocalhost\n');
      const enclaveCmd = [
        process.execPath,
        cli,
        'run',
        '--config',
        join(example, 'enclave.yaml'),
        '--vsock-dir',
        vdir,
        '--',
        process.execPath,
        join(example, 'app.mjs'),
      ]
        .map((a) => `'${a}'`)
        .join(' ');
      const r = spawnSync(
        'unshare',
        [
          '--net',
          '--mount',
          '--propagation',
          'private',
          'sh',
          '-c',
          `mount --bind '${hosts}' /etc/hosts && exec ${enclaveCmd}`,
        ],
        { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_EXTRA_CA_CERTS: cert } },
      );
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim());
      expect(out).toEqual({
        status: 200,
        body: {
          target: 'TrentService.Encrypt',
          KeyId: 'alias/example',
          servername: 'kms.us-east-1.amazonaws.com',
        },
      });
      // ee-enclave's log shows the bring-up it did inside the namespace.
      expect(r.stderr).toMatch(/"added":\["127\.0\.0\.2"\]/);
      expect(readFileSync(hosts, 'utf8')).toMatch(
        /^127\.0\.0\.1\tlocalhost\n# BEGIN enclave-extras.*\n127\.0\.0\.2\tkms\.us-east-1\.amazonaws\.com\n# END enclave-extras\n$/,
      );
      const metrics = await (await fetch('http://127.0.0.1:9100/metrics')).text();
      expect(metrics).toMatch(/route="kms"/);
    } finally {
      parent.child.kill('SIGTERM');
      await parent.exited;
    }
  });
});
