// The "parent instance" of the transparent-egress test, in its own network namespace (unshare
// -rn): lo up with the test addresses, the upstream servers, and the parent gateway server
// (vsock emulation over $ENCLAVE_EXTRAS_VSOCK_DIR, Unix sockets that cross namespaces) with the
// policy. Prints {"ready":true} once listening; on stdin EOF prints its counters and exits.
//
// Upstreams (non-HTTP):
//   10.77.0.5:7000  a line protocol: "HELLO <who>\n" -> "WELCOME <who> via <peer>\n", then echo
//   10.77.0.6:5432  a Postgres-style startup: StartupMessage -> AuthenticationOk + ReadyForQuery
//   10.77.0.7:7000  denied by the policy: must never see a connection
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { createEgressGatewayServer } from '@enclave-extras/proxy';

execFileSync('ip', ['link', 'set', 'lo', 'up']);
for (const a of ['10.77.0.5', '10.77.0.6', '10.77.0.7']) {
  execFileSync('ip', ['addr', 'add', `${a}/32`, 'dev', 'lo']);
}
const counts = { line: 0, pg: 0, denied: 0 };

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

const gateway = createEgressGatewayServer({
  listen: 'vsock:any:8080',
  policy: { allow: ['10.77.0.5:7000', '10.77.0.6:5432', 'allowed.test:7000'] },
});
await gateway.start();
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
process.stdin.resume();
process.stdin.on('end', async () => {
  await gateway.close({ drain: false });
  process.stdout.write(`${JSON.stringify({ counts })}\n`);
  process.exit(0);
});
