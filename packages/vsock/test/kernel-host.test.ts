// Host-kernel checks that never connect: AF_VSOCK bind/listen/close and localCid().
// (Connecting from this machine's kernel would leave the machine; the VM suite does that.)
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import {
  CID_ANY,
  createServer,
  kernelTransport,
  localCid,
  PORT_ANY,
  VsockError,
} from '../src/index.js';

async function tryListen(port: number) {
  const server = createServer({ transport: kernelTransport });
  server.listen({ port, cid: CID_ANY });
  const [event, value] = await new Promise<
    readonly ['listening' | 'error', VsockError | undefined]
  >((resolve) => {
    server.once('listening', () => resolve(['listening', undefined]));
    server.once('error', (e) => resolve(['error', e as VsockError]));
  });
  return { server, event, error: value };
}

const probe = await tryListen(PORT_ANY);
const hasVsock = probe.event === 'listening';
if (!hasVsock) {
  console.log(
    `host kernel AF_VSOCK listen tests SKIPPED: ${probe.error?.code} ${probe.error?.message}`,
  );
}

describe.skipIf(!hasVsock)('kernel transport on the host (bind/listen only)', () => {
  it('listens on CID_ANY with a kernel-chosen port and reports it', async () => {
    const addr = probe.server.address();
    expect(addr?.cid).toBe(CID_ANY);
    expect(addr?.port).toBeGreaterThan(0);
    expect(addr?.port).not.toBe(PORT_ANY);
    expect(probe.server.listening).toBe(true);
  });

  it('a second listener on the same port gets EADDRINUSE with the address', async () => {
    const port = probe.server.address()!.port;
    const second = await tryListen(port);
    expect(second.event).toBe('error');
    expect(second.error).toBeInstanceOf(VsockError);
    expect(second.error?.code).toBe('EADDRINUSE');
    expect(second.error?.syscall).toBe('bind');
    expect(second.error?.address).toBe(`any(4294967295):${port}`);
    expect(second.server.listening).toBe(false);
  });

  it('close() releases the port: it can be bound again', async () => {
    const port = probe.server.address()!.port;
    probe.server.close();
    await once(probe.server, 'close');
    const again = await tryListen(port);
    expect(again.event).toBe('listening');
    again.server.close();
    await once(again.server, 'close');
  });

  it('listen twice on one server throws ERR_SERVER_ALREADY_LISTEN', async () => {
    const { server } = await tryListen(PORT_ANY);
    expect(() => server.listen({ port: 1 })).toThrow(
      expect.objectContaining({ code: 'ERR_SERVER_ALREADY_LISTEN' }),
    );
    server.close();
    await once(server, 'close');
  });
});

describe('localCid() on the host', () => {
  it('returns a u32 cid or a typed ENODEV/EAFNOSUPPORT-family error', () => {
    try {
      const cid = localCid({ transport: kernelTransport });
      expect(Number.isInteger(cid)).toBe(true);
      expect(cid).toBeGreaterThanOrEqual(0);
    } catch (err) {
      expect(err).toBeInstanceOf(VsockError);
      expect(['ENODEV', 'EAFNOSUPPORT', 'ENOTTY', 'EACCES']).toContain((err as VsockError).code);
      expect((err as VsockError).address).toBe('/dev/vsock');
    }
  });
});
