// Issue 11 item 10: a failed listen says the remedy that fits the failure (a missing vsock
// transport is not "pick a free address"). Real listeners where this machine can produce the
// failure (EADDRINUSE on TCP, a unix path in a missing directory, a vsock CID that is not local);
// the mapping itself for the failures it cannot produce (no AF_VSOCK here).
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseEndpoint } from '../src/index.js';
import { listenEndpoint, listenRemedy } from '../src/transport.js';

const dir = mkdtempSync(join(tmpdir(), 'ee-listen-remedy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('listen failures name the right remedy', () => {
  it('EADDRINUSE on TCP: pick a free address', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      await expect(
        listenEndpoint(parseEndpoint(`tcp:127.0.0.1:${port}`), () => {}),
      ).rejects.toMatchObject({
        code: 'EADDRINUSE',
        message: expect.stringMatching(/Pick a free address or stop the other listener\.$/),
      });
    } finally {
      taken.close();
    }
  });

  it('a unix socket in a missing directory: check the directory', async () => {
    const err = await listenEndpoint(
      parseEndpoint(`unix:${join(dir, 'missing', 'a.sock')}`),
      () => {},
    ).then(
      () => {
        throw new Error('listen succeeded in a missing directory');
      },
      (e: unknown) => e as Error & { code: string },
    );
    // libuv reports a missing directory of a pipe as EACCES
    expect(err).toMatchObject({ code: 'EACCES' });
    expect(err.message).toMatch(/directory of the socket path exists/);
    expect(err.message).not.toMatch(/free address/);
  });

  it('vsock remedies: a missing transport says how to get vsock or the emulation', () => {
    const ep = parseEndpoint('vsock:any:8000');
    for (const code of ['EAFNOSUPPORT', 'ENODEV', 'ENOENT', 'ESOCKTNOSUPPORT']) {
      const text = listenRemedy(ep, code);
      expect(text).toMatch(/--vsock-dir DIR \(ENCLAVE_EXTRAS_VSOCK_DIR\)/);
      expect(text).not.toMatch(/free address/);
    }
    expect(listenRemedy(ep, 'EADDRINUSE')).toMatch(/free address/);
    expect(listenRemedy(parseEndpoint('vsock:99:8000'), 'EADDRNOTAVAIL')).toMatch(/vsock:any/);
    expect(listenRemedy(parseEndpoint('tcp:0.0.0.0:80'), 'EACCES')).toMatch(/CAP_NET_BIND_SERVICE/);
    expect(listenRemedy(parseEndpoint('tcp:0.0.0.0:80'), 'EWHATEVER')).toBe('Check the address.');
  });
});
