// Issue 11 items 10 and 11, checked by spawning the built `ee-parent`: every usage error of every
// subcommand is one line `ee-parent: ERR_USAGE: <message>` on stderr with exit 2; an unknown option
// is reported as unknown (not as a missing --config); --help wraps at 80 columns; `--help` loads
// no subcommand's dependencies (a module-resolution hook lists what was loaded; no timing here,
// the start-up time is measured by bench/startup.mjs).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

// many short processes on a shared machine: no per-test time budget is asserted
vi.setConfig({ testTimeout: 120_000 });

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
/** The preload that logs every resolved module URL to $EE_LOAD_LOG (shared by the repo's tests). */
const LOG_MODULE_LOADS = new URL('../../../scripts/log-module-loads.mjs', import.meta.url).pathname;
const BIN = 'ee-parent';
const COMMANDS = [
  'vsock-proxy',
  'run',
  'kms-local',
  'credentials-relay',
  'run-enclave',
  'describe-enclaves',
  'terminate-enclave',
  'console',
];
/** Modules that only a running subcommand needs. */
const HEAVY = /@enclave-extras\/|@aws-sdk\/|\/zod\/|\/pino\/|\/yaml\//;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-parent-usage-'));
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

function expectUsage(args: string[], message: RegExp) {
  const r = cliSync(args);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^${BIN}: ERR_USAGE: `));
  expect(lines[0]).toMatch(message);
}

describe('ee-parent usage errors: one format, exit 2', () => {
  it('an unknown option is reported as unknown, not as a missing required option', () => {
    expectUsage(['run', '--bogus'], /unknown option '--bogus'/);
    expectUsage(['kms-local', '--bogus'], /unknown option '--bogus'/);
    expectUsage(['run-enclave', '--bogus'], /unknown option '--bogus'/);
    // the required option is still required once nothing else is wrong
    expectUsage(['run'], /required option '-c, --config <file>' not specified/);
    expectUsage(['run-enclave', '--eif-path', 'x.eif'], /required option '--cpu-count <n>'/);
  });

  it("commander's errors and the commands' own checks look the same", () => {
    expectUsage(['bogus'], /unknown command 'bogus'/);
    expectUsage(['vsock-proxy', '8000'], /missing required argument 'remote_addr'/);
    expectUsage(['vsock-proxy', 'x', 'y', 'z'], /local_port "x" must be a decimal integer/);
    expectUsage(['vsock-proxy', '1', 'h', '2', '3'], /too many arguments/);
    expectUsage(['run', '--config', 'p.yaml', '--log-level', 'loud'], /--log-level "loud"/);
    expectUsage(['kms-local', '--data-dir', dir, '--port', 'x'], /--port "x" is not a TCP port/);
    expectUsage(['credentials-relay'], /give --enclave-cid CID/);
    expectUsage(['terminate-enclave'], /exactly one of --enclave-id ID and --all/);
    expectUsage(['console'], /required option '--enclave-id <id>'/);
  });

  it('a config error keeps its own code, in the same format (then one line per problem)', () => {
    const cfg = join(dir, 'bad.yaml');
    writeFileSync(cfg, 'routes: 5\n');
    const r = cliSync(['run', '--config', cfg]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^ee-parent: ERR_CONFIG_INVALID: .*bad\.yaml/);
    expect(r.stderr).toMatch(/bad\.yaml:1:9: routes:/);
  });
});

describe('ee-parent --help', () => {
  it('wraps at 80 columns, for the program and every subcommand', () => {
    for (const args of [['--help'], ...COMMANDS.map((c) => [c, '--help']), ['help', 'run']]) {
      const r = cliSync(args);
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/^Usage: ee-parent/);
      const long = r.stdout.split('\n').filter((l) => l.length > 80);
      expect(long, `${args.join(' ')}: lines over 80 columns`).toEqual([]);
    }
    const top = cliSync(['--help']).stdout;
    for (const c of COMMANDS) expect(top).toMatch(new RegExp(`^  ${c} `, 'm'));
  });

  it('--help and --version load no subcommand dependencies; a subcommand loads its own', () => {
    for (const args of [['--help'], ['--version']]) {
      const urls = loaded(args);
      expect(urls.some((u) => u.endsWith('/dist/cli.js'))).toBe(true);
      expect(urls.filter((u) => HEAVY.test(u))).toEqual([]);
    }
    // control: the hook sees them when a subcommand runs (here up to its config error)
    const cfg = join(dir, 'empty.yaml');
    writeFileSync(cfg, '{}\n');
    const urls = loaded(['run', '--config', cfg]);
    expect(urls.some((u) => u.includes('/proxy/'))).toBe(true);
  });

  it('--version prints the package version', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    const r = cliSync(['--version']);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${pkg.version}\n`);
  });
});
