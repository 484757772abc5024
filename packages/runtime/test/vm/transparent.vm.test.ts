// Runs inside ../shared/tools/vsock-vm only (pnpm test:vm, with VSOCK_VM_MODULES="iptable_nat
// xt_REDIRECT", the module set the stock enclave kernel has built in): transparent egress and
// DNS over real AF_VSOCK (loopback CID 1). The "parent" is the VM's own network namespace; the
// "enclave" is a fresh one (unshare -nm) holding only lo, so the app can reach 10.77.0.x only
// through the REDIRECT rules and the parent gateway. The same scripts as test/transparent.test.ts.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const inVm = process.env.VSOCK_VM === '1';
const here = dirname(fileURLToPath(import.meta.url));
const ns = join(here, '..', 'ns');
const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

function mounted(dir: string, resolv: string, argv: string[]): string {
  const r = join(dir, `resolv-${Math.random().toString(36).slice(2)}`);
  const h = join(dir, 'hosts0');
  writeFileSync(r, resolv);
  writeFileSync(h, '127.0.0.1 localhost\n');
  return `mount --bind ${q(r)} /etc/resolv.conf && mount --bind ${q(h)} /etc/hosts && exec ${argv.map(q).join(' ')}`;
}

describe.skipIf(!inVm)('transparent egress and DNS on a real kernel (vsock-vm)', () => {
  it('a raw-socket app reaches a name-allowed server through REDIRECT, SO_ORIGINAL_DST and AF_VSOCK; the rules are gone after exit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ee-transparent-vm-'));
    mkdirSync(dir, { recursive: true });
    const env = { ...process.env, ENCLAVE_EXTRAS_VSOCK_DIR: '' };
    const parent = spawn(
      'unshare',
      [
        '-m',
        'sh',
        '-c',
        mounted(dir, 'nameserver 10.77.0.53\n', [process.execPath, join(ns, 'parent.child.mjs')]),
      ],
      { env, stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const lines = createInterface({ input: parent.stdout })[Symbol.asyncIterator]();
    try {
      expect(JSON.parse((await lines.next()).value as string)).toEqual({ ready: true });
      const r = spawnSync(
        'unshare',
        [
          '-nm',
          'sh',
          '-c',
          mounted(dir, 'nameserver 192.0.2.1\n', [
            process.execPath,
            join(ns, 'enclave.child.mjs'),
            dir,
            join(ns, 'dns-app.mjs'),
            'dns',
          ]),
        ],
        {
          env: { ...env, EE_TEST_PARENT_CID: '1', EE_TEST_QUICK: '1' },
          encoding: 'utf8',
          timeout: 90_000,
        },
      );
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as {
        exit: number;
        nat: string;
        app: Record<string, { data?: string; rcode?: number; addresses?: string[] }> & {
          nat?: string;
        };
      };
      expect(out.exit).toBe(0);
      expect(out.app.named?.addresses).toEqual(['10.77.0.8']);
      expect(out.app.connectNamed?.data).toBe('WELCOME dnsapp via named 10.77.0.8\n');
      expect(out.app.udpDenied?.rcode).toBe(5);
      expect(out.nat).not.toMatch(/EE_EGRESS/);
      parent.stdin.end();
      const counts = JSON.parse((await lines.next()).value as string) as {
        resolverAsked: Record<string, number>;
        upstreamAsked: Record<string, number>;
      };
      expect(counts.resolverAsked['denied.test']).toBeUndefined();
      expect(Object.keys(counts.upstreamAsked).some((k) => k.startsWith('denied.test'))).toBe(
        false,
      );
    } finally {
      parent.kill('SIGKILL');
    }
  });
});
