// Issue 10 item 1 for `ee-parent vsock-proxy` (the built CLI, over the vsock emulation): the
// unspecified address (0.0.0.0/8, ::) is never dialled whatever the allowlist says, neither as
// remote_addr in any spelling nor when the remote name resolves to it later. A real loopback
// service on 127.0.0.1:P and [::1]:P must never see a connection.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vsockOpen } from './helpers.js';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const U = 'ERR_PROXY_UNSPECIFIED_ADDRESS';

let dir: string;
let port = 0;
let seen = 0;
const servers: net.Server[] = [];
let vport = 30_000 + Math.floor(Math.random() * 20_000);

/** The parent's own services: 127.0.0.1:P and [::1]:P on one port, counting every connection. */
async function loopbackService(): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const got: net.Server[] = [];
    try {
      for (const host of ['127.0.0.1', '::1']) {
        const srv = net.createServer((s) => {
          seen++;
          s.destroy();
        });
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen({ host, port, ipv6Only: true }, resolve);
        });
        got.push(srv);
        port = (srv.address() as net.AddressInfo).port;
      }
      servers.push(...got);
      return;
    } catch {
      for (const s of got) s.close();
      port = 0;
    }
  }
  throw new Error('no port free on both 127.0.0.1 and ::1');
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ee-parent-unspec-'));
  await loopbackService();
});
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  child: ChildProcess;
  stderr: () => string;
  /** Resolves with 'ready' once the proxy logs ready, or with the exit code. */
  settled: Promise<'ready' | number | null>;
  exited: Promise<number | null>;
}

function start(argv0: string, args: string[]): Run {
  const child = spawn(argv0, args, {
    env: { PATH: process.env.PATH },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const settled = new Promise<'ready' | number | null>((resolve) => {
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (/"msg":"ready"/.test(err)) resolve('ready');
    });
    exited.then(resolve);
  });
  return { child, stderr: () => err, settled, exited };
}

/** One connection over the vsock emulation; resolves when the proxy closes it. */
async function knock(vdir: string, p: number): Promise<void> {
  const s = await vsockOpen(vdir, 3, p);
  s.on('error', () => {});
  s.resume();
  await new Promise<void>((resolve) => {
    s.once('close', () => resolve());
    s.end();
  });
}

const SPELLINGS = [
  '0.0.0.0',
  '0',
  '0.0',
  '0.0.0',
  '0x0',
  '00000000',
  '0.1.2.3',
  '::',
  '[::]',
  '0::0',
  '::ffff:0.0.0.0',
  '::ffff:0:0',
  '64:ff9b::',
];

describe('vsock-proxy: remote_addr spelled as the unspecified address', () => {
  it.each(SPELLINGS)(
    '%s is refused at start (exit 2) though the allowlist allows every host on the port',
    async (spelling) => {
      const cfg = join(dir, `allow-${vport}.yaml`);
      writeFileSync(cfg, `allowlist:\n- {address: "*", port: ${port}}\n`);
      const vdir = join(dir, `v${vport}`);
      const p = vport++;
      const seenBefore = seen;
      const run = start(process.execPath, [
        cli,
        'vsock-proxy',
        String(p),
        spelling,
        String(port),
        '--config',
        cfg,
        '--vsock-dir',
        vdir,
      ]);
      const outcome = await run.settled;
      if (outcome === 'ready') {
        // the bug: it started; show where a connection goes, then stop it
        await knock(vdir, p).catch(() => {});
        run.child.kill('SIGKILL');
        await run.exited;
      }
      expect({ outcome, loopbackConnections: seen - seenBefore }).toEqual({
        outcome: 2,
        loopbackConnections: 0,
      });
      expect(run.stderr()).toContain(U);
      expect(run.stderr()).toContain('ERR_CONFIG_INVALID');
    },
    30_000,
  );
});

const canUnshare =
  spawnSync('unshare', ['-rm', 'true'], { stdio: 'ignore', timeout: 10_000 }).status === 0;

describe.skipIf(!canUnshare)(
  'vsock-proxy: a remote name that resolves to the unspecified address (own mount namespace, own /etc/hosts)',
  () => {
    it('refuses each connection with ERR_PROXY_UNSPECIFIED_ADDRESS and dials nothing', async () => {
      const hosts = join(dir, 'hosts');
      const resolv = join(dir, 'resolv.conf');
      writeFileSync(hosts, '127.0.0.1 localhost\n');
      // no DNS server: a lookup that misses /etc/hosts fails at once and never leaves the machine
      writeFileSync(resolv, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
      const names = { 'zero.test': '0.0.0.0', 'zero6.test': '::', 'mapped.test': '::ffff:0.0.0.0' };
      const cfg = join(dir, 'names.yaml');
      writeFileSync(
        cfg,
        `allowlist:\n${Object.keys(names)
          .map((n) => `- {address: ${n}, port: ${port}}\n`)
          .join('')}`,
      );
      const vdir = join(dir, 'vnames');
      const runs = Object.keys(names).map((name) => {
        const p = vport++;
        const run = start('unshare', [
          '-rm',
          'sh',
          '-c',
          `mount --bind "${hosts}" /etc/hosts && mount --bind "${resolv}" /etc/resolv.conf && exec "$0" "$@"`,
          process.execPath,
          cli,
          'vsock-proxy',
          String(p),
          name,
          String(port),
          '--config',
          cfg,
          '--vsock-dir',
          vdir,
        ]);
        return { name, p, run };
      });
      try {
        // the names do not resolve yet: each proxy starts and checks again on every connection
        for (const r of runs) expect(await r.run.settled).toBe('ready');
        // now they resolve, to the unspecified address (the same file, seen through the bind mount)
        writeFileSync(
          hosts,
          `127.0.0.1 localhost\n${Object.entries(names)
            .map(([n, a]) => `${a} ${n}\n`)
            .join('')}`,
        );
        const seenBefore = seen;
        const refusals = (r: (typeof runs)[number]) =>
          r.run
            .stderr()
            .split('\n')
            .filter((l) => l.includes(`"code":"${U}"`)).length;
        for (const r of runs) {
          // the resolver re-reads /etc/hosts when it changes (checked at most once a second):
          // knock until the new answer is in use, then once more
          for (let i = 0; i < 30 && refusals(r) === 0; i++) {
            await knock(vdir, r.p);
            if (refusals(r) === 0) await new Promise((res) => setTimeout(res, 200));
          }
          await knock(vdir, r.p);
          expect(refusals(r), `${r.name}: ${r.run.stderr()}`).toBe(2);
        }
        await new Promise((r) => setTimeout(r, 100));
        expect(seen - seenBefore).toBe(0);
      } finally {
        for (const r of runs) r.run.child.kill('SIGTERM');
        for (const r of runs) await r.run.exited;
      }
    }, 60_000);
  },
);
