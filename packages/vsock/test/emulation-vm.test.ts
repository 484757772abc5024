// The emulation's path into a VM bridged into the folder (a vhost-user-vsock backend's
// vm_<cid>.sock): `CONNECT <port>\n` out, `OK <hostport>\n` back before 'connect'. The server
// here is a second implementation of that wire format over a plain net.Server.
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, createEmulatedTransport, emulatedVmSocketPath } from '../src/index.js';
import { closeServer, listen, readAll, waitError } from './helpers.js';

let dir: string;
let host: ReturnType<typeof createEmulatedTransport>;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'eevm-'));
  host = createEmulatedTransport({ dir, localCid: 2 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Answer = (port: number, s: net.Socket) => void;

/** A per-VM socket for `cid` that answers each request line with `answer`. */
async function vmSocket(
  cid: number,
  answer: Answer,
): Promise<{ server: net.Server; lines: string[] }> {
  const lines: string[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      s.off('data', onData);
      const line = buf.slice(0, nl);
      lines.push(line);
      const rest = buf.slice(nl + 1);
      s.pause();
      if (rest) s.unshift(Buffer.from(rest, 'latin1'));
      answer(Number(/^CONNECT (\d+)$/.exec(line)?.[1] ?? -1), s);
    };
    s.on('data', onData);
  });
  server.listen(emulatedVmSocketPath(dir, cid));
  await once(server, 'listening');
  return { server, lines };
}
const close = (s: net.Server) => new Promise<void>((ok) => s.close(() => ok()));

describe('emulated connect into a bridged VM (vm_<cid>.sock)', () => {
  it('sends CONNECT <port>, hides the OK line, takes the host port from it, then streams', async () => {
    expect(emulatedVmSocketPath('/d', 16)).toBe('/d/vm_16.sock');
    const { server, lines } = await vmSocket(16, (_port, s) => {
      // OK and the first data in one write: the data must reach the client as data
      s.write('OK 1073741825\nwelcome:');
      s.resume();
      s.pipe(s);
    });
    const c = connect({ cid: 16, port: 5000, transport: host, allowHalfOpen: true });
    c.write('queued before OK;'); // written while connecting: must arrive after the handshake
    await once(c, 'connect');
    expect(lines).toEqual(['CONNECT 5000']);
    expect(c.remoteVsockAddress).toBe('vm(16):5000');
    expect(c.localCid).toBe(2);
    expect(c.localPort).toBe(1073741825);
    c.end('after');
    expect((await readAll(c)).toString()).toBe('welcome:queued before OK;after');
    await close(server);
  });

  it('a close before OK is ECONNREFUSED (the guest refused), naming the address', async () => {
    const { server } = await vmSocket(17, (_port, s) => s.destroy());
    const err = await waitError(connect({ cid: 17, port: 81, transport: host }));
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.message).toContain('vm(17):81');
    await close(server);
  });

  it('an answer other than OK is EPROTO', async () => {
    const { server } = await vmSocket(18, (_port, s) => s.end('NO thanks\n'));
    const err = await waitError(connect({ cid: 18, port: 82, transport: host }));
    expect(err.code).toBe('EPROTO');
    await close(server);
  });

  it('connectTimeout applies while waiting for OK', async () => {
    const held: net.Socket[] = [];
    const { server } = await vmSocket(19, (_port, s) => held.push(s));
    const err = await waitError(
      connect({ cid: 19, port: 83, transport: host, connectTimeout: 200 }),
    );
    expect(err.code).toBe('ETIMEDOUT');
    for (const s of held) s.destroy();
    await close(server);
  });

  it('an exact <cid>_<port>.sock listener wins over the VM socket; other CIDs never reach the VM', async () => {
    const { server, lines } = await vmSocket(20, (_port, s) => s.destroy());
    const exact = await listen(
      createEmulatedTransport({ dir, localCid: 20 }),
      7000,
      (s) => s.end('exact'),
      {
        cid: 20,
      },
    );
    const c = connect({ cid: 20, port: 7000, transport: host });
    expect((await readAll(c)).toString()).toBe('exact');
    const any = await listen(host, 7001, (s) => s.end('any'));
    expect((await readAll(connect({ cid: 21, port: 7001, transport: host }))).toString()).toBe(
      'any',
    );
    expect(lines).toEqual([]);
    await closeServer(exact);
    await closeServer(any);
    await close(server);
  });

  it('a stale VM socket file (no backend) is ECONNREFUSED, and no fd is left behind', async () => {
    const path = emulatedVmSocketPath(dir, 22);
    // a socket file left behind, as by a crashed backend (bound, never listening, process gone)
    execFileSync('python3', [
      '-c',
      'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])',
      path,
    ]);
    const before = readdirSync('/proc/self/fd').length;
    const err = await waitError(connect({ cid: 22, port: 1, transport: host }));
    expect(err.code).toBe('ECONNREFUSED');
    await new Promise((r) => setTimeout(r, 50));
    expect(readdirSync('/proc/self/fd').length).toBeLessThanOrEqual(before);
  });
});
