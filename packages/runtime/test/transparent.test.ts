import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { enclaveConfigSchema, installRedirectRules, RuntimeError } from '../src/index.js';
import { parseSockaddr } from '../src/original-dst.js';

// Issue 15 item 1: transparent egress. Two network namespaces on this host (unshare -rn; this
// machine's own iptables are never touched): the "parent" (upstream servers on 10.77.0.x and the
// parent gateway server with the policy) and the "enclave" (only lo; runEnclave with
// egress: transparent runs an app that does raw net.connect with a line protocol and a Postgres
// startup handshake). They share only the vsock emulation directory (Unix sockets).
const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist', 'index.js');
const have = (cmd: string, args: string[]) => spawnSync(cmd, args).status === 0;
const canRun =
  process.platform === 'linux' &&
  existsSync(dist) &&
  have('unshare', ['-rnm', 'true']) &&
  have('unshare', ['-rn', 'iptables-legacy', '-w', '-t', 'nat', '-S']);
if (!canRun) {
  console.warn(
    `[transparent.test] SKIPPED: need Linux, unshare -rn, iptables-legacy with the nat table (apt-get install iptables) and a built ${dist}`,
  );
}

const tmp = mkdtempSync(join(tmpdir(), 'ee-transparent-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Talk {
  data: string;
  error?: string;
  closed?: boolean;
}
interface EnclaveResult {
  exit: number;
  nat: string;
  routes: string;
  app: { nat: string; line: Talk; pg: Talk; denied: Talk };
  log: Array<Record<string, unknown>>;
}

/** `unshare -rnm` running argv after bind-mounting test files over /etc/resolv.conf and /etc/hosts. */
function inNamespace(dir: string, resolvConf: string, argv: string[]): string[] {
  const resolv = join(dir, `resolv-${Math.random().toString(36).slice(2)}`);
  const hosts = join(dir, 'hosts0');
  writeFileSync(resolv, resolvConf);
  writeFileSync(hosts, '127.0.0.1 localhost\n');
  const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
  return [
    '-rnm',
    'sh',
    '-c',
    `mount --bind ${q(resolv)} /etc/resolv.conf && mount --bind ${q(hosts)} /etc/hosts && exec ${argv.map(q).join(' ')}`,
  ];
}

interface ParentCounts {
  counts: { line: number; pg: number; denied: number; named: number };
  upstreamAsked: Record<string, number>;
  resolverAsked: Record<string, number>;
  dns: { queries: number; refused: number; resolved: number };
}

/** Starts the parent namespace; resolves once its gateway and DNS service listen. */
function startParent(dir: string, vsockDir: string) {
  const child = spawn(
    'unshare',
    inNamespace(dir, 'nameserver 10.77.0.53\n', [
      process.execPath,
      join(here, 'ns', 'parent.child.mjs'),
    ]),
    {
      env: { ...process.env, ENCLAVE_EXTRAS_VSOCK_DIR: vsockDir },
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => {
    const r = await lines.next();
    if (r.done) throw new Error('the parent namespace exited early');
    return JSON.parse(r.value) as Record<string, unknown>;
  };
  return {
    ready: next(),
    async stop(): Promise<ParentCounts> {
      child.stdin.end();
      return (await next()) as unknown as ParentCounts;
    },
    kill: () => child.kill('SIGKILL'),
  };
}

describe.skipIf(!canRun)('transparent egress in a network namespace', () => {
  it('a proxy-unaware app reaches allowed non-HTTP servers through the parent; a denied one is reset and never reached; stale rules are replaced and every rule is gone after exit', async () => {
    const dir = join(tmp, 'run1');
    const vsockDir = join(dir, 'vsock');
    mkdirSync(vsockDir, { recursive: true });
    const parent = startParent(dir, vsockDir);
    try {
      expect(await parent.ready).toEqual({ ready: true });
      const r = spawnSync(
        'unshare',
        [
          '-rn',
          process.execPath,
          join(here, 'ns', 'enclave.child.mjs'),
          dir,
          join(here, 'ns', 'app.mjs'),
        ],
        {
          env: { ...process.env, ENCLAVE_EXTRAS_VSOCK_DIR: vsockDir },
          encoding: 'utf8',
          timeout: 60_000,
        },
      );
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as EnclaveResult;
      expect(out.exit).toBe(0);
      // line protocol: the upstream saw the connection on its own address, through the parent
      expect(out.app.line.error).toBeUndefined();
      expect(out.app.line.data).toBe('WELCOME app via 10.77.0.5:7000\nping\n');
      // Postgres startup: AuthenticationOk ... ReadyForQuery(idle)
      expect(out.app.pg.error).toBeUndefined();
      expect(out.app.pg.data.startsWith('R\0\0\0\x08\0\0\0\0')).toBe(true);
      expect(out.app.pg.data).toContain('fake-16-for-alice');
      expect(out.app.pg.data.endsWith('Z\0\0\0\x05I')).toBe(true);
      // denied by the parent's policy: reset, no byte, and the upstream never saw it
      expect(out.app.denied.data).toBe('');
      expect(out.app.denied.error).toBe('ECONNRESET');
      expect(out.log).toContainEqual(
        expect.objectContaining({
          msg: 'connection refused by policy',
          route: 'transparent',
          target: '10.77.0.7:7000',
          code: 'ERR_PROXY_POLICY_DENIED',
        }),
      );
      // while the app ran: exactly one jump (the stale one was replaced, not duplicated), and
      // the fresh chain (no stale "-p tcp -j RETURN")
      const jumps = out.app.nat.split('\n').filter((l) => l.startsWith('-A OUTPUT'));
      expect(jumps).toEqual(['-A OUTPUT -p tcp -j EE_EGRESS']);
      const chain = out.app.nat.split('\n').filter((l) => l.startsWith('-A EE_EGRESS'));
      expect(chain).toEqual([
        '-A EE_EGRESS -d 127.0.0.0/8 -j RETURN',
        '-A EE_EGRESS -p tcp -j REDIRECT --to-ports 15001',
      ]);
      // after exit: no chain, no jump, no route added by the runtime
      expect(out.nat).not.toMatch(/EE_EGRESS/);
      expect(out.routes.trim()).toBe('');
      const counts = await parent.stop();
      expect(counts.counts).toEqual({ line: 1, pg: 1, denied: 0, named: 0 });
    } finally {
      parent.kill();
    }
  });

  it('DNS: the stub answers over UDP and TCP through the parent under its policy, caches by TTL, and the transparent path sends the name the app resolved', async () => {
    const dir = join(tmp, 'run-dns');
    const vsockDir = join(dir, 'vsock');
    mkdirSync(vsockDir, { recursive: true });
    const parent = startParent(dir, vsockDir);
    try {
      expect(await parent.ready).toEqual({ ready: true });
      const r = spawnSync(
        'unshare',
        inNamespace(dir, 'nameserver 192.0.2.1\n', [
          process.execPath,
          join(here, 'ns', 'enclave.child.mjs'),
          dir,
          join(here, 'ns', 'dns-app.mjs'),
          'dns',
        ]),
        {
          env: { ...process.env, ENCLAVE_EXTRAS_VSOCK_DIR: vsockDir },
          encoding: 'utf8',
          timeout: 90_000,
        },
      );
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as {
        exit: number;
        resolvConf: string;
        app: Record<
          string,
          {
            rcode?: number;
            answers?: Array<{ ttl: number; address: string }>;
            addresses?: string[];
            error?: string;
            data?: string;
            idMatches?: boolean;
          }
        > & { resolvConf: string };
      };
      expect(out.exit).toBe(0);
      const app = out.app;
      // resolv.conf named the stub while the app ran, and was restored afterwards
      expect(app.resolvConf).toMatch(/^nameserver 127\.0\.0\.1$/m);
      expect(out.resolvConf).toBe('nameserver 192.0.2.1\n');
      // getaddrinfo through the stub
      expect(app.named?.addresses).toEqual(['10.77.0.8']);
      // 10.77.0.8:7000 is allowed by the parent only as named.test:7000: reaching it proves the
      // transparent path sent the name the app resolved
      expect(app.connectNamed?.data).toBe('WELCOME dnsapp via named 10.77.0.8\n');
      // UDP and TCP answers, ids kept
      for (const k of ['udpNamed1', 'udpNamed2', 'tcpNamed']) {
        expect(app[k]).toMatchObject({ rcode: 0, answers: [{ address: '10.77.0.8' }] });
      }
      expect(app.udpNamed2?.idMatches).toBe(true);
      // a name the policy can never allow: REFUSED (getaddrinfo: EAI_AGAIN), over UDP and TCP
      expect(app.denied?.error).toBe('EAI_AGAIN');
      expect(app.udpDenied).toMatchObject({ rcode: 5, answers: [] });
      expect(app.tcpDenied).toMatchObject({ rcode: 5, answers: [] });
      // allowed but nonexistent: NXDOMAIN from upstream
      expect(app.missing?.error).toBe('ENOTFOUND');
      // TTL 1: the second question is answered from the stub's cache, the third (after 2.5 s) not
      for (const k of ['short1', 'short2', 'short3']) {
        expect(app[k]).toMatchObject({ rcode: 0, answers: [{ address: '10.77.0.8' }] });
        expect(app[k]?.answers?.[0]?.ttl).toBeLessThanOrEqual(1);
      }
      const p = await parent.stop();
      // denied.test never reached the parent's resolver nor the upstream DNS server
      expect(p.resolverAsked['denied.test']).toBeUndefined();
      expect(Object.keys(p.upstreamAsked).filter((k) => k.startsWith('denied.test'))).toEqual([]);
      expect(p.dns.refused).toBe(2); // getaddrinfo's A and AAAA; the raw ones hit the stub's cache
      // named.test reached the DNS service once per type (getaddrinfo's A and AAAA); the two UDP
      // and one TCP questions after it were answered by the stub's cache
      expect(p.resolverAsked['named.test']).toBe(2);
      // short.test: first and third question reached the parent, the second did not
      expect(p.resolverAsked['short.test']).toBe(2);
      expect(p.counts.named).toBe(1);
    } finally {
      parent.kill();
    }
  });

  it('reads the original destination of redirected IPv4 and IPv6 connections (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST)', () => {
    const script = `
      import { execFileSync } from 'node:child_process';
      import net from 'node:net';
      import { installRedirectRules, originalDestination } from ${JSON.stringify(dist)};
      execFileSync('ip', ['link', 'set', 'lo', 'up']);
      const seen = [];
      const serve = (host) => new Promise((resolve) => {
        const srv = net.createServer(async (s) => {
          try { seen.push(await originalDestination(s)); } catch (e) { seen.push({ code: e.code }); }
          s.end();
        });
        srv.listen(15003, host, () => resolve(srv));
      });
      const servers = [await serve('127.0.0.1'), await serve('::1')];
      const rules = await installRedirectRules({ port: 15003, ipv6: true });
      const dial = (host, port) => new Promise((resolve) => {
        const c = net.connect({ host, port });
        c.on('close', resolve);
        c.on('error', () => {});
      });
      await dial('203.0.113.7', 5432);
      await dial('2001:db8::7', 443);
      await dial('127.0.0.1', 15003); // not redirected: loopback is exempt
      const families = rules.families;
      await rules.remove();
      const routes = execFileSync('ip', ['-6', 'route', 'show', 'default'], { encoding: 'utf8' });
      for (const s of servers) s.close();
      process.stdout.write(JSON.stringify({ seen, families, routes }));
    `;
    const r = spawnSync('unshare', ['-rn', process.execPath, '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout) as { seen: unknown[]; families: number[]; routes: string };
    expect(o.families).toEqual([4, 6]);
    expect(o.seen).toEqual([
      { family: 4, address: '203.0.113.7', port: 5432 },
      { family: 6, address: '2001:db8::7', port: 443 },
      // a direct connection to the listener: conntrack reports the listener itself
      { family: 4, address: '127.0.0.1', port: 15003 },
    ]);
    expect(o.routes.trim()).toBe('');
  });

  it('exempts the TCP destinations the runtime dials itself, and undoes everything when a rule fails', () => {
    // Run installRedirectRules in a namespace through the built package; the second call uses
    // an iptables wrapper that fails on the REDIRECT rule.
    const script = `
      import { execFileSync } from 'node:child_process';
      import { writeFileSync, chmodSync } from 'node:fs';
      import { installRedirectRules } from ${JSON.stringify(dist)};
      const ipt = () => execFileSync('iptables-legacy', ['-w', '-t', 'nat', '-S'], { encoding: 'utf8' });
      execFileSync('ip', ['link', 'set', 'lo', 'up']);
      const rules = await installRedirectRules({ port: 15002, ipv6: false, defaultRoute: false,
        exempt: [{ address: '10.1.2.3', port: 5000 }, { address: '2001:db8::1', port: 1 }], exclude: ['192.168.0.0/16'] });
      const during = ipt();
      await rules.remove();
      await rules.remove();
      const after = ipt();
      const bad = ${JSON.stringify(join(tmp, 'bad-iptables'))};
      writeFileSync(bad, '#!/bin/sh\\ncase "$*" in *REDIRECT*) echo "No chain/target/match by that name." >&2; exit 1;; esac\\nexec iptables-legacy "$@"\\n');
      chmodSync(bad, 0o755);
      let failure;
      try { await installRedirectRules({ port: 15002, ipv6: false, iptables: bad }); } catch (e) { failure = { name: e.name, code: e.code, message: e.message }; }
      const afterFailure = ipt();
      const routes = execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' });
      process.stdout.write(JSON.stringify({ during, after, failure, afterFailure, routes }));
    `;
    const r = spawnSync('unshare', ['-rn', process.execPath, '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout) as {
      during: string;
      after: string;
      failure: { name: string; code: string; message: string };
      afterFailure: string;
      routes: string;
    };
    expect(o.during.split('\n').filter((l) => l.startsWith('-A EE_EGRESS'))).toEqual([
      '-A EE_EGRESS -d 127.0.0.0/8 -j RETURN',
      '-A EE_EGRESS -d 10.1.2.3/32 -p tcp -m tcp --dport 5000 -j RETURN',
      '-A EE_EGRESS -d 192.168.0.0/16 -j RETURN',
      '-A EE_EGRESS -p tcp -j REDIRECT --to-ports 15002',
    ]);
    expect(o.after).not.toMatch(/EE_EGRESS/);
    expect(o.failure).toMatchObject({ name: 'RuntimeError', code: 'ERR_RUNTIME_EGRESS_SETUP' });
    expect(o.failure.message).toMatch(/REDIRECT.*No chain\/target\/match/);
    expect(o.afterFailure).not.toMatch(/EE_EGRESS/);
    expect(o.routes.trim()).toBe('');
  });
});

describe('transparent egress configuration', () => {
  it('egress: transparent needs the egress gateway (its parent)', () => {
    const r = enclaveConfigSchema.safeParse({ egress: 'transparent' });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(['egress']);
    const ok = enclaveConfigSchema.parse({
      egress: 'transparent',
      egressGateway: { listen: 'tcp:127.0.0.1:3128', parent: 'vsock:3:8080' },
    });
    expect(ok.transparent).toMatchObject({ port: 15001, chain: 'EE_EGRESS', ipv6: 'auto' });
    expect(enclaveConfigSchema.parse({}).egress).toBe('proxy');
  });

  it('refuses a bad exclusion before touching anything', async () => {
    await expect(
      installRedirectRules({ port: 1, exclude: ['10.0.0.0/33'], iptables: '/nonexistent' }),
    ).rejects.toBeInstanceOf(RuntimeError);
    await expect(
      installRedirectRules({ port: 1, chain: 'bad chain', iptables: '/nonexistent' }),
    ).rejects.toMatchObject({ code: 'ERR_RUNTIME_EGRESS_SETUP' });
  });

  it('parses sockaddr_in and sockaddr_in6 as getsockopt returns them', () => {
    const v4 = Buffer.alloc(16);
    v4.writeUInt16LE(2, 0);
    v4.writeUInt16BE(5432, 2);
    Buffer.from([10, 77, 0, 6]).copy(v4, 4);
    expect(parseSockaddr(v4, 16)).toEqual({ family: 4, address: '10.77.0.6', port: 5432 });
    const v6 = Buffer.alloc(28);
    v6.writeUInt16LE(10, 0);
    v6.writeUInt16BE(443, 2);
    Buffer.from('20010db8000000000000000000000001', 'hex').copy(v6, 8);
    expect(parseSockaddr(v6, 28)).toEqual({ family: 6, address: '2001:db8::1', port: 443 });
    expect(parseSockaddr(Buffer.alloc(16), 16)).toBeUndefined();
  });
});
