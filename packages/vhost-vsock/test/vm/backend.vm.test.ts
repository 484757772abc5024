// The backend under a real guest kernel: QEMU (TCG) with vhost-user-vsock-pci on our socket.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  connect,
  createEmulatedTransport,
  createServer,
  type VsockSocket,
} from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVhostVsockBackend, type VhostVsockBackend } from '../../src/index.js';
import { AGENT_PORT, type Guest, missing, startQemu } from './guest.js';

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

  /** Runs `cmd` in the guest with `input` as its stdin; resolves with its stdout. */
  const run = (cmd: string, input?: Buffer): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const s = connect({
        cid: CID,
        port: AGENT_PORT,
        transport: transport(),
        allowHalfOpen: true,
      });
      const out: Buffer[] = [];
      s.on('data', (d: Buffer) => out.push(d));
      s.on('error', reject);
      s.on('end', () => resolve(Buffer.concat(out)));
      s.write(`${cmd}\n`);
      if (input) s.write(input);
      s.end();
    });

  async function waitForAgent(): Promise<void> {
    const deadline = Date.now() + 240_000;
    for (;;) {
      try {
        const r = await run('echo ready');
        if (r.toString() === 'ready\n') return;
      } catch {}
      if (Date.now() > deadline || guest.console().includes('failed'))
        throw new Error(
          `guest agent not reachable; console:\n${guest.console()}\nbackend log:\n${logs.slice(-40).join('\n')}`,
        );
      await new Promise((r) => setTimeout(r, 500));
    }
  }

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
    await waitForAgent();
  });

  afterAll(async () => {
    await guest?.stop();
    await backend?.close();
    await new Promise((r) => setTimeout(r, 200));
    rmSync(dir, { recursive: true, force: true });
  });

  it('host -> guest: a command and its output (agent round trip)', async () => {
    expect((await run('uname -s')).toString()).toBe('Linux\n');
    expect(backend.stats.frontEndConnected).toBe(true);
  });

  it('host -> guest: 64 MiB hash-checked, with half-close (the guest answers after our EOF)', async () => {
    const data = randomBytes(64 * MiB);
    const out = await run('sha256sum', data);
    expect(out.toString().split(' ')[0]).toBe(createHash('sha256').update(data).digest('hex'));
  });
});
