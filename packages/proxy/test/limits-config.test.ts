import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { egressGatewayServerSchema, parseConfig, routeSchema } from '../src/config.js';
import { createProxyRuntime, ProxyError } from '../src/index.js';
import { tempDir } from './helpers.js';

const schema = z.strictObject({
  routes: z.array(routeSchema),
  egressGateway: egressGatewayServerSchema,
});

describe('limits and dns settings in the config', () => {
  it('are accepted on routes and the gateway server and reach the running routes', async () => {
    const t = tempDir();
    const config = parseConfig(
      `routes:
  - name: bulk
    listen: unix:${t.dir}/bulk.sock
    dial: tcp:127.0.0.1:9
    idleTimeoutMs: 0
    maxConnectionsPerPeer: 3
    fdReserve: 0
    dns: { timeoutMs: 1500, maxLookupsPerPeer: 2 }
  - name: plain
    listen: vsock:any:8100
    dial: tcp:127.0.0.1:9
egressGateway:
  listen: unix:${t.dir}/gw.sock
  policy: { allow: ["*:443"] }
  maxConnectionsPerPeer: 7
  dns: { timeoutMs: 2500 }
`,
      schema,
      'limits.yaml',
    );
    expect(config.routes[0]).toMatchObject({
      idleTimeoutMs: 0,
      maxConnectionsPerPeer: 3,
      fdReserve: 0,
      dns: { timeoutMs: 1500, maxLookupsPerPeer: 2 },
    });
    const { createEmulatedTransport } = await import('@enclave-extras/vsock');
    const runtime = createProxyRuntime({
      vsock: { transport: createEmulatedTransport({ dir: t.dir }) },
    });
    try {
      await runtime.apply({
        routes: config.routes,
        egressGatewayServers: [config.egressGateway],
      });
      expect(runtime.route('bulk')).toMatchObject({ idleTimeoutMs: 0, maxConnectionsPerPeer: 3 });
      // defaults: 10 min idle, 1024 per CID on a vsock listener
      expect(runtime.route('plain')).toMatchObject({
        idleTimeoutMs: 600_000,
        maxConnectionsPerPeer: 1024,
      });
      expect(runtime.route('egress')).toMatchObject({ maxConnectionsPerPeer: 7 });
    } finally {
      await runtime.close({ drain: false });
      t.cleanup();
    }
  });

  it('refuses negative or non-integer values with file:line:col', () => {
    const bad = (yaml: string) => {
      try {
        parseConfig(yaml, schema, 'bad.yaml');
      } catch (err) {
        return err as ProxyError;
      }
      throw new Error('accepted');
    };
    const head =
      'egressGateway: { listen: "unix:/tmp/x.sock", policy: { allow: ["*:443"] } }\nroutes:\n  - name: r\n    listen: tcp:127.0.0.1:0\n    dial: tcp:127.0.0.1:9\n';
    const e1 = bad(`${head}    maxConnectionsPerPeer: -1\n`);
    expect(e1).toBeInstanceOf(ProxyError);
    expect(e1.code).toBe('ERR_CONFIG_INVALID');
    expect(e1.message).toMatch(/bad\.yaml:6:\d+: routes\[0\]\.maxConnectionsPerPeer/);
    const e2 = bad(`${head}    dns: { timeoutMs: 0.5 }\n`);
    expect(e2.message).toMatch(/routes\[0\]\.dns\.timeoutMs/);
    const e3 = bad(`${head}    dns: { deadline: 5 }\n`);
    expect(e3.message).toMatch(/unknown key "deadline"/);
    const e4 = bad(`${head}    fdReserve: -5\n`);
    expect(e4.message).toMatch(/routes\[0\]\.fdReserve/);
  });
});
