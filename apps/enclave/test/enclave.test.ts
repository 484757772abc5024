// Spawns the built `ee-enclave run` (and `ee-parent run` for the far side) with the vsock
// emulation in a temp dir, real TCP on 127.0.0.1 and real child processes.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoOnce, hashServer, spawnCli, vsockOpen } from './helpers.js';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const parentCli = join(
  dirname(createRequire(import.meta.url).resolve('@enclave-extras/parent/package.json')),
  'dist',
  'cli.js',
);

let dir: string;
let port = 40_000 + Math.floor(Math.random() * 20_000);
const nextPort = () => port++;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-enclave-app-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

function cliSync(args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30_000 });
}

const devConfig = (extra = '') =>
  write(`dev-${nextPort()}.yaml`, `network:\n  setup: false\n${extra}`);

describe('ee-enclave --help', () => {
  it.each([[[]], [['run']]])('%j --help exits 0', (sub) => {
    const r = cliSync([...sub, '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: ee-enclave/);
    if (sub.length) expect(r.stdout).toMatch(/Exit codes:/);
  });
});

describe('ee-enclave run', () => {
  it("exits with the app's status, 128+N for a signal", () => {
    const cfg = devConfig();
    expect(cliSync(['run', '-c', cfg, '--', 'sh', '-c', 'exit 5']).status).toBe(5);
    expect(cliSync(['run', '-c', cfg, '--', 'sh', '-c', 'kill -KILL $$']).status).toBe(137);
    expect(cliSync(['run', '-c', cfg, '--', 'true']).status).toBe(0);
  });

  it('fails with exit 1 and the errno code when the app cannot start', () => {
    const r = cliSync(['run', '-c', devConfig(), '--', join(dir, 'no-such-app')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/ENOENT: Cannot start the app ".*no-such-app"/);
  });

  it('names key and line of a config error (exit 2) and needs an app (exit 2)', () => {
    const cfg = write(
      'bad.yaml',
      'network:\n  setup: false\negressGateway:\n  listen: tcp:127.0.0.1:0\n',
    );
    const r = cliSync(['run', '-c', cfg, '--', 'true']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/bad\.yaml:4:3: egressGateway\.parent: required key is missing/);
    expect(cliSync(['run', '-c', devConfig()]).status).toBe(2);
  });

  it('forwards SIGTERM to the app and exits with its status', async () => {
    const app = write(
      'trap.mjs',
      "process.on('SIGTERM', () => { console.log('app got SIGTERM'); process.exit(42); });\nconsole.log('app up');\nsetInterval(() => {}, 1000);\n",
    );
    const p = spawnCli(cli, ['run', '-c', devConfig(), '--', process.execPath, app]);
    await p.waitLog((l) => l.msg === 'app started', 'app started');
    for (let i = 0; i < 100 && !p.stdout().includes('app up'); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    p.child.kill('SIGTERM');
    expect(await p.exited).toEqual({ code: 42, signal: null });
    expect(p.stdout()).toContain('app got SIGTERM');
  });

  it('a second SIGTERM while it drains after the app exited does not kill it half-way', async () => {
    // a TCP server outside the app that keeps its connection open: the route has one
    // connection to drain after the app is gone (teardown waits up to drainTimeoutMs)
    const held: import('node:net').Socket[] = [];
    const holder = (await import('node:net')).createServer((c) => {
      held.push(c);
      c.on('error', () => {});
    });
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const holderPort = (holder.address() as AddressInfo).port;
    const vdir = join(dir, 'v-second-term');
    const inPort = nextPort();
    const app = write(
      'trap42.mjs',
      "process.on('SIGTERM', () => process.exit(42));\nconsole.log('app up');\nsetInterval(() => {}, 1000);\n",
    );
    const cfg = devConfig(
      [
        'drainTimeoutMs: 3000',
        'routes:',
        '  - name: held',
        `    listen: vsock:any:${inPort}`,
        `    dial: tcp:127.0.0.1:${holderPort}`,
        '',
      ].join('\n'),
    );
    const p = spawnCli(cli, ['run', '-c', cfg, '--vsock-dir', vdir, '--', process.execPath, app]);
    try {
      await p.waitLog((l) => l.msg === 'app started', 'app started');
      // the app's SIGTERM handler is installed once it printed this
      for (let i = 0; i < 200 && !p.stdout().includes('app up'); i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      const s = await vsockOpen(vdir, 16, inPort);
      s.write('x');
      for (let i = 0; i < 200 && held.length === 0; i++)
        await new Promise((r) => setTimeout(r, 25));
      expect(held.length).toBe(1);
      p.child.kill('SIGTERM');
      await p.waitLog((l) => l.msg === 'app exited', 'app exited');
      p.child.kill('SIGTERM');
      await p.waitLog((l) => String(l.msg).startsWith('signal while stopping'), 'teardown signal');
      // the app's status, after the drain: not killed by the second signal
      expect(await p.exited).toEqual({ code: 42, signal: null });
      s.destroy();
    } finally {
      p.child.kill('SIGKILL');
      for (const c of held) c.destroy();
      holder.close();
    }
  });

  it('starts routes before the app: inbound vsock->TCP reaches the app, and the app sees the gateway variables', async () => {
    const vdir = join(dir, 'v-inbound');
    // The app's TCP port comes from the kernel: a port picked at random in 40000-60000 lies in
    // Linux's ephemeral range, where another suite's echo server (listening on port 0) sat once
    // in CI, so the app failed to listen, exited 1, and the route reached the other server.
    const appPort = await new Promise<number>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', reject);
      probe.listen(0, '127.0.0.1', () => {
        const { port: p } = probe.address() as AddressInfo;
        probe.close(() => resolve(p));
      });
    });
    const inPort = nextPort();
    const app = write(
      'echo-app.mjs',
      [
        "import net from 'node:net';",
        'const env = { HTTPS_PROXY: process.env.HTTPS_PROXY, HTTP_PROXY: process.env.HTTP_PROXY, http_proxy: process.env.http_proxy, ALL_PROXY: process.env.ALL_PROXY, NO_PROXY: process.env.NO_PROXY, https_proxy: process.env.https_proxy };',
        'console.log(JSON.stringify(env));',
        `net.createServer((s) => s.pipe(s)).listen(${appPort}, '127.0.0.1', () => console.log('app listening'));`,
        "process.on('SIGTERM', () => process.exit(0));",
      ].join('\n'),
    );
    const cfg = devConfig(
      [
        'routes:',
        '  - name: inbound',
        `    listen: vsock:any:${inPort}`,
        `    dial: tcp:127.0.0.1:${appPort}`,
        '    dialRetries: { attempts: 20, delayMs: 100 }',
        'egressGateway:',
        '  listen: tcp:127.0.0.1:0',
        `  parent: vsock:3:${nextPort()}`,
        'noProxy: [internal.example]',
        '',
      ].join('\n'),
    );
    const p = spawnCli(cli, ['run', '-c', cfg, '--vsock-dir', vdir, '--', process.execPath, app]);
    try {
      const ready = await p.waitLog((l) => l.msg === 'ready', 'ready');
      const routes = ready.routes as { name: string; listen: string }[];
      const gw = routes.find((r) => r.name === 'egress')?.listen;
      expect(gw).toMatch(/^127\.0\.0\.1:\d+$/);
      // The routes listen before the app starts; wait for the app's own listener.
      for (let i = 0; i < 300 && !p.stdout().includes('app listening'); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const s = await vsockOpen(vdir, 16, inPort);
      expect(await echoOnce(s, 'to the app')).toBe('to the app');
      s.destroy();
      const env = JSON.parse(p.stdout().split('\n')[0] ?? '{}');
      expect(env).toEqual({
        HTTPS_PROXY: `http://${gw}`,
        https_proxy: `http://${gw}`,
        HTTP_PROXY: `http://${gw}`,
        http_proxy: `http://${gw}`,
        ALL_PROXY: `socks5h://${gw}`,
        NO_PROXY: 'localhost,127.0.0.1,::1,127.0.0.0/8,internal.example',
      });
    } finally {
      p.child.kill('SIGTERM');
      expect((await p.exited).code).toBe(0);
    }
  });

  it('egress gateway end to end: app CONNECTs via HTTPS_PROXY and fetches http:// via HTTP_PROXY, ee-parent enforces its policy', async () => {
    const server = await hashServer();
    const web = createServer((req, res) => res.end(`plain http ${req.method} ${req.url}`));
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    const webPort = (web.address() as AddressInfo).port;
    const vdir = join(dir, 'v-gw');
    const gwPort = nextPort();
    const parentCfg = write(
      'gw-parent.yaml',
      [
        'egressGateway:',
        `  listen: vsock:any:${gwPort}`,
        '  policy:',
        `    allow: ["127.0.0.1:${server.port}", "127.0.0.1:${webPort}"]`,
        '',
      ].join('\n'),
    );
    const parent = spawnCli(parentCli, ['run', '-c', parentCfg, '--vsock-dir', vdir]);
    await parent.waitLog((l) => l.msg === 'ready', 'parent ready');
    const app = new URL('./fixtures/gw-app.mjs', import.meta.url).pathname;
    const cfg = devConfig(
      ['egressGateway:', '  listen: tcp:127.0.0.1:0', `  parent: vsock:3:${gwPort}`, ''].join('\n'),
    );
    const p = spawnCli(cli, [
      'run',
      '-c',
      cfg,
      '--vsock-dir',
      vdir,
      '--',
      process.execPath,
      app,
      `127.0.0.1:${server.port}`,
      `127.0.0.1:${server.port + 1}`,
      `http://127.0.0.1:${webPort}/hello?x=1`,
      `http://127.0.0.1:${server.port + 1}/denied`,
    ]);
    try {
      expect(await p.exited).toEqual({ code: 0, signal: null });
      const out = JSON.parse(p.stdout().trim());
      const [ok, denied, plain, plainDenied] = out.results;
      expect(plain).toEqual({ status: 200, body: 'plain http GET /hello?x=1' });
      expect(plainDenied.status).toBe(403);
      expect(ok.head).toMatch(/^HTTP\/1\.1 200/);
      expect(ok.body).toBe(out.want);
      expect(denied.head).toMatch(/^HTTP\/1\.1 403/);
      const refused = await parent.waitLog(
        (l) => JSON.stringify(l).includes('ERR_PROXY_POLICY_DENIED'),
        'refusal logged by the parent',
      );
      expect(JSON.stringify(refused)).toContain(`127.0.0.1:${server.port + 1}`);
    } finally {
      parent.child.kill('SIGTERM');
      await parent.exited;
      await server.close();
      await new Promise((r) => web.close(r));
    }
  });
});
