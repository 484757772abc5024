// An app that knows nothing of proxies: raw net.connect to three remote addresses, speaking a
// line protocol and a Postgres startup handshake. It also records the nat rules it runs under.
// Writes its findings as JSON to argv[2].
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';

function talk(host, port, send, until) {
  return new Promise((resolve) => {
    const chunks = [];
    const s = net.connect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ error: 'timeout', data: Buffer.concat(chunks).toString('latin1') });
    }, 10_000);
    s.on('connect', () => s.write(send));
    s.on('data', (d) => {
      chunks.push(d);
      if (until(Buffer.concat(chunks))) {
        clearTimeout(timer);
        s.end();
        resolve({ data: Buffer.concat(chunks).toString('latin1') });
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      resolve({ error: e.code ?? e.message, data: Buffer.concat(chunks).toString('latin1') });
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ closed: true, data: Buffer.concat(chunks).toString('latin1') });
    });
  });
}

function startup(user) {
  const body = Buffer.from(`user\0${user}\0database\0app\0\0`);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(196608, 4);
  return Buffer.concat([head, body]);
}

const out = {};
out.nat = execFileSync('iptables-legacy', ['-w', '-t', 'nat', '-S'], { encoding: 'utf8' });
out.env = { HTTPS_PROXY: process.env.HTTPS_PROXY ?? null };
out.line = await talk('10.77.0.5', 7000, 'HELLO app\nping\n', (b) => /ping\n$/.test(b.toString()));
out.pg = await talk('10.77.0.6', 5432, startup('alice'), (b) =>
  b.includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x49])),
);
out.denied = await talk('10.77.0.7', 7000, 'HELLO app\n', () => false);
writeFileSync(process.argv[2], JSON.stringify(out));
