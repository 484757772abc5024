// DNS starvation, measured: one peer asks for 40 names whose DNS server never answers, then
// another peer asks for a name that answers. Prints how long that name took with the old lookup
// (getaddrinfo on libuv's 4-thread pool) and with the default one (/etc/hosts + c-ares).
// Needs root and unshare(1): it re-runs itself in a private network + mount namespace whose
// /etc/resolv.conf (bind-mounted) points at its own servers; this machine's files are untouched.
//   node bench/dns-starvation.mjs        (after pnpm --filter @enclave-extras/proxy build)
import { spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const self = fileURLToPath(import.meta.url);
if (process.env.EE_DNS_BENCH_NS !== '1') {
  const dir = mkdtempSync(join(tmpdir(), 'ee-dns-bench-'));
  // one nameserver, 1 s per try, 1 try: keeps the getaddrinfo run to ~10 s
  writeFileSync(join(dir, 'resolv.conf'), 'nameserver 127.84.9.2\noptions timeout:1 attempts:1\n');
  writeFileSync(join(dir, 'hosts'), '127.0.0.1 localhost\n');
  const r = spawnSync(
    'unshare',
    [
      '--net',
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      `ip link set lo up && mount --bind ${dir}/resolv.conf /etc/resolv.conf && mount --bind ${dir}/hosts /etc/hosts && exec ${process.execPath} ${self}`,
    ],
    { stdio: 'inherit', env: { ...process.env, EE_DNS_BENCH_NS: '1' }, timeout: 120_000 },
  );
  rmSync(dir, { recursive: true, force: true });
  process.exit(r.status ?? 1);
}

const { createResolver, getaddrinfoLookup, systemLookup } = await import('../dist/index.js');
const s = dgram.createSocket('udp4');
s.on('message', (m, rinfo) => {
  let i = 12;
  const labels = [];
  while (m[i]) {
    labels.push(m.subarray(i + 1, i + 1 + m[i]).toString('latin1'));
    i += m[i] + 1;
  }
  if (labels.join('.') !== 'legit.test') return; // never answered
  const a = m.readUInt16BE(i + 1) === 1;
  const head = Buffer.from([0, 0, 0x81, 0x80, 0, 1, 0, a ? 1 : 0, 0, 0, 0, 0]);
  head.writeUInt16BE(m.readUInt16BE(0), 0);
  const answer = a
    ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1])
    : Buffer.alloc(0);
  s.send(Buffer.concat([head, m.subarray(12, i + 5), answer]), rinfo.port, rinfo.address);
});
await new Promise((r) => s.bind(53, '127.84.9.2', r));

async function run(name, lookup) {
  const resolver = createResolver({ lookup, timeoutMs: 30_000, maxLookupsPerPeer: 0 });
  const slow = Array.from({ length: 40 }, (_, i) =>
    resolver.resolve(`n${i}.never.test`, { peer: 'vm(16)' }).catch(() => {}),
  );
  const t0 = performance.now();
  await resolver.resolve('legit.test', { peer: 'vm(17)' });
  const ms = performance.now() - t0;
  await Promise.all(slow);
  console.log(`${name.padEnd(34)} legit.test answered after ${ms.toFixed(1)} ms`);
  return ms;
}
const base = await run('getaddrinfo (thread pool, old)', getaddrinfoLookup);
const ours = await run('hosts file + c-ares (default, new)', systemLookup);
console.log(`ratio old/new: ${(base / ours).toFixed(0)}x`);
s.close();
