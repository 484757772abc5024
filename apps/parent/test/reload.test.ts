// Issue 10 item 7: a SIGHUP reload that cannot bind leaves the previous routes listening, and
// /healthz reports what really listens. Spawns the built `ee-parent run` with the vsock emulation.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoOnce, echoServer, httpGet, spawnCli, vsockOpen } from './helpers.js';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;

let dir: string;
let port = 20_000 + Math.floor(Math.random() * 20_000);
const nextPort = () => port++;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-parent-reload-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('run: SIGHUP reload', () => {
  it('a reload whose new listener cannot bind keeps the old routes listening; /healthz tells the truth', async () => {
    const echo = await echoServer();
    // A port someone else holds.
    const blocker = net.createServer(() => {});
    await new Promise<void>((r) => blocker.listen({ host: '127.0.0.1', port: 0 }, r));
    const taken = (blocker.address() as net.AddressInfo).port;
    const vdir = join(dir, 'v');
    const cfg = join(dir, 'parent.yaml');
    const [p1, p2] = [nextPort(), nextPort()];
    const head = 'metrics:\n  listen: tcp:127.0.0.1:0\nroutes:\n';
    const one = (listen: string) =>
      `  - name: one\n    listen: ${listen}\n    dial: tcp:127.0.0.1:${echo.port}\n`;
    const two = `  - name: two\n    listen: vsock:any:${p2}\n    dial: tcp:127.0.0.1:${echo.port}\n`;
    writeFileSync(cfg, head + one(`vsock:any:${p1}`));
    const p = spawnCli(cli, ['run', '--config', cfg, '--vsock-dir', vdir]);
    try {
      const ready = await p.waitLog((l) => l.msg === 'ready', 'ready');
      const mport = ready.metricsPort as number;
      const a = await vsockOpen(vdir, 3, p1);
      expect(await echoOnce(a, 'before')).toBe('before');

      // "one" moves to a taken TCP port and "two" is added: the reload must fail as a whole.
      writeFileSync(cfg, head + one(`tcp:127.0.0.1:${taken}`) + two);
      p.child.kill('SIGHUP');
      const failed = await p.waitLog((l) => l.msg.startsWith('reload failed'), 'reload failed');
      expect(failed.code).toBe('EADDRINUSE');

      // The old route still accepts real connections, the open one still flows, "two" never bound.
      const b = await vsockOpen(vdir, 3, p1);
      expect(await echoOnce(b, 'new connection after the failed reload')).toBe(
        'new connection after the failed reload',
      );
      b.destroy();
      expect(await echoOnce(a, 'open connection')).toBe('open connection');
      await expect(vsockOpen(vdir, 3, p2)).rejects.toMatchObject({
        code: expect.stringMatching(/^(ECONNREFUSED|ENOENT)$/),
      });

      const health = await httpGet(mport, '/healthz');
      expect(health.status).toBe(200);
      expect(JSON.parse(health.body)).toEqual({
        status: 'ok',
        routes: [
          { name: 'one', listen: `vm(any):${p1}`, state: 'listening', bound: `vm(any):${p1}` },
        ],
        reload: {
          ok: false,
          at: expect.any(String),
          code: 'EADDRINUSE',
          error: expect.stringContaining(`127.0.0.1:${taken}`),
        },
      });

      // A good reload afterwards applies, and /healthz shows both routes.
      writeFileSync(cfg, head + one(`vsock:any:${p1}`) + two);
      p.child.kill('SIGHUP');
      const reloaded = await p.waitLog((l) => l.msg === 'reloaded', 'reloaded');
      expect(reloaded).toMatchObject({ started: ['two'], kept: ['one'], drained: [] });
      const c = await vsockOpen(vdir, 3, p2);
      expect(await echoOnce(c, 'two')).toBe('two');
      c.destroy();
      const after = JSON.parse((await httpGet(mport, '/healthz')).body);
      expect(after.status).toBe('ok');
      expect(after.routes.map((r: { name: string; state: string }) => [r.name, r.state])).toEqual([
        ['one', 'listening'],
        ['two', 'listening'],
      ]);
      expect(after.reload).toMatchObject({ ok: true });
      a.destroy();
      p.child.kill('SIGTERM');
      expect(await p.exited).toEqual({ code: 0, signal: null });
    } finally {
      p.child.kill('SIGKILL');
      await echo.close();
      await new Promise((r) => blocker.close(r));
    }
  });
});
