// Runs inside a private network + mount namespace (see dns-starvation.test.ts): lo is up, and
// /etc/resolv.conf and /etc/hosts are bind-mounted test files. Prints one JSON result line.
//
// DNS servers (real UDP sockets on lo):
//   ANSWERING (first nameserver): answers legit.test A 127.0.0.1, empty AAAA; reads and drops
//     every other question (so those fall through to the second server after its timeout).
//   SILENT (second nameserver): reads and never answers.
import dgram from 'node:dgram';
import net from 'node:net';
import { connect, createEmulatedTransport } from '@enclave-extras/vsock';
import {
  createEgressGateway,
  createEgressGatewayServer,
  createResolver,
  httpConnectDialer,
} from '../../dist/index.js';

const [answeringIp, silentIp, vsockDir] = process.argv.slice(2);
const DEADLINE = 2000;
const queries = { answering: [], silent: [] };

function qname(msg) {
  const labels = [];
  let i = 12;
  while (i < msg.length && msg[i] !== 0) {
    labels.push(msg.subarray(i + 1, i + 1 + msg[i]).toString('latin1'));
    i += msg[i] + 1;
  }
  return { name: labels.join('.').toLowerCase(), end: i + 1 + 4, type: msg.readUInt16BE(i + 1) };
}

async function udp(ip, onMessage) {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, rinfo) => onMessage(s, m, rinfo));
  await new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(53, ip, resolve);
  });
  return s;
}

const answering = await udp(answeringIp, (s, m, rinfo) => {
  const q = qname(m);
  queries.answering.push(q.name);
  if (q.name !== 'legit.test') return; // drop: never answered here
  const a = q.type === 1;
  const head = Buffer.alloc(12);
  head.writeUInt16BE(m.readUInt16BE(0), 0);
  head.writeUInt16BE(0x8180, 2); // response, recursion desired + available, NOERROR
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(a ? 1 : 0, 6);
  const question = m.subarray(12, q.end);
  const answer = a
    ? Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1])
    : Buffer.alloc(0);
  s.send(Buffer.concat([head, question, answer]), rinfo.port, rinfo.address);
});
const silent = await udp(silentIp, (_s, m) => {
  queries.silent.push(qname(m).name);
});

const result = {};
const events = [];

// ---- 1. the resolver: one peer with 40 never-answering names, another peer's name -----------
{
  const resolver = createResolver({ timeoutMs: DEADLINE, maxLookupsPerPeer: 40 });
  const slow = Array.from({ length: 40 }, (_, i) =>
    resolver.resolve(`n${i}.never.test`, { peer: 'vm(16)' }).then(
      () => events.push('slow-ok'),
      (e) => {
        events.push(`slow:${e.code}`);
        return e.code;
      },
    ),
  );
  // the 41st for the same peer is refused at once, while the 40 are still waiting
  const over = await resolver.resolve('n40.never.test', { peer: 'vm(16)' }).then(
    () => 'resolved',
    (e) => e.code,
  );
  events.push(`over:${over}`);
  const legit = await resolver.resolve('legit.test', { peer: 'vm(17)' });
  events.push('legit');
  const fromHosts = await resolver.resolve('hosts-only.test', { peer: 'vm(17)' });
  events.push('hosts');
  const codes = await Promise.all(slow);
  result.resolver = { legit, fromHosts, codes, events: [...events] };
}

// ---- 2. end to end: the parent's gateway over the vsock emulation, two enclave CIDs ------------
{
  const echo = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise((r) => echo.listen({ host: '127.0.0.1', port: 0 }, r));
  const port = echo.address().port;
  const parentVsock = { transport: createEmulatedTransport({ dir: vsockDir, localCid: 3 }) };
  const server = createEgressGatewayServer({
    listen: 'vsock:any:8001',
    policy: { allow: [`*:${port}`] },
    dns: { timeoutMs: DEADLINE }, // default per-peer cap (8)
    vsock: parentVsock,
  });
  await server.start();
  const order = [];
  // CID 16 speaks the gateway protocol directly, as a hostile enclave would: 40 slow names
  const t16 = createEmulatedTransport({ dir: vsockDir, localCid: 16 });
  const raw = Array.from(
    { length: 40 },
    (_, i) =>
      new Promise((resolve) => {
        const c = connect({ cid: 3, port: 8001, transport: t16, allowHalfOpen: true });
        let data = '';
        c.on('data', (d) => {
          data += d;
        });
        c.on('error', () => {});
        c.once('end', () => {
          c.destroy();
          const answer = JSON.parse(data.split('\n')[0] || '{}');
          order.push(`slow:${answer.code}`);
          resolve(answer);
        });
        c.write(`${JSON.stringify({ v: 1, host: `g${i}.never.test`, port })}\n`);
      }),
  );
  // wait until the 32 over the cap were refused and the 8 admitted lookups reached the DNS servers
  const admitted = () => new Set(queries.answering.filter((q) => q.startsWith('g'))).size;
  for (let i = 0; i < 500 && (order.length < 32 || admitted() < 8); i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  // CID 17 runs the real enclave half: HTTP CONNECT to legit.test through it
  const t17 = { transport: createEmulatedTransport({ dir: vsockDir, localCid: 17 }) };
  const enclave = createEgressGateway({
    listen: 'tcp:127.0.0.1:0',
    parent: 'vsock:3:8001',
    vsock: t17,
  });
  await enclave.start();
  const proxy = `http://127.0.0.1:${enclave.endpoint.port}`;
  const dial = httpConnectDialer(proxy);
  const sock = await dial({ host: 'legit.test', port });
  const echoed = await new Promise((resolve) => {
    sock.once('data', (d) => resolve(String(d)));
    sock.write('ping');
  });
  sock.destroy();
  order.push('legit');
  // a slow name through the enclave half: the refusal the app sees
  const refusal = await dial({ host: 'e.never.test', port }).then(
    () => ({ ok: true }),
    (e) => ({ code: e.code, message: e.message }),
  );
  order.push('enclave-refusal');
  const answers = await Promise.all(raw);
  result.gateway = {
    echoed,
    order,
    answers,
    refusal,
    refused: server.metrics.snapshot().refused,
  };
  await enclave.close({ drain: false });
  await server.close({ drain: false });
  echo.close();
}

result.queries = {
  answering: queries.answering.length,
  silent: queries.silent.length,
  hostsOnlyAsked: [...queries.answering, ...queries.silent].includes('hosts-only.test'),
};
answering.close();
silent.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
