// The "parent instance" of the transparent-egress test, in its own network namespace (unshare
// -rn): lo up with the test addresses, the upstream servers, and the parent gateway server
// (vsock emulation over $ENCLAVE_EXTRAS_VSOCK_DIR, Unix sockets that cross namespaces) with the
// policy. Prints {"ready":true} once listening; on stdin EOF prints its counters and exits.
//
// Run it in its own mount namespace too, with /etc/resolv.conf bind-mounted to a file naming
// 10.77.0.53 (the fake upstream DNS server below) and a minimal /etc/hosts.
//
// Upstreams (non-HTTP):
//   10.77.0.5:7000  a line protocol: "HELLO <who>\n" -> "WELCOME <who> via <peer>\n", then echo
//   10.77.0.6:5432  a Postgres-style startup: StartupMessage -> AuthenticationOk + ReadyForQuery
//   10.77.0.7:7000  denied by the policy: must never see a connection
//   10.77.0.8:7000  the line protocol again, allowed only by NAME (named.test:7000), not by IP
//   10.77.0.53:53   the fake upstream DNS (UDP): named.test A 10.77.0.8 TTL 30, short.test
//                   A 10.77.0.8 TTL 1, every other name NXDOMAIN; counts questions per name
// and the parent DNS service on vsock:any:8053 under the same policy, whose resolver counts the
// names that reach it.
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { createDnsService, createEgressGatewayServer, createResolver } from '@enclave-extras/proxy';

execFileSync('ip', ['link', 'set', 'lo', 'up']);
for (const a of ['10.77.0.5', '10.77.0.6', '10.77.0.7', '10.77.0.8', '10.77.0.53']) {
  execFileSync('ip', ['addr', 'add', `${a}/32`, 'dev', 'lo']);
}
const counts = { line: 0, pg: 0, denied: 0, named: 0 };
const upstreamAsked = {};
const resolverAsked = {};

// ---- fake upstream DNS --------------------------------------------------------------------
const zone = { 'named.test': 30, 'short.test': 1 };
const upstream = dgram.createSocket('udp4');
upstream.on('message', (m, rinfo) => {
  const labels = [];
  let i = 12;
  while (m[i] !== 0) {
    labels.push(m.subarray(i + 1, i + 1 + m[i]).toString('latin1'));
    i += m[i] + 1;
  }
  const name = labels.join('.').toLowerCase();
  const type = m.readUInt16BE(i + 1);
  const key = `${name}/${type === 1 ? 'A' : type === 28 ? 'AAAA' : type}`;
  upstreamAsked[key] = (upstreamAsked[key] ?? 0) + 1;
  const ttl = zone[name];
  const head = Buffer.alloc(12);
  head.writeUInt16BE(m.readUInt16BE(0), 0);
  head.writeUInt16BE(ttl === undefined ? 0x8183 : 0x8180, 2); // NXDOMAIN or NOERROR
  head.writeUInt16BE(1, 4);
  const a = ttl !== undefined && type === 1;
  head.writeUInt16BE(a ? 1 : 0, 6);
  const question = m.subarray(12, i + 5);
  const rr = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 77, 0, 8]);
  if (a) rr.writeUInt32BE(ttl, 6);
  upstream.send(
    Buffer.concat([head, question, a ? rr : Buffer.alloc(0)]),
    rinfo.port,
    rinfo.address,
  );
});
await new Promise((resolve) => upstream.bind(53, '10.77.0.53', resolve));

function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
}

const line = net.createServer((s) => {
  counts.line++;
  let buf = '';
  let greeted = false;
  s.on('data', (d) => {
    if (greeted) {
      s.write(d);
      return;
    }
    buf += d;
    const i = buf.indexOf('\n');
    if (i < 0) return;
    const m = /^HELLO (\S+)$/.exec(buf.slice(0, i));
    if (!m) return s.end('ERR\n');
    greeted = true;
    s.write(`WELCOME ${m[1]} via ${s.localAddress}:${s.localPort}\n`);
    if (buf.length > i + 1) s.write(buf.slice(i + 1));
  });
  s.on('end', () => s.end());
  s.on('error', () => {});
});
await listen(line, 7000, '10.77.0.5');

const pg = net.createServer((s) => {
  counts.pg++;
  let buf = Buffer.alloc(0);
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (buf.length < 8) return;
    const len = buf.readInt32BE(0);
    if (buf.length < len) return;
    const proto = buf.readInt32BE(4);
    const params = buf
      .subarray(8, len - 1)
      .toString('utf8')
      .split('\0');
    const user = params[params.indexOf('user') + 1];
    if (proto !== 196608 || !user) {
      s.destroy();
      return;
    }
    const auth = Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0]); // 'R' AuthenticationOk
    const status = Buffer.from(`server_version\0fake-16-for-${user}\0`);
    const ps = Buffer.alloc(5);
    ps.write('S', 0);
    ps.writeInt32BE(4 + status.length, 1);
    const ready = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]); // 'Z' ReadyForQuery, idle
    s.end(Buffer.concat([auth, ps, status, ready]));
  });
  s.on('error', () => {});
});
await listen(pg, 5432, '10.77.0.6');

const denied = net.createServer((s) => {
  counts.denied++;
  s.end('SHOULD-NOT-BE-REACHED\n');
});
await listen(denied, 7000, '10.77.0.7');

const named = net.createServer((s) => {
  counts.named++;
  s.once('data', (d) =>
    s.end(`WELCOME ${String(d).trim().split(' ')[1]} via named ${s.localAddress}\n`),
  );
  s.on('error', () => {});
});
await listen(named, 7000, '10.77.0.8');

const policy = {
  allow: [
    '10.77.0.5:7000',
    '10.77.0.6:5432',
    'named.test:7000',
    'short.test:7000',
    'missing.test:7000',
  ],
};
const gateway = createEgressGatewayServer({ listen: 'vsock:any:8080', policy });
await gateway.start();
const inner = createResolver();
const dnsService = createDnsService({
  listen: 'vsock:any:8053',
  policy,
  resolver: {
    resolve(host, o) {
      resolverAsked[host] = (resolverAsked[host] ?? 0) + 1;
      return inner.resolve(host, o);
    },
    remainingTtlMs: (host) => inner.remainingTtlMs(host),
  },
});
await dnsService.start();
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
process.stdin.resume();
process.stdin.on('end', async () => {
  await gateway.close({ drain: false });
  await dnsService.close();
  process.stdout.write(
    `${JSON.stringify({ counts, upstreamAsked, resolverAsked, dns: dnsService.stats() })}\n`,
  );
  process.exit(0);
});
