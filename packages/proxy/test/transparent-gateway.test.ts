import net from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createEgressGatewayServer,
  createTransparentGateway,
  openParentTunnel,
  ProxyError,
  type TransparentTarget,
} from '../src/index.js';
import { echo, memoryLogger, tcpServer, tempDir } from './helpers.js';

// The enclave half of transparent egress without iptables: the target comes from a callback (in
// @enclave-extras/runtime it reads SO_ORIGINAL_DST); the parent gateway server decides.
describe('createTransparentGateway / openParentTunnel', () => {
  const t = tempDir('ee-transparent-gw-');
  afterAll(() => t.cleanup());

  it('forwards raw bytes to the callback target through the parent; a refusal resets the client', async () => {
    const upstream = await tcpServer(echo);
    const parentPath = join(t.dir, 'parent.sock');
    const parent = createEgressGatewayServer({
      listen: `unix:${parentPath}`,
      policy: { allow: [`127.0.0.1:${upstream.port}`] },
    });
    await parent.start();
    let next: TransparentTarget = { host: '127.0.0.1', port: upstream.port };
    const log = memoryLogger();
    const gw = createTransparentGateway({
      listen: 'tcp:127.0.0.1:0',
      parent: `unix:${parentPath}`,
      target: () => next,
      logger: log,
    });
    await gw.start();
    const port = (gw.endpoint as { port: number }).port;
    try {
      // allowed: the client speaks first (no handshake of ours in the stream)
      const got = await new Promise<string>((resolve, reject) => {
        const c = net.connect(port, '127.0.0.1', () => c.end('PING 1\n'));
        let data = '';
        c.on('data', (d) => {
          data += d;
        });
        c.on('end', () => resolve(data));
        c.on('error', reject);
      });
      expect(got).toBe('PING 1\n');
      // denied by the parent: the accepted connection is reset, no byte arrives
      next = { host: '127.0.0.1', port: 1 };
      const refused = await new Promise<{ code?: string; data: string }>((resolve) => {
        const c = net.connect(port, '127.0.0.1', () => c.write('PING 2\n'));
        let data = '';
        c.on('data', (d) => {
          data += d;
        });
        c.on('error', (e: NodeJS.ErrnoException) =>
          resolve({ ...(e.code ? { code: e.code } : {}), data }),
        );
        c.on('close', () => resolve({ data }));
      });
      expect(refused).toEqual({ code: 'ECONNRESET', data: '' });
      expect(log.lines.map((l) => l.obj)).toContainEqual(
        expect.objectContaining({ code: 'ERR_PROXY_POLICY_DENIED', target: '127.0.0.1:1' }),
      );
      // the tunnel API alone: refusal carries the parent's code and reason
      const err = await openParentTunnel(`unix:${parentPath}`, {
        host: '127.0.0.1',
        port: 1,
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ProxyError);
      expect(err).toMatchObject({ code: 'ERR_PROXY_POLICY_DENIED', details: { by: 'parent' } });
    } finally {
      await gw.close({ drain: false });
      await parent.close({ drain: false });
      await upstream.close();
    }
  });
});
