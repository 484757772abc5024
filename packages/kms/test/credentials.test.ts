// Credentials relay over the vsock emulation (Unix sockets; never the kernel's vsock here).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import {
  CID_LOCAL,
  createEmulatedTransport,
  createServer,
  type VsockSocket,
  type VsockTransport,
  connect as vsockConnect,
} from '@enclave-extras/vsock';
import type { AwsCredentialIdentity } from '@smithy/types';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { KmsLogger } from '../src/index.js';
import { createCredentialsRelay, fromParentInstance, KmsError } from '../src/index.js';
import { CREDS, type Env, startEnv } from './helpers.js';

let dir: string;
let transport: VsockTransport;
let nextPort = 7100;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'eevs-'));
  transport = createEmulatedTransport({ dir });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function counting(make: () => AwsCredentialIdentity) {
  const p = async () => {
    p.calls++;
    return make();
  };
  p.calls = 0;
  return p;
}

interface Logged {
  level: 'debug' | 'info' | 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string | undefined;
}

function recorder(): KmsLogger & { lines: Logged[] } {
  const lines: Logged[] = [];
  const at =
    (level: Logged['level']) =>
    (obj: object, msg?: string): void => {
      lines.push({ level, obj: obj as Record<string, unknown>, msg });
    };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** An emulated "enclave" with its own CID, on the same emulated machine as the relay. */
function enclaveTransport(cid: number): VsockTransport {
  return createEmulatedTransport({ dir, localCid: cid });
}

/** Connects from `t`; resolves with the socket once connected (its localPort is the peer port). */
function open(t: VsockTransport, port: number): Promise<VsockSocket> {
  return new Promise((resolve, reject) => {
    const s = vsockConnect({ cid: 3, port, transport: t });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Reads everything the relay sends until it ends the connection. */
function readAll(s: VsockSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (b: Buffer) => chunks.push(b));
    s.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.once('error', reject);
  });
}

describe('createCredentialsRelay + fromParentInstance', () => {
  it('relays credentials (with session token and expiration) and caches them until near expiry', async () => {
    const expiration = new Date(Date.now() + 3600_000);
    const provider = counting(() => ({
      accessKeyId: 'ASIAEXAMPLE',
      secretAccessKey: 's3cr3t',
      sessionToken: 'tok',
      expiration,
    }));
    const port = nextPort++;
    const relay = await createCredentialsRelay({
      provider,
      listen: { port },
      allowCids: [CID_LOCAL],
      transport,
      region: 'eu-west-1',
    });
    try {
      expect(relay.address).toMatch(new RegExp(`:${port}$`));
      const read = fromParentInstance({ port, transport });
      const a = await read();
      expect(a).toEqual({
        accessKeyId: 'ASIAEXAMPLE',
        secretAccessKey: 's3cr3t',
        sessionToken: 'tok',
        expiration,
      });
      await read();
      expect(provider.calls).toBe(1);
      expect(relay.served).toBe(2);
    } finally {
      await relay.close();
    }
  });

  it('refreshes credentials that expire within refreshBeforeExpiryMs', async () => {
    let n = 0;
    const provider = counting(() => ({
      accessKeyId: `AKID${++n}`,
      secretAccessKey: 'x',
      expiration: new Date(Date.now() + 60_000),
    }));
    const port = nextPort++;
    const relay = await createCredentialsRelay({
      provider,
      listen: { port },
      allowCids: [CID_LOCAL],
      transport,
      refreshBeforeExpiryMs: 120_000,
    });
    try {
      const read = fromParentInstance({ port, transport });
      expect((await read()).accessKeyId).toBe('AKID1');
      expect((await read()).accessKeyId).toBe('AKID2');
    } finally {
      await relay.close();
    }
  });

  it('refreshes in the background before expiry, and serves still-valid credentials if the provider fails', async () => {
    let n = 0;
    let failing = false;
    const provider = counting(() => {
      if (failing) throw new Error('IMDS hiccup');
      return {
        accessKeyId: `AKID${++n}`,
        secretAccessKey: 'x',
        expiration: new Date(Date.now() + 60_000),
      };
    });
    const port = nextPort++;
    // refresh window 59.95 s of a 60 s lifetime: the background fetch is due almost at once
    const relay = await createCredentialsRelay({
      provider,
      listen: { port },
      allowCids: [CID_LOCAL],
      transport,
      refreshBeforeExpiryMs: 59_950,
      minRefreshIntervalMs: 20,
    });
    try {
      const read = fromParentInstance({ port, transport });
      expect((await read()).accessKeyId).toBe('AKID1');
      await vi.waitFor(() => expect(provider.calls).toBeGreaterThanOrEqual(2), { timeout: 10_000 });
      failing = true;
      const c = await read(); // inside the refresh window, provider failing: the cached ones
      expect(c.accessKeyId).toMatch(/^AKID\d+$/);
    } finally {
      await relay.close();
    }
    const after = provider.calls;
    await new Promise((r) => setTimeout(r, 100));
    expect(provider.calls).toBe(after); // no timer left running after close()
  });

  it('reports a failing provider as ERR_KMS_CREDENTIALS naming the cause', async () => {
    const port = nextPort++;
    const relay = await createCredentialsRelay({
      provider: async () => {
        throw Object.assign(new Error('IMDS unreachable'), { name: 'CredentialsProviderError' });
      },
      listen: { port },
      allowCids: [CID_LOCAL],
      transport,
    });
    try {
      const err = await fromParentInstance({ port, transport })().catch((e) => e);
      expect(err).toBeInstanceOf(KmsError);
      expect(err.code).toBe('ERR_KMS_CREDENTIALS');
      expect(err.message).toContain('IMDS unreachable');
    } finally {
      await relay.close();
    }
  });

  it('no relay: the vsock errno; a non-relay peer: ERR_KMS_CREDENTIALS', async () => {
    // The vsock errno passes through (the emulation says ENOENT today, the kernel ECONNREFUSED).
    const refused = await fromParentInstance({ port: nextPort++, transport })().catch((e) => e);
    expect(refused.code).toMatch(/^(ECONNREFUSED|ENOENT|ECONNRESET)$/);
    expect(refused.syscall).toBe('connect');
    const port = nextPort++;
    const junk = createServer({ transport }, (s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    await new Promise<void>((r) => junk.listen({ port }, r));
    try {
      await expect(fromParentInstance({ port, transport })()).rejects.toMatchObject({
        code: 'ERR_KMS_CREDENTIALS',
      });
    } finally {
      await new Promise<void>((r) => junk.close(() => r()));
    }
    expect(() => fromParentInstance({ port: -1 })).toThrow(KmsError);
  });

  describe('signing real KMS requests with relayed credentials', () => {
    let env: Env;
    beforeAll(async () => {
      env = await startEnv({});
    });
    afterAll(() => env?.close());

    it('the local KMS accepts requests signed with credentials read from the parent', async () => {
      const port = nextPort++;
      const relay = await createCredentialsRelay({
        provider: async () => CREDS,
        listen: { port },
        allowCids: [CID_LOCAL],
        transport,
      });
      try {
        const kms = new KMSClient({
          endpoint: env.endpoint,
          region: 'us-east-1',
          maxAttempts: 1,
          credentials: fromParentInstance({ port, transport }),
        });
        const out = await kms.send(new CreateKeyCommand({}));
        expect(out.KeyMetadata?.KeyId).toBeTruthy();
        expect(relay.served).toBe(1);
      } finally {
        await relay.close();
      }
    });
  });
});

describe('credentials relay: peer allow list, logging, timeouts', () => {
  const creds = () => ({ accessKeyId: 'ASIAALLOWED', secretAccessKey: 'only-for-cid-16' });

  it('refuses a CID outside the allow list (logged with the peer), hands out to an allowed CID (logged)', async () => {
    const provider = counting(creds);
    const log = recorder();
    const port = nextPort++;
    const relay = await createCredentialsRelay({
      provider,
      listen: { port },
      allowCids: [16],
      transport,
      logger: log,
    });
    try {
      // CID 17: refused, told why, the provider never asked
      const intruder = await open(enclaveTransport(17), port);
      const refusedText = await readAll(intruder);
      expect(JSON.parse(refusedText)).toMatchObject({ Error: { Code: 'PeerNotAllowed' } });
      expect(refusedText).not.toContain('ASIAALLOWED');
      const refusal = log.lines.find((l) => l.msg?.includes('refused'));
      expect(refusal?.level).toBe('warn');
      expect(refusal?.obj.peer).toBe(`vm(17):${intruder.localPort}`);
      expect(relay.refused).toBe(1);
      expect(provider.calls).toBe(0);
      const err = await fromParentInstance({ port, transport: enclaveTransport(17) })().catch(
        (e) => e,
      );
      expect(err).toBeInstanceOf(KmsError);
      expect(err.code).toBe('ERR_KMS_CREDENTIALS');
      expect(err.message).toContain('PeerNotAllowed');
      expect(err.message).toContain('vm(17)');
      expect(relay.refused).toBe(2);
      expect(relay.served).toBe(0);

      // CID 16: credentials, and the hand-out is logged with the peer
      const enclave = await open(enclaveTransport(16), port);
      const body = JSON.parse(await readAll(enclave));
      expect(body).toMatchObject({
        AccessKeyId: 'ASIAALLOWED',
        SecretAccessKey: 'only-for-cid-16',
      });
      const handout = log.lines.find((l) => l.msg?.includes('handed out'));
      expect(handout?.level).toBe('info');
      expect(handout?.obj.peer).toBe(`vm(16):${enclave.localPort}`);
      expect(JSON.stringify(handout)).not.toContain('only-for-cid-16'); // never the secret
      const c = await fromParentInstance({ port, transport: enclaveTransport(16) })();
      expect(c.accessKeyId).toBe('ASIAALLOWED');
      expect(relay.served).toBe(2);
      expect(log.lines.filter((l) => l.msg?.includes('handed out')).map((l) => l.obj.peer)).toEqual(
        [expect.stringMatching(/^vm\(16\):\d+$/), expect.stringMatching(/^vm\(16\):\d+$/)],
      );
    } finally {
      await relay.close();
    }
  });

  it("serves every CID only with allowCids: 'any'; no allow list is an error, not a default", async () => {
    const port = nextPort++;
    const relay = await createCredentialsRelay({
      provider: async () => creds(),
      listen: { port },
      allowCids: 'any',
      transport,
    });
    try {
      for (const cid of [5, 16, 4242]) {
        const c = await fromParentInstance({ port, transport: enclaveTransport(cid) })();
        expect(c.accessKeyId).toBe('ASIAALLOWED');
      }
    } finally {
      await relay.close();
    }
    const bad = [undefined, [], [0xffffffff], [-1], [1.5], 'all'];
    for (const allowCids of bad) {
      const err = await createCredentialsRelay({
        provider: async () => creds(),
        listen: { port: nextPort++ },
        allowCids: allowCids as number[],
        transport,
      }).catch((e) => e);
      expect(err, JSON.stringify(allowCids)).toBeInstanceOf(KmsError);
      expect(err.code).toBe('ERR_KMS_INVALID_ARGUMENT');
      expect(err.message).toContain('allowCids');
    }
    const zero = await createCredentialsRelay({
      provider: async () => creds(),
      listen: { port: nextPort++ },
      allowCids: [16],
      connectionTimeoutMs: 0,
      transport,
    }).catch((e) => e);
    expect(zero.code).toBe('ERR_KMS_INVALID_ARGUMENT');
  });

  it('disconnects a client that stops reading after connectionTimeoutMs (logged), freeing its descriptor', async () => {
    const log = recorder();
    const port = nextPort++;
    const relay = await createCredentialsRelay({
      provider: async () => creds(),
      listen: { port },
      allowCids: [16],
      connectionTimeoutMs: 300,
      transport,
      logger: log,
    });
    try {
      const paused = await open(enclaveTransport(16), port);
      paused.pause(); // never reads, never closes
      await vi.waitFor(() => expect(relay.timedOut).toBe(1), { timeout: 10_000 });
      await vi.waitFor(() => expect(relay.server.connections).toBe(0), { timeout: 10_000 });
      const line = log.lines.find((l) => l.msg?.includes('connectionTimeoutMs'));
      expect(line?.level).toBe('warn');
      expect(line?.obj.peer).toBe(`vm(16):${paused.localPort}`);
      paused.destroy();
      // a refused CID that stops reading is disconnected the same way
      const intruder = await open(enclaveTransport(99), port);
      intruder.pause();
      await vi.waitFor(() => expect(relay.timedOut).toBe(2), { timeout: 10_000 });
      await vi.waitFor(() => expect(relay.server.connections).toBe(0), { timeout: 10_000 });
      intruder.destroy();
      // well-behaved clients are unaffected
      expect(
        (await fromParentInstance({ port, transport: enclaveTransport(16) })()).accessKeyId,
      ).toBe('ASIAALLOWED');
    } finally {
      await relay.close();
    }
  });

  it('a provider that hangs does not hold connections past the timeout; close() ends open connections', async () => {
    const port = nextPort++;
    const relay = await createCredentialsRelay({
      provider: () => new Promise<AwsCredentialIdentity>(() => {}),
      listen: { port },
      allowCids: [16],
      connectionTimeoutMs: 300,
      transport,
    });
    const waiting = await open(enclaveTransport(16), port);
    const closed = new Promise<void>((r) => waiting.once('close', () => r()));
    waiting.resume();
    await vi.waitFor(() => expect(relay.timedOut).toBe(1), { timeout: 10_000 });
    await closed;
    expect(relay.served).toBe(0);
    await relay.close();

    // close() with a paused client still connected (default 5 s timeout) does not wait for it
    const port2 = nextPort++;
    const relay2 = await createCredentialsRelay({
      provider: async () => creds(),
      listen: { port: port2 },
      allowCids: [16],
      transport,
    });
    const idle = await open(enclaveTransport(16), port2);
    idle.pause();
    await vi.waitFor(() => expect(relay2.served).toBe(1), { timeout: 10_000 });
    expect(relay2.server.connections).toBe(1);
    await relay2.close();
    expect(relay2.server.connections).toBe(0);
    idle.destroy();
  });
});
