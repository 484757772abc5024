// The backend under a real guest kernel: QEMU (TCG) with vhost-user-vsock-pci on our socket.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  connect,
  createEmulatedTransport,
  createServer,
  type VsockServer,
  type VsockSocket,
} from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVhostVsockBackend, type VhostVsockBackend } from '../../src/index.js';
import { AGENT_PORT, type Guest, missing, runInGuest, startQemu, waitForAgent } from './guest.js';

const why = missing();
const CID = 42;
const MiB = 1024 * 1024;

const logs: string[] = [];
const log =
  (level: string) =>
  (obj: object, msg?: string): void => {
    const line = `${level} ${msg ?? ''} ${JSON.stringify(obj, (_k, v) => (v instanceof Error ? v.message : v))}`;
    logs.push(line);
    if (process.env.VHV_DEBUG) process.stderr.write(`${line}\n`);
  };
const logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };

const fdCount = () => readdirSync('/proc/self/fd').length;

describe.skipIf(why !== null)(`vhost-vsock under QEMU${why ? ` (skipped: ${why})` : ''}`, () => {
  let dir: string;
  let backend: VhostVsockBackend;
  let guest: Guest;
  let fdsBefore: number;
  const transport = () => createEmulatedTransport({ dir, localCid: 1 });

  const run = (cmd: string, input?: Buffer) => runInGuest(transport(), CID, cmd, input);
  const waitForAgentUp = () =>
    waitForAgent(transport(), CID, guest, () => `backend log:\n${logs.slice(-40).join('\n')}`);

  beforeAll(async () => {
    fdsBefore = fdCount();
    dir = mkdtempSync(join(tmpdir(), 'vhv-'));
    backend = await createVhostVsockBackend({
      socketPath: join(dir, 'vhost.sock'),
      guestCid: CID,
      vsockDir: dir,
      logger,
    });
    guest = startQemu({ socketPath: backend.socketPath, consoleLog: join(dir, 'console.log') });
    await waitForAgentUp();
  });

  afterAll(async () => {
    await guest?.stop();
    await backend?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A host listener in the vsock folder (what `ee-parent --vsock-dir` runs). */
  const hostListen = async (
    port: number,
    handler: (s: VsockSocket) => void,
  ): Promise<VsockServer> => {
    const server = createServer({ transport: transport(), allowHalfOpen: true }, handler);
    await new Promise<void>((ok) => server.listen({ port }, () => ok()));
    return server;
  };
  const closeServer = (s: VsockServer) => new Promise<void>((ok) => s.close(() => ok()));
  const settle = async (cond: () => boolean, what: string) => {
    const deadline = Date.now() + 30_000;
    while (!cond()) {
      if (Date.now() > deadline) {
        throw new Error(
          `timed out waiting for ${what}; console:\n${guest.console().slice(-3000)}\nbackend log:\n${logs.slice(-30).join('\n')}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  it('host -> guest: a command and its output (agent round trip)', async () => {
    expect((await run('uname -s')).toString()).toBe('Linux\n');
    expect(backend.stats.frontEndConnected).toBe(true);
  });

  it('host -> guest: 64 MiB hash-checked, with half-close (the guest answers after our EOF)', async () => {
    const data = randomBytes(64 * MiB);
    const out = await run('sha256sum', data);
    expect(out.toString().split(' ')[0]).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('guest -> host: 64 MiB hash-checked into the vsock folder, the host answers after the guest half-closed', async () => {
    let peer = '';
    const server = await hostListen(5001, (s) => {
      peer = `${s.remoteCid}`;
      const h = createHash('sha256');
      s.on('data', (d: Buffer) => h.update(d));
      s.on('end', () => s.end(`${h.digest('hex')}\n`));
    });
    try {
      const out = await run(
        'head -c 67108864 /dev/urandom > /tmp/d && sha256sum /tmp/d | cut -d" " -f1 && vt connect 2 5001 < /tmp/d; rm -f /tmp/d',
      );
      const [guestHash, hostHash] = out.toString().trim().split('\n');
      expect(guestHash).toMatch(/^[0-9a-f]{64}$/);
      expect(hostHash).toBe(guestHash);
      expect(peer).toBe(String(CID));
    } finally {
      await closeServer(server);
    }
  });

  it('100 concurrent connections each way (all open at once), then no connection or fd left', async () => {
    const fds = fdCount();
    // guest -> host: the host holds every connection until all 100 are open
    const held: VsockSocket[] = [];
    const server = await hostListen(5002, (s) => {
      const chunks: Buffer[] = [];
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('end', () => {
        held.push(s);
        (s as VsockSocket & { got?: string }).got = Buffer.concat(chunks).toString();
        if (held.length === 100)
          for (const h of held) h.end(`echo:${(h as VsockSocket & { got?: string }).got}`);
      });
    });
    try {
      const out = await run(
        'i=0; while [ $i -lt 100 ]; do echo "n$i" | vt connect 2 5002 > /tmp/o$i & i=$((i+1)); done; wait; cat /tmp/o* | sort -u | wc -l; rm -f /tmp/o*',
      );
      expect(out.toString().trim()).toBe('100');
      expect(held.length).toBe(100);
    } finally {
      await closeServer(server);
    }
    // host -> guest: 100 echo connections in parallel, 16 KiB each
    const results = await Promise.all(
      Array.from({ length: 100 }, async () => {
        const data = randomBytes(16 * 1024);
        const echoed = await run('cat', data);
        return echoed.equals(data);
      }),
    );
    expect(results.filter(Boolean).length).toBe(100);
    await settle(() => backend.stats.connections === 0, 'connections to drain');
    await settle(() => fdCount() <= fds, `fds back to ${fds} (now ${fdCount()})`);
  });

  it('guest process killed mid-stream: the host writer gets a reset', async () => {
    const s = connect({ cid: CID, port: AGENT_PORT, transport: transport(), allowHalfOpen: true });
    s.write('head -c 1048576 > /dev/null; kill -9 $$\n');
    const chunk = Buffer.alloc(64 * 1024, 7);
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      s.on('error', (e) => resolve(e));
      s.on('close', () => resolve(null));
      const pump = () => {
        while (!s.destroyed && s.write(chunk)) {}
      };
      s.on('drain', pump);
      pump();
    });
    expect(s.destroyed).toBe(true);
    expect(['EPIPE', 'ECONNRESET']).toContain(err?.code);
    await settle(() => backend.stats.connections === 0, 'the connection to be dropped');
  });

  it('host peer killed mid-stream: the guest writer gets ECONNRESET', async () => {
    const server = await hostListen(5003, (s) => {
      let n = 0;
      s.on('data', (d: Buffer) => {
        n += d.length;
        if (n >= 1024 * 1024 && !s.isPaused()) {
          // killed like a process: it stops reading, and closes with unread data queued, which
          // is a reset on a Unix socket (not a clean EOF)
          s.pause();
          setTimeout(() => s.destroy(), 300);
        }
      });
    });
    try {
      const out = await run('vt connect 2 5003 < /dev/zero 2>&1; echo "rc=$?"');
      expect(out.toString()).toMatch(/rc=1/);
      expect(out.toString()).toMatch(/errno (104|32)/);
    } finally {
      await closeServer(server);
    }
  });

  it('guest reboot: the device is reset, open connections are dropped, the backend serves the rebooted guest', async () => {
    const resets = backend.stats.deviceResets;
    const heldOpen = connect({
      cid: CID,
      port: AGENT_PORT,
      transport: transport(),
      allowHalfOpen: true,
    });
    heldOpen.write('cat\n');
    // the backend destroys its side: our half-open socket sees EOF (Unix sockets carry no RST)
    const dropped = new Promise<void>((ok) => {
      heldOpen.on('end', () => ok());
      heldOpen.on('close', () => ok());
    });
    heldOpen.on('error', () => {});
    await run('sleep 0.2');
    expect(backend.stats.connections).toBeGreaterThanOrEqual(1);
    const reboot = connect({ cid: CID, port: AGENT_PORT, transport: transport() });
    reboot.on('error', () => {});
    reboot.end('reboot -f\n');
    let isDropped = false;
    void dropped.then(() => {
      isDropped = true;
    });
    await settle(
      () => isDropped && backend.stats.deviceResets > resets,
      'a device reset and the held connection dropped',
    );
    heldOpen.destroy();
    await waitForAgentUp();
    expect((await run('echo back')).toString()).toBe('back\n');
    expect(backend.stats.frontEndConnected).toBe(true);
  });

  it('no fd leak: after QEMU exits and the backend closes, the process has the fds it had before', async () => {
    await guest.stop();
    await backend.close();
    await settle(() => fdCount() <= fdsBefore, `fds back to ${fdsBefore} (now ${fdCount()})`);
  });
});
