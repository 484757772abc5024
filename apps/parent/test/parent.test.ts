// Spawns the built `ee-parent` (vsock-proxy, run) with the vsock emulation in a temp dir and
// real TCP servers on 127.0.0.1.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  echoOnce,
  echoServer,
  hashServer,
  httpGet,
  payload,
  roundTrip,
  sha256,
  spawnCli,
  vsockOpen,
} from './helpers.js';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const examples = new URL('../../../examples/', import.meta.url).pathname;

let dir: string;
let port = 20_000 + Math.floor(Math.random() * 20_000);
const nextPort = () => port++;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-parent-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Retries for up to 5 s until (cid 3, port) refuses connections; returns the error code. */
async function refusedSoon(vdir: string, vport: number): Promise<string> {
  for (let i = 0; i < 50; i++) {
    try {
      const s = await vsockOpen(vdir, 3, vport);
      s.destroy();
    } catch (err) {
      return String((err as { code?: string }).code);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return 'still accepting';
}

function cliSync(args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 20_000 });
}

describe('--help', () => {
  it.each([[[]], [['vsock-proxy']], [['run']]])('ee-parent %j --help exits 0', (sub) => {
    const r = cliSync([...sub, '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: ee-parent/);
    if (sub.length) expect(r.stdout).toMatch(/Exit codes:/);
  });
});

describe('vsock-proxy', () => {
  it('forwards vsock to TCP when the allowlist allows it (SHA-256 checked, half-close)', async () => {
    const server = await hashServer();
    const vdir = join(dir, 'v1');
    const cfg = join(dir, 'allow.yaml');
    writeFileSync(cfg, `allowlist:\n- {address: 127.0.0.1, port: ${server.port}}\n`);
    const vport = nextPort();
    const p = spawnCli(cli, [
      'vsock-proxy',
      String(vport),
      '127.0.0.1',
      String(server.port),
      '--config',
      cfg,
      '-4',
      '-w',
      '4',
      '--vsock-dir',
      vdir,
    ]);
    try {
      const ready = await p.waitLog((l) => l.msg === 'ready', 'ready');
      expect(ready.listen).toBe(`vm(any):${vport}`);
      const results = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const data = payload(64 * 1024);
          const s = await vsockOpen(vdir, 3, vport);
          return { want: sha256(data), got: await roundTrip(s, data) };
        }),
      );
      for (const r of results) expect(r.got).toBe(r.want);
    } finally {
      p.child.kill('SIGTERM');
      expect((await p.exited).code).toBe(0);
      await server.close();
    }
  });

  it('refuses to start when the target is not in the allowlist (exit 2, names it)', () => {
    const cfg = join(dir, 'other.yaml');
    writeFileSync(cfg, 'allowlist:\n- {address: 127.0.0.1, port: 1}\n');
    const r = cliSync(['vsock-proxy', '8000', '127.0.0.9', '443', '--config', cfg]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/127\.0\.0\.9:443 is not allowed by .*other\.yaml/);
  });

  it('refuses a port the allowlist does not list and an empty allowlist', () => {
    const cfg = join(dir, 'port.yaml');
    writeFileSync(cfg, 'allowlist:\n- {address: 127.0.0.1, port: 443}\n');
    expect(cliSync(['vsock-proxy', '8000', '127.0.0.1', '444', '--config', cfg]).status).toBe(2);
    writeFileSync(cfg, 'allowlist:\n');
    expect(cliSync(['vsock-proxy', '8000', '127.0.0.1', '443', '--config', cfg]).status).toBe(2);
  });

  it('names file, line and key of a bad allowlist (exit 2)', () => {
    const cfg = join(dir, 'bad.yaml');
    writeFileSync(
      cfg,
      'allowlist:\n- {address: 127.0.0.1, port: 443}\n- {address: x, port: "https"}\n',
    );
    const r = cliSync(['vsock-proxy', '8000', '127.0.0.1', '443', '--config', cfg]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/bad\.yaml:3:\d+: allowlist\[1\]\.port/);
  });

  it('rejects bad arguments with exit 2', () => {
    const cfg = join(dir, 'args.yaml');
    writeFileSync(cfg, 'allowlist:\n- {address: 127.0.0.1, port: 443}\n');
    const bad = cliSync(['vsock-proxy', 'x', '127.0.0.1', '443', '--config', cfg]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/local_port "x"/);
    expect(cliSync(['vsock-proxy', '8000', '127.0.0.1', '443', '-4', '-6']).status).toBe(2);
    const fam = cliSync(['vsock-proxy', '8000', '127.0.0.1', '443', '-6', '--config', cfg]);
    expect(fam.status).toBe(2);
    expect(fam.stderr).toMatch(/IPv4 address but -6/);
  });

  it.skipIf(existsSync('/etc/nitro_enclaves/vsock-proxy.yaml'))(
    'says clearly when the default allowlist is missing (exit 2)',
    () => {
      const r = cliSync(['vsock-proxy', '8000', 'kms.us-east-1.amazonaws.com', '443']);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(
        /default allowlist \/etc\/nitro_enclaves\/vsock-proxy\.yaml does not exist.*--config/,
      );
    },
  );

  it("accepts the seed README's command with AWS's sample vsock-proxy.yaml unchanged", async () => {
    const vdir = join(dir, 'v-aws');
    const vport = nextPort();
    // Never dials: the test only checks the proxy accepts the arguments and file and listens.
    const p = spawnCli(cli, [
      'vsock-proxy',
      String(vport),
      'kms.us-east-1.amazonaws.com',
      '443',
      '--config',
      join(examples, 'vsock-proxy.yaml'),
      '--vsock-dir',
      vdir,
    ]);
    try {
      const ready = await p.waitLog((l) => l.msg === 'ready', 'ready');
      expect(ready.remote).toBe('kms.us-east-1.amazonaws.com:443');
    } finally {
      p.child.kill('SIGTERM');
      expect((await p.exited).code).toBe(0);
    }
    const denied = cliSync([
      'vsock-proxy',
      String(vport),
      'kms.example.com',
      '443',
      '--config',
      join(examples, 'vsock-proxy.yaml'),
    ]);
    expect(denied.status).toBe(2);
  });
});

describe('run', () => {
  it('reloads on SIGHUP keeping open connections, serves /metrics and /healthz, drains on SIGTERM', async () => {
    const echo = await echoServer();
    const vdir = join(dir, 'v-run');
    const cfg = join(dir, 'parent.yaml');
    const [p1, p2] = [nextPort(), nextPort()];
    const base = [
      'metrics:',
      '  listen: tcp:127.0.0.1:0',
      'drainTimeoutMs: 20000',
      'routes:',
      '  - name: one',
      `    listen: vsock:any:${p1}`,
      `    dial: tcp:127.0.0.1:${echo.port}`,
    ].join('\n');
    writeFileSync(cfg, `${base}\n`);
    const p = spawnCli(cli, ['run', '--config', cfg, '--vsock-dir', vdir]);
    try {
      const ready = await p.waitLog((l) => l.msg === 'ready', 'ready');
      const mport = ready.metricsPort as number;
      const a = await vsockOpen(vdir, 3, p1);
      expect(await echoOnce(a, 'before reload')).toBe('before reload');

      // A bad file on SIGHUP keeps the running configuration.
      writeFileSync(cfg, `${base}\n    bogus: 1\n`);
      p.child.kill('SIGHUP');
      const failed = await p.waitLog((l) => l.msg.startsWith('reload failed'), 'reload failed');
      expect(String(failed.err)).toMatch(/parent\.yaml:8:5: routes\[0\]\.bogus/);

      writeFileSync(
        cfg,
        `${base}\n  - name: two\n    listen: vsock:any:${p2}\n    dial: tcp:127.0.0.1:${echo.port}\n`,
      );
      p.child.kill('SIGHUP');
      const reloaded = await p.waitLog((l) => l.msg === 'reloaded', 'reloaded');
      expect(reloaded).toMatchObject({ started: ['two'], kept: ['one'], drained: [] });
      expect(await echoOnce(a, 'after reload')).toBe('after reload');
      const b = await vsockOpen(vdir, 3, p2);
      expect(await echoOnce(b, 'new route')).toBe('new route');
      b.end();

      const health = await httpGet(mport, '/healthz');
      expect(health.status).toBe(200);
      expect(JSON.parse(health.body)).toMatchObject({
        status: 'ok',
        routes: [
          { name: 'one', state: 'listening', listen: `vm(any):${p1}` },
          { name: 'two', state: 'listening', listen: `vm(any):${p2}` },
        ],
        reload: { ok: true },
      });
      const metrics = await httpGet(mport, '/metrics');
      expect(metrics.status).toBe(200);
      expect(metrics.body).toMatch(/route="one"/);
      expect(metrics.body).toMatch(/route="two"/);

      // SIGTERM: stops listening, keeps serving the open connection until it ends.
      p.child.kill('SIGTERM');
      await p.waitLog((l) => l.msg === 'draining', 'draining');
      expect(await refusedSoon(vdir, p1)).toMatch(/^(ECONNREFUSED|ENOENT|ECONNRESET)$/);
      expect((await httpGet(mport, '/healthz')).status).toBe(503);
      expect(await echoOnce(a, 'while draining')).toBe('while draining');
      expect(p.child.exitCode).toBe(null);
      a.end();
      expect(await p.exited).toEqual({ code: 0, signal: null });
    } finally {
      p.child.kill('SIGKILL');
      await echo.close();
    }
  });

  it('names key and line of a config error and exits 2', () => {
    const cfg = join(dir, 'bad-parent.yaml');
    writeFileSync(
      cfg,
      'routes:\n  - name: a\n    listen: vsock:any:8000\n    dial: tcp:127.0.0.1:99999\n',
    );
    const r = cliSync(['run', '--config', cfg]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/bad-parent\.yaml:4:11: routes\[0\]\.dial: .*99999/);
    const missing = cliSync(['run', '--config', join(dir, 'nope.yaml')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/ERR_CONFIG_READ.*nope\.yaml/);
  });
});
