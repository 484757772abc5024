// ee-enclave run with egress: transparent and dns:, against ee-parent run, both the real CLIs,
// each in its own network + mount namespace (unshare -rnm; this machine's iptables, resolv.conf
// and hosts are never touched), joined only by the vsock emulation folder. The app knows nothing
// of proxies: it resolves a name with getaddrinfo and speaks a line protocol over a raw socket.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = new URL('../../../', import.meta.url).pathname;
const parentCli = `${root}apps/parent/dist/cli.js`;
const enclaveCli = `${root}apps/enclave/dist/cli.js`;
const have = (cmd: string, args: string[]) => spawnSync(cmd, args).status === 0;
const canRun =
  process.platform === 'linux' &&
  existsSync(parentCli) &&
  existsSync(enclaveCli) &&
  have('unshare', ['-rnm', 'true']) &&
  have('unshare', ['-rn', 'iptables-legacy', '-w', '-t', 'nat', '-S']);
if (!canRun) {
  console.warn(
    '[ee-enclave transparent.test] SKIPPED: need Linux, unshare -rnm, iptables-legacy (apt-get install iptables) and built apps',
  );
}

const dir = mkdtempSync(join(tmpdir(), 'ee-enclave-transparent-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

/** sh -c script for unshare -rnm: bind-mount test files over resolv.conf and hosts, then run `rest`. */
function nsScript(name: string, resolv: string, hosts: string, rest: string): string {
  writeFileSync(join(dir, `${name}.resolv`), resolv);
  writeFileSync(join(dir, `${name}.hosts`), hosts);
  return `mount --bind ${q(join(dir, `${name}.resolv`))} /etc/resolv.conf && mount --bind ${q(join(dir, `${name}.hosts`))} /etc/hosts && ${rest}`;
}

const upstream = `
const net = require('node:net');
for (const [host, tag] of [['10.77.0.9', 'line'], ['10.77.0.10', 'other']]) {
  net.createServer((s) => s.once('data', (d) => s.end(tag + ' ' + String(d)))).listen(7000, host);
}`;

const app = `
const dns = require('node:dns/promises');
const net = require('node:net');
const talk = (host) => new Promise((resolve) => {
  let data = '';
  const s = net.connect(7000, host, () => s.write('HELLO\\n'));
  s.on('data', (d) => { data += d; });
  s.on('close', () => resolve({ data }));
  s.on('error', (e) => resolve({ error: e.code, data }));
});
(async () => {
  const [{ address }] = await dns.lookup('line.test', { all: true });
  const named = await talk(address);
  const other = await talk('10.77.0.10');
  const denied = await dns.lookup('nope.example').then(() => 'resolved', (e) => e.code);
  process.stdout.write('RESULT ' + JSON.stringify({ address, named, other, denied }) + '\\n');
  process.exit(named.data === 'line HELLO\\n' ? 0 : 3);
})();`;

describe.skipIf(!canRun)('ee-enclave run: egress: transparent + dns: against ee-parent run', () => {
  it('a proxy-unaware app reaches the name the parent allows, is reset for an address it does not, and the rules go away', async () => {
    const vsock = join(dir, 'v');
    writeFileSync(
      join(dir, 'parent.yaml'),
      'egressGateway: { listen: "vsock:any:8080", policy: { allow: ["line.test:7000"] } }\ndns: { listen: "vsock:any:8053" }\n',
    );
    writeFileSync(
      join(dir, 'enclave.yaml'),
      `egressGateway: { listen: "tcp:127.0.0.1:3128", parent: "vsock:3:8080" }\negress: transparent\ntransparent: { ipv6: false }\ndns: { parent: "vsock:3:8053" }\nnetwork: { hostsFile: ${JSON.stringify(join(dir, 'enclave-hosts-block'))} }\n`,
    );
    const parent = spawn(
      'unshare',
      [
        '-rnm',
        'sh',
        '-c',
        nsScript(
          'parent',
          'nameserver 192.0.2.53\n',
          '127.0.0.1 localhost\n10.77.0.9 line.test\n',
          `ip link set lo up && ip addr add 10.77.0.9/32 dev lo && ip addr add 10.77.0.10/32 dev lo && (${q(process.execPath)} -e ${q(upstream)} &) && exec ${q(process.execPath)} ${q(parentCli)} run -c ${q(join(dir, 'parent.yaml'))} --vsock-dir ${q(vsock)}`,
        ),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let parentLog = '';
    parent.stderr.on('data', (d) => {
      parentLog += d;
    });
    try {
      for (let i = 0; i < 300 && !/"msg":"ready"/.test(parentLog); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(parentLog).toMatch(/"msg":"ready"/);
      const r = spawnSync(
        'unshare',
        [
          '-rnm',
          'sh',
          '-c',
          nsScript(
            'enclave',
            'nameserver 192.0.2.1\n',
            '127.0.0.1 localhost\n',
            `${q(process.execPath)} ${q(enclaveCli)} run -c ${q(join(dir, 'enclave.yaml'))} --vsock-dir ${q(vsock)} -- ${q(process.execPath)} -e ${q(app)}; rc=$?; echo "NAT $(iptables-legacy -w -t nat -S | grep -c EE_EGRESS)"; echo "RESOLV $(cat /etc/resolv.conf)"; exit $rc`,
          ),
        ],
        { encoding: 'utf8', timeout: 60_000 },
      );
      expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
      const result = JSON.parse(/^RESULT (.*)$/m.exec(r.stdout)?.[1] ?? '{}') as {
        address: string;
        named: { data: string };
        other: { data: string; error?: string };
        denied: string;
      };
      expect(result.address).toBe('10.77.0.9');
      expect(result.named.data).toBe('line HELLO\n');
      expect(result.other).toEqual({ error: 'ECONNRESET', data: '' });
      expect(result.denied).toBe('EAI_AGAIN');
      expect(r.stdout).toMatch(/^NAT 0$/m);
      expect(r.stdout).toMatch(/^RESOLV nameserver 192\.0\.2\.1$/m);
      // ee-enclave logged the rules and the refusal
      expect(r.stderr).toMatch(/transparent egress rules installed/);
      expect(r.stderr).toMatch(
        /"target":"10\.77\.0\.10:7000"[^\n]*ERR_PROXY_POLICY_DENIED|ERR_PROXY_POLICY_DENIED[^\n]*"target":"10\.77\.0\.10:7000"/,
      );
      // ee-parent's log lines arrive on its stderr pipe asynchronously
      for (let i = 0; i < 100 && !/dns query refused by policy/.test(parentLog); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(parentLog).toMatch(/dns query refused by policy/);
      expect(parentLog).toMatch(/"target":"10\.77\.0\.10:7000"/);
    } finally {
      parent.kill('SIGKILL');
    }
  });
});
