// Issue 10 item 7: every config/usage mistake exits 2 with a stable code (and file:line:col when a
// file is involved), checked by spawning the built `ee-parent`.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-parent-cfg-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cliSync(args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { PATH: process.env.PATH, ENCLAVE_EXTRAS_VSOCK_DIR: join(dir, 'vsock') },
  });
}

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/** `ee-parent run --config FILE` on a file that is wrong: exit 2, the code, and each expected line. */
function runRefuses(name: string, text: string, ...expected: RegExp[]) {
  const r = cliSync(['run', '--config', file(name, text), '--log-level', 'silent']);
  expect(r.status, r.stderr).toBe(2);
  for (const e of expected) expect(r.stderr).toMatch(e);
  return r;
}

const BILLION_LAUGHS = [
  'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
  'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
  'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
  'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
  'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
  'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]',
  'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]',
  'routes: *g',
  '',
].join('\n');

describe('ee-parent run: config errors exit 2 with a code and file:line:col', () => {
  it('refuses two routes with the same name', () => {
    runRefuses(
      'dup.yaml',
      'routes:\n  - {name: a, listen: "vsock:any:7001", dial: "tcp:127.0.0.1:1"}\n  - {name: a, listen: "vsock:any:7002", dial: "tcp:127.0.0.1:2"}\n',
      /ERR_CONFIG_INVALID/,
      /dup\.yaml:3:\d+: routes\[1\]\.name: name "a" is already used by routes\[0\]/,
    );
  });

  it("refuses a route named like the gateway's default name (egress)", () => {
    runRefuses(
      'dup-egress.yaml',
      'egressGateway:\n  listen: vsock:any:7003\n  policy: {allow: ["*:443"]}\nroutes:\n  - name: egress\n    listen: vsock:any:7004\n    dial: tcp:127.0.0.1:1\n',
      /ERR_CONFIG_INVALID/,
      /dup-egress\.yaml:5:\d+: routes\[0\]\.name: name "egress" is already used by egressGateway/,
    );
  });

  it('refuses a YAML alias bomb (billion laughs) quickly, pointing at the first alias', () => {
    runRefuses(
      'bomb.yaml',
      BILLION_LAUGHS,
      /ERR_CONFIG_INVALID/,
      /bomb\.yaml:2:\d+: \(yaml\): .*alias/i,
    );
  });

  it('refuses a policy on a route whose dial cannot honour it (unix:, vsock:)', () => {
    runRefuses(
      'unix-policy.yaml',
      'routes:\n  - name: u\n    listen: vsock:any:7005\n    dial: unix:/tmp/x.sock\n    policy: {allow: ["*:443"]}\n',
      /ERR_CONFIG_INVALID/,
      /unix-policy\.yaml:5:\d+: routes\[0\]\.policy: a policy applies to tcp: dial targets only/,
    );
    runRefuses(
      'vsock-policy.yaml',
      'routes:\n  - name: v\n    listen: tcp:127.0.0.1:0\n    dial: vsock:16:5000\n    policy: {allow: ["*:443"]}\n',
      /vsock-policy\.yaml:5:\d+: routes\[0\]\.policy: .*dials vsock:/,
    );
  });

  it.each([
    ['0x50', '0x50'],
    ['1e3', '1e3'],
    ['0o120', '0o120'],
    ["' '", ''],
    ["''", ''],
  ])('refuses the policy port %s (not read as a number)', (spelled, shown) => {
    runRefuses(
      `port-${spelled.replace(/\W/g, '_')}.yaml`,
      `egressGateway:\n  listen: vsock:any:7006\n  policy:\n    allow:\n      - {address: 127.0.0.1, port: ${spelled}}\n`,
      /ERR_CONFIG_INVALID/,
      new RegExp(
        `:5:\\d+: egressGateway\\.policy\\.allow\\[0\\]: .*port "${shown}" is not a number`,
      ),
    );
  });

  it('refuses limits written as 1e3 or 0x10 (numbers are decimal)', () => {
    runRefuses(
      'limit.yaml',
      'drainTimeoutMs: 1e3\nroutes:\n  - {name: a, listen: "vsock:any:7007", dial: "tcp:127.0.0.1:1", maxConnections: 0x10}\n',
      /limit\.yaml:1:17: drainTimeoutMs:/,
      /limit\.yaml:3:\d+: routes\[0\]\.maxConnections:/,
    );
  });

  it('refuses an empty config and says what to add', () => {
    for (const [name, text] of [
      ['empty.yaml', ''],
      ['no-routes.yaml', 'routes: []\n'],
      ['metrics-only.yaml', 'metrics:\n  listen: tcp:127.0.0.1:0\n'],
    ] as const) {
      runRefuses(
        name,
        text,
        /ERR_CONFIG_INVALID/,
        /nothing to serve: add "routes:".*"egressGateway:"/,
      );
    }
  });

  it('refuses a bad --log-level', () => {
    const cfg = file(
      'ok.yaml',
      'routes:\n  - {name: a, listen: "vsock:any:7008", dial: "tcp:127.0.0.1:1"}\n',
    );
    const r = cliSync(['run', '--config', cfg, '--log-level', 'loud']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ERR_USAGE: --log-level "loud" is not one of/);
  });
});

describe('ee-parent vsock-proxy: allowlist and arguments', () => {
  const proxy = (cfg: string, ...extra: string[]) =>
    cliSync([
      'vsock-proxy',
      '8000',
      '127.0.0.1',
      '443',
      '--config',
      cfg,
      '--log-level',
      'silent',
      ...extra,
    ]);

  it.each([
    ['host:443', /"host:443" is not a host name/],
    ['10.0.0.0/33', /"10\.0\.0\.0\/33" is not a valid IP address or CIDR/],
  ])('refuses the allowlist address %s at its line and column', (address, why) => {
    const cfg = file(
      `addr-${address.replace(/\W/g, '_')}.yaml`,
      `allowlist:\n- {address: 127.0.0.1, port: 443}\n- {address: "${address}", port: 443}\n`,
    );
    const r = proxy(cfg);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ERR_CONFIG_INVALID/);
    expect(r.stderr).toMatch(/addr-.*\.yaml:3:13: allowlist\[1\]\.address: /);
    expect(r.stderr).toMatch(why);
  });

  it('refuses unknown keys in the allowlist file', () => {
    const top = proxy(
      file('top.yaml', 'allowlist:\n- {address: 127.0.0.1, port: 443}\nallow_list: []\n'),
    );
    expect(top.status).toBe(2);
    expect(top.stderr).toMatch(/top\.yaml:3:1: allow_list: unknown key/);
    const entry = proxy(
      file('entry.yaml', 'allowlist:\n- {address: 127.0.0.1, port: 443, proto: tcp}\n'),
    );
    expect(entry.status).toBe(2);
    expect(entry.stderr).toMatch(/entry\.yaml:2:\d+: allowlist\[0\]\.proto: unknown key/);
  });

  it.each(['0x1bb', '443e0', '.inf', "' '", "''", '"0x1bb"', '-443', '443.5'])(
    'refuses the allowlist port %s',
    (spelled) => {
      const r = proxy(file('p.yaml', `allowlist:\n- {address: 127.0.0.1, port: ${spelled}}\n`));
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/p\.yaml:2:\d+: allowlist\[0\]\.port: port .* is not a TCP port/);
    },
  );

  it.each([
    ['local_port', ['1e3', '127.0.0.1', '443']],
    ['local_port', ['0x50', '127.0.0.1', '443']],
    ['local_port', [' ', '127.0.0.1', '443']],
    ['local_port', ['', '127.0.0.1', '443']],
    ['remote_port', ['8000', '127.0.0.1', '0x1bb']],
    ['remote_port', ['8000', '127.0.0.1', '4.43e2']],
    ['remote_port', ['8000', '127.0.0.1', ' 443']],
  ])('refuses %s written %j', (what, args) => {
    const cfg = file('ok-allow.yaml', 'allowlist:\n- {address: 127.0.0.1, port: 443}\n');
    const r = cliSync(['vsock-proxy', ...args, '--config', cfg]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`ERR_USAGE: ${what} ".*" must be a decimal integer`));
  });

  it('refuses --max-connections 1e3 and a bad --log-level', () => {
    const cfg = file('ok-allow2.yaml', 'allowlist:\n- {address: 127.0.0.1, port: 443}\n');
    const m = cliSync([
      'vsock-proxy',
      '8000',
      '127.0.0.1',
      '443',
      '--config',
      cfg,
      '--max-connections',
      '1e3',
    ]);
    expect(m.status).toBe(2);
    expect(m.stderr).toMatch(/--max-connections "1e3"/);
    const l = cliSync([
      'vsock-proxy',
      '8000',
      '127.0.0.1',
      '443',
      '--config',
      cfg,
      '--log-level',
      'verbose',
    ]);
    expect(l.status).toBe(2);
    expect(l.stderr).toMatch(/ERR_USAGE: --log-level "verbose"/);
  });
});

describe('ee-parent kms-local: flags', () => {
  const base = () => [
    'kms-local',
    '--data-dir',
    join(dir, 'kms'),
    '--port',
    '0',
    '--access-key-id',
    'AKIDTEST',
    '--secret-access-key',
    'secret',
  ];

  it('refuses a --root-pem that is not a certificate', () => {
    const notPem = cliSync([...base(), '--root-pem', file('junk.pem', 'not a certificate\n')]);
    expect(notPem.status).toBe(2);
    expect(notPem.stderr).toMatch(/ERR_USAGE: --root-pem .*junk\.pem holds no PEM block/);
    const key = file(
      'key.pem',
      '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n',
    );
    const notCert = cliSync([...base(), '--root-pem', key]);
    expect(notCert.status).toBe(2);
    expect(notCert.stderr).toMatch(/ERR_USAGE: --root-pem .*key\.pem is not a certificate/);
    const broken = cliSync([
      ...base(),
      '--root-pem',
      file('broken.pem', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'),
    ]);
    expect(broken.status).toBe(2);
    expect(broken.stderr).toMatch(/ERR_USAGE: --root-pem .*broken\.pem is not a certificate/);
  });

  it('refuses a bad --log-level', () => {
    const r = cliSync([...base(), '--log-level', 'loud']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ERR_USAGE: --log-level "loud"/);
  });

  it.each(['1e3', '0x50', ' ', ''])('refuses --port %j', (port) => {
    const args = base();
    args[4] = port;
    const r = cliSync(args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ERR_USAGE: --port ".*" is not a TCP port/);
  });
});
