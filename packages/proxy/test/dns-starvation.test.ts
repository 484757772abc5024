import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

// Issue 10 item 3: while one enclave asks for 40 names that never answer, a legitimate name asked
// by another enclave must still resolve promptly, and the slow ones must fail with the DNS
// deadline code. Real DNS servers (UDP on lo) in a private network + mount namespace whose
// /etc/resolv.conf and /etc/hosts are bind-mounted test files; this machine's are never touched.
const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist', 'index.js');
const child = join(here, 'ns', 'dns-starvation.child.mjs');
const canUnshare =
  process.getuid?.() === 0 &&
  spawnSync('unshare', ['--net', '--mount', 'true']).status === 0 &&
  existsSync(dist);
if (!canUnshare) {
  console.warn(
    `[dns-starvation.test] SKIPPED: need root, unshare(1) and a built ${dist} (pnpm --filter @enclave-extras/proxy build)`,
  );
}

interface Answer {
  ok: boolean;
  code?: string;
  reason?: string;
}
interface ChildResult {
  resolver: {
    legit: Array<{ address: string }>;
    fromHosts: Array<{ address: string }>;
    codes: string[];
    events: string[];
  };
  gateway: {
    echoed: string;
    order: string[];
    answers: Answer[];
    refusal: { code?: string; message?: string };
    refused: Record<string, number>;
  };
  queries: { answering: number; silent: number; hostsOnlyAsked: boolean };
}

describe.skipIf(!canUnshare)(
  'DNS deadline and per-peer lookup cap (never-answering DNS server)',
  () => {
    const t = tempDir('ee-dns-');
    afterAll(() => t.cleanup());

    it('one peer with 40 pending never-answering names does not delay another peer; the slow ones hit the deadline', () => {
      const answering = '127.84.1.2';
      const silent = '127.84.1.3';
      writeFileSync(join(t.dir, 'resolv.conf'), `nameserver ${answering}\nnameserver ${silent}\n`);
      writeFileSync(join(t.dir, 'hosts'), '127.0.0.1 localhost\n127.0.0.9 hosts-only.test\n');
      const r = spawnSync(
        'unshare',
        [
          '--net',
          '--mount',
          '--propagation',
          'private',
          'sh',
          '-c',
          `ip link set lo up && mount --bind ${t.dir}/resolv.conf /etc/resolv.conf && ` +
            `mount --bind ${t.dir}/hosts /etc/hosts && exec "$0" "$@"`,
          process.execPath,
          child,
          answering,
          silent,
          join(t.dir, 'vsock'),
        ],
        { encoding: 'utf8', timeout: 60_000 },
      );
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as ChildResult;

      // 1. the resolver: 40 waiting for vm(16); its 41st refused at once; vm(17)'s name and the
      //    /etc/hosts name answer while all 40 still wait; then all 40 fail with the deadline code
      const ev = out.resolver.events;
      expect(ev.slice(0, 3)).toEqual(['over:ERR_PROXY_DNS_LIMIT', 'legit', 'hosts']);
      expect(ev.slice(3)).toEqual(Array(40).fill('slow:ERR_PROXY_DNS_TIMEOUT'));
      expect(out.resolver.legit.map((a) => a.address)).toEqual(['127.0.0.1']);
      expect(out.resolver.fromHosts.map((a) => a.address)).toEqual(['127.0.0.9']);
      expect(out.queries.hostsOnlyAsked).toBe(false); // /etc/hosts answered, no DNS query
      expect(out.queries.silent).toBeGreaterThan(0); // the slow names really reached both servers

      // 2. through the parent's gateway over the vsock emulation: CID 16 sends 40 slow names,
      //    8 (the default cap) wait, 32 are refused at once; CID 17's CONNECT legit.test through
      //    the enclave half is served before any of the 8 reaches its deadline
      const g = out.gateway;
      expect(g.echoed).toBe('ping');
      const legitAt = g.order.indexOf('legit');
      expect(g.order.slice(0, legitAt)).toEqual(Array(32).fill('slow:ERR_PROXY_DNS_LIMIT'));
      expect(g.order.slice(legitAt + 1, legitAt + 9)).toEqual(
        Array(8).fill('slow:ERR_PROXY_DNS_TIMEOUT'),
      );
      const codes = g.answers.map((a) => a.code).sort();
      expect(codes).toEqual([
        ...Array(32).fill('ERR_PROXY_DNS_LIMIT'),
        ...Array(8).fill('ERR_PROXY_DNS_TIMEOUT'),
      ]);
      for (const a of g.answers) {
        expect(a.ok).toBe(false);
        expect(a.reason).not.toMatch(/\d+\.\d+\.\d+\.\d+/); // a refusal carries no resolved address
      }
      // the enclave app sees 504 with the stable code
      expect(g.refusal.code).toBe('ERR_PROXY_DNS_TIMEOUT');
      expect(g.refusal.message).toMatch(/HTTP 504/);
      expect(g.refused).toEqual({ dns_limit: 32, dns_timeout: 9 });
    });
  },
);
