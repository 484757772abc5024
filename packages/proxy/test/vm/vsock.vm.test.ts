// Runs inside ../shared/tools/vsock-vm only (pnpm test:vm): real AF_VSOCK, loopback CID 1.
import { readdirSync } from 'node:fs';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createEgressGateway,
  createEgressGatewayServer,
  createRoute,
  httpConnectDialer,
  type Route,
} from '../../src/index.js';
import {
  closed,
  connect,
  echo,
  payload,
  readAll,
  type Server,
  sha256,
  tcpServer,
  waitFor,
} from '../helpers.js';

const inVm = process.env.VSOCK_VM === '1';
const fdCount = () => readdirSync('/proc/self/fd').length;

describe.skipIf(!inVm)('proxy over real vsock (vsock-vm)', () => {
  let up: Server;
  let parent: Route;
  let enclave: Route;
  let port: number;
  let fdsBefore: number;
  const vport = 5000 + Math.floor(Math.random() * 1000);

  beforeAll(async () => {
    fdsBefore = fdCount();
    up = await tcpServer(echo);
    parent = createRoute({
      name: 'parent',
      listen: `vsock:any:${vport}`,
      dial: `tcp:127.0.0.1:${up.port}`,
      backlog: 2048,
    });
    await parent.start();
    enclave = createRoute({
      name: 'enclave',
      listen: 'tcp:127.0.0.1:0',
      dial: `vsock:1:${vport}`,
      maxConnections: 5000,
      backlog: 2048,
      // a burst of 1000 connects can overflow the vsock accept queue (ECONNRESET): retry
      dialRetries: { attempts: 5, delayMs: 50 },
    });
    await enclave.start();
    port = (enclave.endpoint as { port: number }).port;
  });
  afterAll(async () => {
    await enclave?.close({ drain: false });
    await parent?.close({ drain: false });
    await up?.close();
  });

  it('forwards TCP -> vsock -> TCP with a 4 MiB SHA-256-checked payload and half-close', async () => {
    const c = await connect(port);
    const data = payload(4 * 1024 * 1024);
    const got = readAll(c);
    c.end(data);
    expect(sha256(await got)).toBe(sha256(data));
    await closed(c);
  });

  it('carries 1000 concurrent connections with SHA-256-checked payloads', async () => {
    const n = 1000;
    const ok = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const c = await connect(port);
        const data = payload(4096 + (i % 97));
        const got = readAll(c);
        c.end(data);
        const good = sha256(await got) === sha256(data);
        await closed(c);
        return good;
      }),
    );
    expect(ok.filter(Boolean).length).toBe(n);
    await waitFor(() => enclave.active === 0 && parent.active === 0, 30_000);
    expect(enclave.metrics.snapshot().errors).toEqual({});
  });

  it('a peer killed mid-stream closes both sides and is counted', async () => {
    const killer = await tcpServer((s: net.Socket) => {
      s.once('data', () => s.resetAndDestroy());
    });
    const kp = vport + 1000;
    const p2 = createRoute({
      name: 'p2',
      listen: `vsock:any:${kp}`,
      dial: `tcp:127.0.0.1:${killer.port}`,
    });
    await p2.start();
    const e2 = createRoute({ name: 'e2', listen: 'tcp:127.0.0.1:0', dial: `vsock:1:${kp}` });
    await e2.start();
    const c = await connect((e2.endpoint as { port: number }).port);
    c.on('error', () => {});
    c.write(payload(1024 * 1024));
    await closed(c);
    await waitFor(() => e2.active === 0 && p2.active === 0, 10_000);
    expect(p2.metrics.snapshot().errors.ECONNRESET).toBe(1);
    await e2.close({ drain: false });
    await p2.close({ drain: false });
    await killer.close();
  });

  it('egress gateway over one real vsock port, policy enforced by the parent', async () => {
    const gport = vport + 2000;
    const server = createEgressGatewayServer({
      listen: `vsock:any:${gport}`,
      policy: { allow: [`127.0.0.1:${up.port}`] },
    });
    await server.start();
    const gw = createEgressGateway({ listen: 'tcp:127.0.0.1:0', parent: `vsock:1:${gport}` });
    await gw.start();
    const dial = httpConnectDialer(`http://127.0.0.1:${(gw.endpoint as { port: number }).port}`);
    const s = await dial({ host: '127.0.0.1', port: up.port });
    const data = payload(2 * 1024 * 1024);
    const got = readAll(s);
    s.end(data);
    expect(sha256(await got)).toBe(sha256(data));
    await expect(dial({ host: '127.0.0.2', port: up.port })).rejects.toMatchObject({
      code: 'ERR_PROXY_POLICY_DENIED',
    });
    await gw.close({ drain: false });
    await server.close({ drain: false });
  });

  it('leaks no file descriptors', async () => {
    await enclave.close({ drain: false });
    await parent.close({ drain: false });
    await up.close();
    await new Promise((r) => setTimeout(r, 200));
    const now = fdCount();
    if (now > fdsBefore + 2) {
      const { readlinkSync } = await import('node:fs');
      const kinds = readdirSync('/proc/self/fd').map((f) => {
        try {
          return readlinkSync(`/proc/self/fd/${f}`).replace(/\d+/g, 'N');
        } catch {
          return '?';
        }
      });
      console.error('open fds', JSON.stringify(kinds));
    }
    expect(now).toBeLessThanOrEqual(fdsBefore + 2);
  });
});
