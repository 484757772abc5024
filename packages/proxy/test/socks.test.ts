import type net from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createEgressGateway, createEgressGatewayServer } from '../src/index.js';
import { connect, echo, memoryLogger, tcpServer, tempDir } from './helpers.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Reads exactly n bytes. */
function readN(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= n) {
        s.removeListener('data', onData);
        resolve(buf);
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.once('end', () => resolve(buf));
  });
}

async function gateway(policy: { allow: string[]; deny?: string[] }) {
  const t = tempDir();
  cleanups.push(() => t.cleanup());
  const log = memoryLogger();
  const parent = createEgressGatewayServer({ listen: `unix:${join(t.dir, 'p.sock')}`, policy });
  await parent.start();
  cleanups.push(() => parent.close({ drain: false }));
  const gw = createEgressGateway({
    listen: 'tcp:127.0.0.1:0',
    parent: parent.endpoint,
    logger: log,
  });
  await gw.start();
  cleanups.push(() => gw.close({ drain: false }));
  return { port: (gw.endpoint as { port: number }).port, log };
}

function socksRequest(atyp: number, addr: Buffer, port: number): Buffer {
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  return Buffer.concat([Buffer.from([0x05, 0x01, 0x00, atyp]), addr, p]);
}

describe('SOCKS5 wire format', () => {
  it('connects to an IPv6 address (ATYP 4) and carries bytes after the reply', async () => {
    const up = await tcpServer(echo, '::1');
    cleanups.push(() => up.close());
    const { port } = await gateway({ allow: [`[::1]:${up.port}`] });
    const c = await connect(port);
    c.write(Buffer.from([0x05, 0x02, 0x02, 0x00])); // offers user/pass and no-auth
    expect([...(await readN(c, 2))]).toEqual([0x05, 0x00]);
    const v6 = Buffer.alloc(16);
    v6[15] = 1;
    c.write(socksRequest(0x04, v6, up.port));
    const reply = await readN(c, 10);
    expect(reply[1]).toBe(0x00);
    c.write('ping6');
    expect((await readN(c, 5)).toString()).toBe('ping6');
    c.destroy();
  });

  it('answers 0x02 for a denied domain (ATYP 3), 0x07 for BIND, 0xff without no-auth', async () => {
    const { port, log } = await gateway({ allow: ['allowed.invalid:443'] });
    const c = await connect(port);
    c.write(Buffer.from([0x05, 0x01, 0x00]));
    await readN(c, 2);
    const name = Buffer.from('EVIL.example.');
    c.write(socksRequest(0x03, Buffer.concat([Buffer.from([name.length]), name]), 443));
    const r = await readN(c, 10);
    expect(r[1]).toBe(0x02);
    const line = log.lines.find((l) => l.msg === 'connection refused by policy');
    expect(String(line?.obj.err)).toContain('no allow rule matches evil.example port 443');

    const b = await connect(port);
    b.write(Buffer.from([0x05, 0x01, 0x00]));
    await readN(b, 2);
    b.write(
      Buffer.concat([Buffer.from([0x05, 0x02, 0x00, 0x01, 127, 0, 0, 1]), Buffer.from([0, 80])]),
    );
    expect((await readN(b, 10))[1]).toBe(0x07);

    const a = await connect(port);
    a.write(Buffer.from([0x05, 0x01, 0x02]));
    expect([...(await readN(a, 2))]).toEqual([0x05, 0xff]);
  });
});
