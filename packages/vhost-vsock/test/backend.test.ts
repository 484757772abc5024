// The backend against an in-process vhost-user front-end + guest vsock driver (test/driver.ts)
// over a memfd: handshake, rings, packets, credit flow control, half-close, resets, host dials.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  connect,
  createEmulatedTransport,
  createServer,
  emulatedVmSocketPath,
  type VsockSocket,
} from '@enclave-extras/vsock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createVhostVsockBackend, type VhostVsockBackend, VhostVsockError } from '../src/index.js';
import { type DriverConn, VsockDriver } from './driver.js';
import { type BackendFixture, CID, closeBackend, openBackend, until } from './fixture.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('vhost-vsock backend with an in-process driver', () => {
  let dir: string;
  let backend: VhostVsockBackend;
  let driver: VsockDriver;

  let fixture: BackendFixture;
  beforeEach(async () => {
    fixture = await openBackend('vhv-');
    ({ dir, backend, driver } = fixture);
  });

  // tests may replace the driver or backend (reconnects): close the ones in use now
  afterEach(() => closeBackend({ ...fixture, dir, backend, driver }));

  it('answers GET_CONFIG with the guest CID and listens on the per-VM socket', () => {
    expect(driver.guestCid).toBe(CID);
    expect(existsSync(emulatedVmSocketPath(dir, CID))).toBe(true);
    expect(driver.violations).toEqual([]);
  });

  it('guest -> in-process handler: 1 MiB each way, hash-checked, within credit both ways', async () => {
    let peer: { cid?: number; port?: number } = {};
    await backend.listen(9000, (s) => {
      peer = { cid: s.remoteCid, port: s.remotePort };
      const h = createHash('sha256');
      s.on('data', (d: Buffer) => h.update(d));
      s.on('end', () => s.end(Buffer.from(h.digest('hex'))));
    });
    const c = await driver.connect(3, 9000);
    expect(peer.cid).toBe(CID);
    expect(peer.port).toBe(c.localPort);
    const data = randomBytes(1024 * 1024);
    const ended = new Promise<void>((ok) => c.once('end', () => ok()));
    c.write(data);
    c.end();
    await ended;
    expect(c.data().toString()).toBe(sha(data));
    // the backend never had more in flight than we advertised, and we never more than it did
    expect(driver.violations).toEqual([]);
    expect(c.txCnt).toBe(data.length);
    await until(() => backend.stats.connections === 0, 'the connection to close');
    expect(backend.stats.bytesFromGuest).toBe(data.length);
  });

  it('host -> guest backpressure: with no credit from the guest the backend stops reading the host socket', async () => {
    const big = randomBytes(4 * 1024 * 1024);
    let hostWrote = false;
    await backend.listen(9001, (s) => {
      s.write(big, () => {
        hostWrote = true;
      });
      s.end();
    });
    const c = await driver.connect(3, 9001);
    c.consuming = false; // the guest app reads nothing: no credit comes back
    await until(() => c.rxCnt === driver.bufAlloc, 'the credit to be used up');
    await new Promise((r) => setTimeout(r, 100));
    expect(c.rxCnt).toBe(driver.bufAlloc); // not one byte more than the credit
    expect(hostWrote).toBe(false); // the host writer is held back (its socket is not read)
    const received = new Promise<void>((ok) => c.once('end', () => ok()));
    c.consume();
    c.consuming = true;
    await received;
    expect(sha(c.data())).toBe(sha(big));
    expect(driver.violations).toEqual([]);
  });

  it('guest connect to a port nobody serves is answered with RST', async () => {
    await expect(driver.connect(3, 4444)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(backend.stats.refused).toBe(1);
  });

  it('guest connect reaches a listener in the vsock folder with the guest CID/port in the preamble', async () => {
    const transport = createEmulatedTransport({ dir });
    let seen: VsockSocket | undefined;
    const server = createServer({ transport }, (s) => {
      seen = s;
      s.pipe(s);
    });
    await new Promise<void>((ok) => server.listen({ port: 5000 }, () => ok()));
    const c = await driver.connect(2, 5000);
    c.write(Buffer.from('ping'));
    await until(() => c.data().toString() === 'ping', 'the echo');
    expect(seen?.remoteCid).toBe(CID);
    expect(seen?.remotePort).toBe(c.localPort);
    c.rst();
    await until(() => backend.stats.connections === 0, 'the RST to drop the connection');
    await new Promise<void>((ok) => server.close(() => ok()));
  });

  it('host dial of vsock:<guest-cid>:P through the emulation reaches the guest listener (CONNECT/OK)', async () => {
    const transport = createEmulatedTransport({ dir });
    const accepted: DriverConn[] = [];
    driver.listen(6000, (c) => {
      accepted.push(c);
      c.on('data', (d: Buffer) => c.write(Buffer.from(d.toString().toUpperCase())));
      c.on('end', () => c.end());
      return true;
    });
    const s = connect({ cid: CID, port: 6000, transport, allowHalfOpen: true });
    await new Promise<void>((ok, ko) => {
      s.once('connect', () => ok());
      s.once('error', ko);
    });
    expect(s.remoteCid).toBe(CID);
    expect(s.localPort).toBe(accepted[0]?.remotePort); // the host port the guest sees
    const out: Buffer[] = [];
    s.on('data', (d: Buffer) => out.push(d));
    s.end('hello guest');
    await new Promise<void>((ok) => s.once('end', () => ok()));
    expect(Buffer.concat(out).toString()).toBe('HELLO GUEST');
    s.destroy();
    await until(() => backend.stats.connections === 0, 'the connection to close');
  });

  it('host dial of a guest port nobody listens on fails with ECONNREFUSED', async () => {
    const transport = createEmulatedTransport({ dir });
    const s = connect({ cid: CID, port: 6001, transport });
    const err = await new Promise<NodeJS.ErrnoException>((ok) => s.once('error', ok));
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.message).toContain('vm(17):6001');
  });

  it('front-end disconnect resets the device: host sockets closed; a new front-end is served', async () => {
    let hostSide: VsockSocket | undefined;
    await backend.listen(9002, (s) => {
      hostSide = s;
    });
    await driver.connect(3, 9002);
    await until(() => hostSide !== undefined, 'the host side');
    const error = new Promise<NodeJS.ErrnoException>((ok) => hostSide?.once('error', ok));
    driver.disconnect();
    expect((await error).code).toBe('ECONNRESET');
    await until(() => !backend.stats.frontEndConnected, 'the front-end to be gone');
    expect(backend.stats.deviceResets).toBe(1);
    expect(backend.stats.connections).toBe(0);
    const again = new VsockDriver();
    try {
      await again.start(backend.socketPath);
      const c = await again.connect(3, 9002);
      expect(c.state).toBe('established');
    } finally {
      again.close();
    }
  });

  it('a new memory table while running: the rings move to the new mapping, connections go on', async () => {
    await backend.listen(9004, (s) => s.pipe(s));
    const c = await driver.connect(3, 9004);
    const a = randomBytes(100_000);
    c.write(a);
    await until(() => c.rxCnt === a.length, 'the first echo');
    await driver.setMemTable();
    const b = randomBytes(100_000);
    c.write(b);
    await until(() => c.rxCnt === a.length + b.length, 'the second echo');
    expect(sha(c.data())).toBe(sha(Buffer.concat([a, b])));
    expect(backend.stats.deviceResets).toBe(0);
    expect(driver.violations).toEqual([]);
  });

  it('a broken ring (head out of range) stops the device; the process and the backend survive', async () => {
    let hostSide: VsockSocket | undefined;
    await backend.listen(9003, (s) => {
      hostSide = s;
    });
    await driver.connect(3, 9003);
    await until(() => hostSide !== undefined, 'the host side');
    const error = new Promise<NodeJS.ErrnoException>((ok) => hostSide?.once('error', ok));
    driver.publishBogusTx();
    expect((await error).code).toBe('ECONNRESET');
    expect(backend.stats.deviceResets).toBe(1);
    // the device stays stopped until the front-end sets it up again (here: a new front-end)
    driver.close();
    await until(() => !backend.stats.frontEndConnected, 'the front-end to be gone');
    driver = new VsockDriver();
    await driver.start(backend.socketPath);
    const c = await driver.connect(3, 9003);
    expect(c.state).toBe('established');
  });

  it('an AbortSignal closes the backend: its sockets are removed', async () => {
    const ac = new AbortController();
    const socketPath = join(dir, 'other.sock');
    const other = await createVhostVsockBackend({
      socketPath,
      guestCid: 99,
      vsockDir: dir,
      signal: ac.signal,
    });
    expect(existsSync(socketPath)).toBe(true);
    expect(existsSync(emulatedVmSocketPath(dir, 99))).toBe(true);
    ac.abort();
    await until(
      () => !existsSync(socketPath) && !existsSync(emulatedVmSocketPath(dir, 99)),
      'the sockets to go',
    );
    await other.close(); // idempotent
    await expect(other.listen(1, () => {})).rejects.toMatchObject({
      code: 'ERR_VHOST_VSOCK_CLOSED',
    });
  });

  it('rejects bad options with VhostVsockError codes', async () => {
    await expect(
      createVhostVsockBackend({ socketPath: join(dir, 'x.sock'), guestCid: 2 }),
    ).rejects.toMatchObject({ code: 'ERR_VHOST_VSOCK_INVALID_ARG' });
    await expect(
      createVhostVsockBackend({ socketPath: backend.socketPath, guestCid: 5 }),
    ).rejects.toBeInstanceOf(VhostVsockError);
    await expect(backend.listen(9000, () => {})).resolves.toBeUndefined();
    await expect(backend.listen(9000, () => {})).rejects.toMatchObject({
      code: 'ERR_VHOST_VSOCK_PORT_IN_USE',
    });
  });
});
