#!/usr/bin/env node
// Volume benchmark, inside vsock-vm only (pnpm bench): sequential write and read MB/s of one file
// (written with fsync at the end, read after dropping the page cache) on
//   direct     NFS mount of the VM's kernel nfsd on 127.0.0.1 (no proxy: the upper bound)
//   ours       NFS through ee's two proxies (an enclave-side and a parent-side route process) over vsock
//   socat      NFS through two socat processes over vsock (the seed's setup)
//   encrypted  the encrypted volume (ext4 image on the NFS share, loop, fscrypt) through ours
//   luks2      the encrypted volume with kind luks2 (LUKS2 container on the share, loop,
//              dm-crypt aes-xts-plain64 with 4 KiB sectors, ext4 inside) through ours
// Ratios printed are from this run only: ours/socat (target >= 1.0), encrypted/ours and
// luks2/ours (>= 0.7). The data keys are local (the KMS round trip is a one-time start-up cost).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { mountVolume, volumeSchema, waitForNfsServer } from '../dist/index.js';

if (process.env.VSOCK_VM !== '1') {
  console.log('volumes bench SKIPPED: runs inside vsock-vm (pnpm bench)');
  process.exit(0);
}
const scale = Number(process.env.BENCH_VM_SCALE ?? '1');
const MiB = Math.max(16, Math.round(256 * scale));
const EXPORT = '/srv/ee-bench';
const children = [];

function sh(script) {
  execFileSync('bash', ['-ec', script], { stdio: 'inherit' });
}

function proc(cmd, args) {
  const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(c);
  return c;
}

/** seconds of one dd run (blocking: no proxy runs in this process) */
function dd(args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('dd', [...args, 'status=none'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`dd ${args.join(' ')} failed`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function measure(dir) {
  const file = `${dir}/bench.bin`;
  const w = dd(['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${MiB}`, 'conv=fsync']);
  sh('sync; echo 3 > /proc/sys/vm/drop_caches');
  const r = dd([`if=${file}`, 'of=/dev/null', 'bs=1M']);
  sh(`rm -f ${file}; sync`);
  return { write: MiB / w, read: MiB / r };
}

function mountNfs(host, port, dir) {
  mkdirSync(dir, { recursive: true });
  sh(
    `mount -i -t nfs4 -o vers=4.2,proto=tcp,port=${port},hard,timeo=600,retrans=2,addr=${host},clientaddr=127.0.0.1 ${host}:/ ${dir}`,
  );
}

const route = (listen, dial) =>
  proc(process.execPath, [
    '--input-type=module',
    '-e',
    `import { createRoute } from '@enclave-extras/proxy'; const r = createRoute({ name: 'r', listen: ${JSON.stringify(listen)}, dial: ${JSON.stringify(dial)} }); await r.start();`,
  ]);

try {
  sh(`mkdir -p /proc/fs/nfsd ${EXPORT} /var/lib/nfs/v4recovery
      mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd
      mount -t tmpfs -o size=${MiB * 2 + 160}m tmpfs ${EXPORT}
      echo 10 > /proc/fs/nfsd/nfsv4leasetime; echo 10 > /proc/fs/nfsd/nfsv4gracetime
      echo "${EXPORT} 127.0.0.1(rw,sync,insecure,no_root_squash,no_subtree_check,fsid=0)" > /etc/exports
      exportfs -ra; rpc.mountd -N 3 --no-udp; rpc.nfsd -N 3 --no-udp 8`);
  // ours: one process per side, like ee-parent and ee-enclave
  route('vsock:any:23049', 'tcp:127.0.0.1:2049');
  route('tcp:127.0.0.2:12049', 'vsock:1:23049');
  // socat: the same two hops
  proc('socat', ['VSOCK-LISTEN:23050,fork,reuseaddr', 'TCP:127.0.0.1:2049']);
  proc('socat', ['TCP-LISTEN:12050,bind=127.0.0.3,fork,reuseaddr', 'VSOCK-CONNECT:1:23050']);
  for (const [h, p] of [
    ['127.0.0.1', 2049],
    ['127.0.0.2', 12049],
    ['127.0.0.3', 12050],
  ])
    await waitForNfsServer({ host: h, port: p, readyTimeoutMs: 30_000 });
  // the grace period of a fresh nfsd delays the first OPEN: get past it before timing
  mountNfs('127.0.0.1', 2049, '/mnt/b-direct');
  sh('touch /mnt/b-direct/warm && rm /mnt/b-direct/warm');
  const rows = {};
  rows.direct = measure('/mnt/b-direct');
  sh('umount /mnt/b-direct');
  mountNfs('127.0.0.2', 12049, '/mnt/b-ours');
  rows.ours = measure('/mnt/b-ours');
  sh('umount /mnt/b-ours');
  mountNfs('127.0.0.3', 12050, '/mnt/b-socat');
  rows.socat = measure('/mnt/b-socat');
  sh('umount /mnt/b-socat');
  const key = randomBytes(64);
  const localKey = () => ({
    generate: async () => ({ plaintext: Buffer.from(key), ciphertext: Buffer.from('local') }),
    decrypt: async () => Buffer.from(key),
  });
  for (const [row, kind] of [
    ['encrypted', 'fscrypt'],
    ['luks2', 'luks2'],
  ]) {
    const v = volumeSchema.parse({
      name: `bench-${kind}`,
      mountPoint: `/mnt/b-${kind}`,
      createMountPoint: true,
      server: { host: '127.0.0.2', port: 12049 },
      encryption: { kind, size: `${MiB + 128}MiB`, keyId: 'local', image: `${kind}.img` },
    });
    const vol = await mountVolume(v, { stateDir: '/run/ee-bench', dataKeys: localKey });
    if (vol.encryption !== kind) throw new Error(`${row}: opened as ${vol.encryption}`);
    // dd blocks this process: fine, the proxies run in their own processes
    rows[row] = measure(v.mountPoint);
    await vol.unmount();
    // the parent's side: free the tmpfs for the next image
    rmSync(`${EXPORT}/${kind}.img`);
    rmSync(`${EXPORT}/${kind}.img.key`);
  }
  const f = (n) => n.toFixed(1).padStart(8);
  console.log(
    `\nvolume bench (vsock-vm, ${MiB} MiB file, fsync on write, caches dropped before read; MB/s)`,
  );
  console.log('path         write     read');
  for (const [k, r] of Object.entries(rows))
    console.log(`${k.padEnd(10)} ${f(r.write)} ${f(r.read)}`);
  const ratio = (a, b) => (a / b).toFixed(2);
  console.log(
    `ours/socat        write ${ratio(rows.ours.write, rows.socat.write)}x  read ${ratio(rows.ours.read, rows.socat.read)}x  (target >= 1.0)`,
  );
  console.log(
    `encrypted/ours    write ${ratio(rows.encrypted.write, rows.ours.write)}x  read ${ratio(rows.encrypted.read, rows.ours.read)}x  (target >= 0.7)`,
  );
  console.log(
    `luks2/ours        write ${ratio(rows.luks2.write, rows.ours.write)}x  read ${ratio(rows.luks2.read, rows.ours.read)}x  (target >= 0.7)`,
  );
  console.log(
    `ours/direct       write ${ratio(rows.ours.write, rows.direct.write)}x  read ${ratio(rows.ours.read, rows.direct.read)}x`,
  );
} finally {
  for (const c of children) c.kill('SIGKILL');
  await sleep(100);
}
process.exit(0);
