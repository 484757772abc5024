// Issue 11 items 10 and 11, checked by spawning the built `ee-enclave`: every usage error of every
// subcommand is one line `ee-parent: ERR_USAGE: <message>` on stderr with exit 2; an unknown option
// is reported as unknown (not as a missing --config); --help wraps at 80 columns; `--help` loads
// no subcommand's dependencies (a module-resolution hook lists what was loaded; no timing here,
// the start-up time is measured by bench/startup.mjs).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

// many short processes on a shared machine: no per-test time budget is asserted
vi.setConfig({ testTimeout: 120_000 });

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
/** The preload that logs every resolved module URL to $EE_LOAD_LOG (shared by the repo's tests). */
const LOG_MODULE_LOADS = new URL('../../../scripts/log-module-loads.mjs', import.meta.url).pathname;
const BIN = 'ee-enclave';
const COMMANDS = [
  ['run'],
  ['attest'],
  ['attest', 'create'],
  ['attest', 'verify'],
  ['kms'],
  ...[
    'encrypt',
    'decrypt',
    'generate-data-key',
    'generate-data-key-pair',
    'generate-random',
    'create-key',
  ].map((c) => ['kms', c]),
  ['nsm'],
  ['nsm', 'describe'],
  ['nsm', 'pcr'],
  ['nsm', 'random'],
];
/** Modules that only a running subcommand needs. */
const HEAVY = /@enclave-extras\/|@aws-sdk\/|\/zod\/|\/pino\/|\/yaml\//;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-enclave-usage-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cliSync(args: string[], nodeArgs: string[] = [], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [...nodeArgs, cli, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { PATH: process.env.PATH, ENCLAVE_EXTRAS_VSOCK_DIR: join(dir, 'vsock'), ...env },
  });
}

/** Runs the CLI under the resolve hook; returns the URLs it loaded. */
function loaded(args: string[]): string[] {
  const log = join(dir, `load-${args.join('_').replace(/\W/g, '')}.log`);
  writeFileSync(log, '');
  cliSync(args, ['--import', LOG_MODULE_LOADS], { EE_LOAD_LOG: log });
  return readFileSync(log, 'utf8').split('\n').filter(Boolean);
}

function expectUsage(args: string[], message: RegExp, env: NodeJS.ProcessEnv = {}) {
  const r = cliSync(args, [], env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^${BIN}: ERR_USAGE: `));
  expect(lines[0]).toMatch(message);
}

/** A Unix socket standing in for the NSM daemon (--nsm socket:PATH): counts who connects. */
async function nsmSocket(): Promise<{ path: string; connections: () => number; close(): void }> {
  const path = join(dir, `nsm-${Math.random().toString(36).slice(2)}.sock`);
  let n = 0;
  const server = net.createServer((s) => {
    n++;
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, connections: () => n, close: () => server.close() };
}

function cliAsync(args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], {
      env: { PATH: process.env.PATH },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += String(d);
    });
    child.on('exit', (status) => resolve({ status, stderr }));
  });
}

describe('ee-enclave usage errors: one format, exit 2', () => {
  it('an unknown option is reported as unknown, not as a missing required option', () => {
    expectUsage(['run', '--bogus', '--', 'true'], /unknown option '--bogus'/);
    expectUsage(['kms', 'decrypt', '--bogus'], /unknown option '--bogus'/);
    expectUsage(['run', '--', 'true'], /required option '-c, --config <file>' not specified/);
    expectUsage(['kms', 'decrypt'], /required option '--ciphertext <bytes>' not specified/);
  });

  it("commander's errors and the commands' own checks look the same", () => {
    expectUsage(['bogus'], /unknown command 'bogus'/);
    expectUsage(['kms', 'bogus'], /unknown command 'bogus'/);
    expectUsage(
      ['kms', 'decrypt', '--output', 'weird'],
      /'weird' is invalid\. Allowed choices are base64, hex, raw/,
    );
    expectUsage(['nsm', 'pcr', 'x'], /nsm pcr: index x must be an integer 0\.\.65535/);
    expectUsage(['nsm', 'random', '0'], /nsm random: 0 must be an integer 1\.\.65536/);
    expectUsage(['nsm', 'describe', '--nsm', 'bogus'], /--nsm bogus: use device/);
    expectUsage(['attest', 'verify'], /missing required argument 'file'/);
    expectUsage(
      ['attest', 'create', '--nonce', 'hex:abc'],
      /--nonce: hex:abc\.\.\. is not an even-length hex string/,
    );
    expectUsage(
      ['kms', 'generate-random', '--region', 'us-east-1', '--credentials', 'parent:x'],
      /--credentials parent:x must be parent:PORT/,
    );
    expectUsage(
      ['run', '--config', 'e.yaml', '--log-level', 'loud', '--', 'true'],
      /--log-level "loud"/,
    );
  });

  it('flags are checked before the NSM is opened (kms decrypt --output weird touches no NSM)', async () => {
    const nsm = await nsmSocket();
    try {
      const base = ['kms', 'decrypt', '--ciphertext', 'base64:AAAA', '--region', 'us-east-1'];
      const bad = [
        [...base, '--output', 'weird'],
        [...base, '--credentials', 'bogus'],
        ['kms', 'generate-random', '--region', 'us-east-1', '--bytes', '0'],
        ['kms', 'create-key', '--policy-from-nsm', '--region', 'us-east-1'],
        ['attest', 'verify', '-', '--live-pcrs', '--max-age', '-1'],
        ['nsm', 'pcr', '16', '--extend', 'hex:1'],
      ];
      for (const args of bad) {
        const r = await cliAsync([...args, '--nsm', `socket:${nsm.path}`]);
        expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
        expect(r.stderr).toMatch(/^ee-enclave: ERR_USAGE: /);
      }
      expect(nsm.connections()).toBe(0);
      // control: with valid flags the same command does reach the NSM (and fails there: exit 1)
      const ok = await cliAsync([...base, '--output', 'hex', '--nsm', `socket:${nsm.path}`]);
      expect(ok.status).toBe(1);
      expect(nsm.connections()).toBeGreaterThan(0);
    } finally {
      nsm.close();
    }
  });
});

describe('ee-enclave --help', () => {
  it('wraps at 80 columns, for the program and every subcommand', () => {
    for (const args of [[], ...COMMANDS].map((c) => [...c, '--help'])) {
      const r = cliSync(args);
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/^Usage: ee-enclave/);
      const long = r.stdout.split('\n').filter((l) => l.length > 80);
      expect(long, `${args.join(' ')}: lines over 80 columns`).toEqual([]);
    }
  });

  it('--help and --version load no subcommand dependencies; a subcommand loads its own', () => {
    for (const args of [
      ['--help'],
      ['--version'],
      ['kms', 'decrypt', '--help'],
      ['nsm', '--help'],
    ]) {
      const urls = loaded(args);
      expect(urls.some((u) => u.endsWith('/dist/cli.js'))).toBe(true);
      expect(
        urls.filter((u) => HEAVY.test(u)),
        args.join(' '),
      ).toEqual([]);
    }
    // control: the hook sees them once a command runs (here up to a missing NSM socket)
    const urls = loaded(['nsm', 'random', '1', '--nsm', `socket:${join(dir, 'none.sock')}`]);
    expect(urls.some((u) => u.includes('/nsm/'))).toBe(true);
  });

  it('--version prints the package version', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    const r = cliSync(['--version']);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${pkg.version}\n`);
  });
});
