// Issue 10 item 7: `vsock-proxy --max-connections` says what it does: default 4096 (there is no
// unlimited), shown in --help and in the ready line, and enforced.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoOnce, echoServer, spawnCli, vsockOpen } from './helpers.js';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;

let dir: string;
let port = 20_000 + Math.floor(Math.random() * 20_000);
const nextPort = () => port++;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-parent-maxconn-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('vsock-proxy --max-connections', () => {
  it('--help documents the real default, 4096', () => {
    const r = spawnSync(process.execPath, [cli, 'vsock-proxy', '--help'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const text = r.stdout.replace(/\s+/g, ' ');
    expect(text).toMatch(
      /--max-connections <n> refuse connections beyond N open ones .*\(default: "4096"\)/,
    );
    expect(text).not.toMatch(/default: unlimited/);
  });

  it('runs with 4096 unless told otherwise, and refuses connections beyond the limit', {
    timeout: 30_000,
  }, async () => {
    const echo = await echoServer();
    const cfg = join(dir, 'allow.yaml');
    writeFileSync(cfg, `allowlist:\n- {address: 127.0.0.1, port: ${echo.port}}\n`);
    const vdir = join(dir, 'v');
    const [p1, p2] = [nextPort(), nextPort()];
    const args = (vport: number) => [
      'vsock-proxy',
      String(vport),
      '127.0.0.1',
      String(echo.port),
      '--config',
      cfg,
      '--vsock-dir',
      vdir,
    ];
    const byDefault = spawnCli(cli, args(p1));
    const limited = spawnCli(cli, [...args(p2), '--max-connections', '1']);
    try {
      const ready = await byDefault.waitLog((l) => l.msg === 'ready', 'ready');
      expect(ready.maxConnections).toBe(4096);
      expect((await limited.waitLog((l) => l.msg === 'ready', 'ready')).maxConnections).toBe(1);

      const first = await vsockOpen(vdir, 3, p2);
      expect(await echoOnce(first, 'first')).toBe('first');
      // The second is accepted by the listener and closed at once, before anything is dialled.
      const second = await vsockOpen(vdir, 3, p2);
      let received = 0;
      second.on('data', (d: Buffer) => {
        received += d.length;
      });
      second.on('error', () => {});
      // allowHalfOpen: the proxy's close shows as 'end' (or 'close' after an EPIPE on the write).
      const closing = new Promise((r) => {
        if (second.closed || second.readableEnded) r(null);
        second.once('end', r).once('close', r);
      });
      second.write('second');
      await closing;
      expect(received).toBe(0);
      await limited.waitLog(
        (l) => l.code === 'ERR_PROXY_MAX_CONNECTIONS',
        'connection refused at maxConnections',
      );
      expect(await echoOnce(first, 'first still works')).toBe('first still works');
      first.destroy();
    } finally {
      byDefault.child.kill('SIGKILL');
      limited.child.kill('SIGKILL');
      await echo.close();
    }
  });
});
