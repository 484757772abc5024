// Credentials relay over the vsock emulation (Unix sockets; never the kernel's vsock here).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { createEmulatedTransport, createServer, type VsockTransport } from '@enclave-extras/vsock';
import type { AwsCredentialIdentity } from '@smithy/types';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
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
