import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '@enclave-extras/proxy/config';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  enclaveConfigSchema,
  exitStatus,
  isLoopbackV4,
  loopbackAliases,
  proxyEnv,
  RuntimeError,
  renderHostsFile,
  runApp,
  updateHostsFile,
} from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist', 'index.js');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-enclave-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('hosts file', () => {
  it('adds a marked block, keeps other lines, is idempotent, replaces and removes the block', async () => {
    const path = join(dir, 'hosts');
    const original = '127.0.0.1\tlocalhost\n# a comment\n::1\tip6-localhost\n';
    writeFileSync(path, original);
    const entries = [{ address: '127.0.0.2', names: ['kms.us-east-1.amazonaws.com'] }];
    const r1 = await updateHostsFile(entries, { path });
    expect(r1).toMatchObject({ changed: true, method: 'rename' });
    const after1 = readFileSync(path, 'utf8');
    expect(after1.startsWith(original)).toBe(true);
    expect(after1).toContain('127.0.0.2\tkms.us-east-1.amazonaws.com\n');
    expect(after1).toMatch(/# BEGIN enclave-extras.*\n127\.0\.0\.2\t.*\n# END enclave-extras\n$/);

    const r2 = await updateHostsFile(entries, { path });
    expect(r2.changed).toBe(false);
    expect(readFileSync(path, 'utf8')).toBe(after1);

    // A line added after our block by someone else survives a rewrite of the block.
    writeFileSync(path, `${after1}10.0.0.9\tdb.internal\n`);
    await updateHostsFile([{ address: '127.0.0.3', names: ['a.example', 'b.example'] }], { path });
    const after3 = readFileSync(path, 'utf8');
    expect(after3).toContain('10.0.0.9\tdb.internal');
    expect(after3).toContain('127.0.0.3\ta.example b.example');
    expect(after3).not.toContain('kms.us-east-1');
    expect(after3.match(/# BEGIN enclave-extras/g)).toHaveLength(1);

    await updateHostsFile([], { path });
    expect(readFileSync(path, 'utf8')).toBe(`${original}10.0.0.9\tdb.internal\n`);
  });

  it('creates a missing file and rejects bad entries naming the field', async () => {
    const path = join(dir, 'new-hosts');
    await updateHostsFile([{ address: '::1', names: ['x.test'] }], { path });
    expect(readFileSync(path, 'utf8')).toContain('::1\tx.test');
    await expect(
      updateHostsFile([{ address: '127.0.0.300', names: ['x'] }], { path }),
    ).rejects.toMatchObject({ code: 'ERR_RUNTIME_HOSTS', message: /hosts\[0\]\.address/ });
    await expect(
      updateHostsFile([{ address: '127.0.0.2', names: ['bad name'] }], { path }),
    ).rejects.toBeInstanceOf(RuntimeError);
  });

  it('renders an empty file and no block without entries', () => {
    expect(renderHostsFile('', [])).toBe('');
    expect(renderHostsFile('a\n', [])).toBe('a\n');
  });
});

describe('enclave config', () => {
  it('derives the loopback aliases from routes, gateway and hosts entries', () => {
    const config = parseConfig(
      [
        'network:',
        '  hosts:',
        '    - address: 127.0.0.5',
        '      names: [kms.example]',
        'routes:',
        '  - name: kms',
        '    listen: tcp:127.0.0.2:443',
        '    dial: vsock:3:8000',
        '  - name: inbound',
        '    listen: vsock:any:5005',
        '    dial: tcp:127.0.0.1:8080',
        'egressGateway:',
        '  listen: tcp:127.0.0.4:3128',
        '  parent: vsock:3:8001',
      ].join('\n'),
      enclaveConfigSchema,
      'enclave.yaml',
    );
    expect(loopbackAliases(config).sort()).toEqual(['127.0.0.2', '127.0.0.4', '127.0.0.5']);
    expect(config.network.setup).toBe(true);
    expect(config.network.hostsFile).toBe('/etc/hosts');
  });

  it('names key and line of an error', () => {
    expect(() =>
      parseConfig(
        'routes:\n  - name: a\n    listen: tcp:127.0.0.2:443\n    dail: vsock:3:8000\n',
        enclaveConfigSchema,
        'enclave.yaml',
      ),
    ).toThrow(/enclave\.yaml:4:5: routes\[0\]\.dail: unknown key/);
  });

  it('checks 127/8 addresses strictly', () => {
    expect(isLoopbackV4('127.0.0.2')).toBe(true);
    expect(isLoopbackV4('127.0.0.256')).toBe(false);
    expect(isLoopbackV4('10.0.0.1')).toBe(false);
    expect(isLoopbackV4('127.1')).toBe(false);
  });
});

describe('runApp', () => {
  it('returns the exit code, and 128+n for a signal', async () => {
    expect((await runApp({ command: 'sh', args: ['-c', 'exit 7'], signals: [] })).status).toBe(7);
    const killed = await runApp({ command: 'sh', args: ['-c', 'kill -TERM $$'], signals: [] });
    expect(killed).toMatchObject({ status: 143, signal: 'SIGTERM', code: null });
    expect(exitStatus(null, 'SIGKILL')).toBe(137);
  });

  it('passes the environment and rejects a missing command with its errno code', async () => {
    const out = join(dir, 'env.txt');
    await runApp({
      command: 'sh',
      args: [
        '-c',
        `printf %s "$HTTPS_PROXY|$HTTP_PROXY|$http_proxy|$ALL_PROXY|$no_proxy" > ${out}`,
      ],
      env: { PATH: process.env.PATH, ...proxyEnv({ gateway: '127.0.0.1:3128' }) },
      signals: [],
    });
    expect(readFileSync(out, 'utf8')).toBe(
      'http://127.0.0.1:3128|http://127.0.0.1:3128|http://127.0.0.1:3128|socks5h://127.0.0.1:3128|localhost,127.0.0.1,::1,127.0.0.0/8',
    );
    await expect(runApp({ command: join(dir, 'no-such-app'), signals: [] })).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'spawn',
      message: /no-such-app/,
    });
  });
});

// Loopback setup and /etc/hosts need root and a private network + mount namespace so this
// machine's own network and /etc/hosts are never touched.
const canUnshare =
  process.getuid?.() === 0 &&
  spawnSync('unshare', ['--net', '--mount', 'true']).status === 0 &&
  existsSync(dist);
if (!canUnshare) {
  console.warn(
    `[enclave.test] SKIPPED namespace tests: need root, unshare(1) and a built ${dist} (pnpm --filter @enclave-extras/proxy build)`,
  );
}

describe.skipIf(!canUnshare)('bring-up in a private network and mount namespace', () => {
  function inNamespace(
    script: string,
    dropNetAdmin = false,
  ): { status: number | null; out: string; err: string } {
    const file = join(dir, `ns-${Math.random().toString(36).slice(2)}.mjs`);
    writeFileSync(file, script.replaceAll('__DIST__', JSON.stringify(dist)));
    const hosts = join(dir, `hosts-${Math.random().toString(36).slice(2)}`);
    writeFileSync(hosts, '127.0.0.1\tlocalhost\n# keep me\n');
    const node = process.execPath;
    const run = !dropNetAdmin
      ? `${node} ${file}`
      : `setpriv --bounding-set=-net_admin --inh-caps=-net_admin ${node} ${file}`;
    const r = spawnSync(
      'unshare',
      [
        '--net',
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        `mount --bind ${hosts} /etc/hosts && ${run}`,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    return { status: r.status, out: r.stdout, err: r.stderr };
  }

  it('brings lo up, adds aliases once, writes /etc/hosts, and the name dials the alias', () => {
    const r = inNamespace(`
      import { setupLoopback, updateHostsFile } from __DIST__;
      import { execFileSync } from 'node:child_process';
      import { readFileSync } from 'node:fs';
      import dns from 'node:dns/promises';
      import net from 'node:net';
      const first = await setupLoopback({ aliases: ['127.0.0.2', '127.0.0.3'] });
      const second = await setupLoopback({ aliases: ['127.0.0.2', '127.0.0.3'] });
      const h1 = await updateHostsFile([{ address: '127.0.0.2', names: ['kms.us-east-1.amazonaws.com'] }]);
      const h2 = await updateHostsFile([{ address: '127.0.0.2', names: ['kms.us-east-1.amazonaws.com'] }]);
      const addrs = execFileSync('ip', ['-o', '-4', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' });
      const looked = await dns.lookup('kms.us-east-1.amazonaws.com', { family: 4 });
      const server = net.createServer((s) => s.end('hi'));
      await new Promise((r) => server.listen({ host: '127.0.0.2', port: 0 }, r));
      const port = server.address().port;
      const got = await new Promise((resolve, reject) => {
        const c = net.connect({ host: 'kms.us-east-1.amazonaws.com', port, family: 4 });
        let data = '';
        c.on('data', (d) => (data += d));
        c.on('end', () => resolve({ data, remote: c.remoteAddress }));
        c.on('error', reject);
      });
      server.close();
      console.log(JSON.stringify({ first, second, h1, h2, addrs, looked, got, hosts: readFileSync('/etc/hosts', 'utf8') }));
    `);
    expect(r.err).toBe('');
    expect(r.status).toBe(0);
    const o = JSON.parse(r.out);
    expect(o.first).toEqual({ broughtUp: true, added: ['127.0.0.2', '127.0.0.3'] });
    expect(o.second).toEqual({ broughtUp: false, added: [] });
    expect(o.addrs.match(/inet 127\.0\.0\.2\/32/g)).toHaveLength(1);
    // /etc/hosts is a bind mount here (like Docker's), so rename is refused and it is rewritten in place.
    expect(o.h1).toMatchObject({ changed: true, method: 'in-place' });
    expect(o.h2).toMatchObject({ changed: false });
    expect(o.hosts).toMatch(/^127\.0\.0\.1\tlocalhost\n# keep me\n# BEGIN enclave-extras/);
    expect(o.looked.address).toBe('127.0.0.2');
    expect(o.got).toEqual({ data: 'hi', remote: '127.0.0.2' });
  });

  it('reports EPERM with what to do when it lacks CAP_NET_ADMIN', () => {
    const r = inNamespace(
      `
      import { setupLoopback } from __DIST__;
      try { await setupLoopback({ aliases: ['127.0.0.2'] }); console.log('no error'); }
      catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, syscall: e.syscall, message: e.message })); }
    `,
      true,
    );
    expect(r.status).toBe(0);
    const o = JSON.parse(r.out);
    expect(o).toMatchObject({
      name: 'RuntimeError',
      code: 'EPERM',
      syscall: 'ip link set dev lo up',
    });
    expect(o.message).toMatch(/CAP_NET_ADMIN.*--no-network-setup/);
  });
});

// Keeps the import used when the namespace block is skipped.
void execFileSync;
