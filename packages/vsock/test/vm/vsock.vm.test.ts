// Real AF_VSOCK suite: runs inside ../shared/tools/vsock-vm (vsock loopback, CID 1) through
// `pnpm test:vm`. Every test here opens real kernel vsock sockets.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { Agent, request } from 'undici';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CID_LOCAL,
  connect,
  kernelTransport,
  localCid,
  PORT_ANY,
  VsockError,
  type VsockServer,
  type VsockSocket,
  vsockDialer,
} from '../../src/index.js';
import {
  closeServer,
  hashStream,
  listen,
  readAll,
  selfSignedCert,
  waitError,
  writePattern,
} from '../helpers.js';

const inVm = process.env.VSOCK_VM === '1';
const BLOCKED_LISTENER = new URL('./blocked-listener.mjs', import.meta.url).pathname;
if (!inVm) console.log('vsock VM suite SKIPPED: not inside vsock-vm (run `pnpm test:vm`)');

const t = kernelTransport;
const MiB = 1 << 20;
let nextPort = 20000;
const port = () => nextPort++;
const dial = (p: number, extra: Partial<Parameters<typeof connect>[0] & object> = {}) =>
  connect({ cid: CID_LOCAL, port: p, transport: t, ...extra });

describe.skipIf(!inVm)('AF_VSOCK over vsock loopback (CID_LOCAL)', () => {
  it('localCid() reads the CID with the /dev/vsock ioctl', () => {
    const cid = localCid({ transport: t });
    expect(Number.isInteger(cid)).toBe(true);
    expect(cid).toBeGreaterThanOrEqual(1);
  });

  it('echo, with real net.Socket semantics and vsock addresses', async () => {
    const p = port();
    let serverSide: VsockSocket | undefined;
    const server = await listen(t, p, (s) => {
      serverSide = s;
      s.pipe(s);
    });
    const c = dial(p);
    expect(c).toBeInstanceOf(net.Socket);
    expect(c.connecting).toBe(true);
    c.write('written before connect; ');
    await once(c, 'connect');
    expect(c.connecting).toBe(false);
    expect(c.remoteCid).toBe(CID_LOCAL);
    expect(c.remotePort).toBe(p);
    expect(c.localCid).toBe(localCid({ transport: t }));
    expect(c.localPort).toBeGreaterThan(0);
    c.end('hello');
    expect((await readAll(c)).toString()).toBe('written before connect; hello');
    expect(serverSide?.remotePort).toBe(c.localPort);
    expect(serverSide?.localPort).toBe(p);
    expect(serverSide?.remoteVsockAddress).toBe(`local(1):${c.localPort}`);
    await once(c, 'close');
    await closeServer(server);
  });

  it('64 MiB client -> server, hash-checked', async () => {
    const p = port();
    const server = await listen(
      t,
      p,
      async (s) => {
        const { bytes, sha256 } = await hashStream(s);
        s.end(`${bytes} ${sha256}`);
      },
      { allowHalfOpen: true },
    );
    const c = dial(p, { allowHalfOpen: true });
    const reply = readAll(c);
    const sent = await writePattern(c, 64 * MiB, 11);
    expect((await reply).toString()).toBe(`${64 * MiB} ${sent}`);
    await closeServer(server);
  });

  it('64 MiB server -> client, hash-checked', async () => {
    const p = port();
    let sent: Promise<string> | undefined;
    const server = await listen(t, p, (s) => {
      sent = writePattern(s, 64 * MiB, 12);
    });
    const c = dial(p);
    const got = await hashStream(c);
    expect(got).toEqual({ bytes: 64 * MiB, sha256: await sent });
    await closeServer(server);
  });

  it('200 concurrent connections each get their own echo', async () => {
    const p = port();
    const server = await listen(t, p, (s) => s.pipe(s), {});
    server.getConnections(() => {});
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const c = dial(p);
        const payload = createHash('sha256').update(String(i)).digest().toString('hex').repeat(16);
        c.end(payload);
        return (await readAll(c)).toString() === payload;
      }),
    );
    expect(results.filter(Boolean).length).toBe(200);
    await closeServer(server);
  });

  it('a burst of 1000 connects to a listener that is not accepting: none refused (default backlog above 511; vsock has no SYN retry, a full queue refuses)', async () => {
    const p = port();
    const child = spawn(process.execPath, [BLOCKED_LISTENER, String(p), '15000'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const said = (what: string) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (out.includes(what)) resolve();
        };
        child.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          check();
        });
        child.once('exit', () => (out.includes(what) ? resolve() : reject(new Error(out))));
        check();
      });
    await said('listening');
    const socks: VsockSocket[] = [];
    const outcomes = await Promise.all(
      Array.from(
        { length: 1000 },
        () =>
          new Promise<string>((resolve) => {
            const c = dial(p);
            socks.push(c);
            c.once('connect', () => resolve('ok'));
            c.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
          }),
      ),
    );
    // every connect was decided while the listener was still blocked (else the test says nothing)
    expect(out).not.toContain('unblocked');
    const refused = outcomes.filter((o) => o !== 'ok');
    expect(refused.length, `first refusals: ${refused.slice(0, 3).join(', ')}`).toBe(0);
    await said('accepted');
    expect(out).toContain('accepted 1000');
    for (const c of socks) c.destroy();
  }, 120_000);

  it('half-close: client ends its side, server still replies', async () => {
    const p = port();
    const server = await listen(
      t,
      p,
      async (s) => {
        const body = await readAll(s);
        s.end(`server saw ${body.length} bytes after client FIN`);
      },
      { allowHalfOpen: true },
    );
    const c = dial(p, { allowHalfOpen: true });
    c.end(Buffer.alloc(100_000, 1));
    expect((await readAll(c)).toString()).toBe('server saw 100000 bytes after client FIN');
    await closeServer(server);
  });

  it('half-close: server ends first, client keeps writing and the server reads it', async () => {
    const p = port();
    let serverRead: Promise<Buffer> | undefined;
    const server = await listen(
      t,
      p,
      (s) => {
        serverRead = readAll(s);
        s.end('server done');
      },
      { allowHalfOpen: true },
    );
    const c = dial(p, { allowHalfOpen: true });
    const got = await readAll(c);
    expect(got.toString()).toBe('server done');
    expect(c.writable).toBe(true);
    c.end('client still talking');
    expect((await serverRead!).toString()).toBe('client still talking');
    await closeServer(server);
  });

  it('server close() while clients are connected: they finish, new connects are refused', async () => {
    const p = port();
    const accepted: VsockSocket[] = [];
    const server: VsockServer = await listen(t, p, (s) => {
      accepted.push(s);
      s.pipe(s);
    });
    const clients = Array.from({ length: 5 }, () => dial(p));
    await Promise.all(clients.map((c) => once(c, 'connect')));
    while (accepted.length < 5) await new Promise((r) => setTimeout(r, 10));
    let closed = false;
    const closing = new Promise<void>((resolve) =>
      server.close(() => {
        closed = true;
        resolve();
      }),
    );
    const late = dial(p);
    expect((await waitError(late)).code).toBe('ECONNREFUSED');
    const echoes = await Promise.all(
      clients.map(async (c, i) => {
        c.end(`still here ${i}`);
        return (await readAll(c)).toString();
      }),
    );
    expect(echoes).toEqual(clients.map((_, i) => `still here ${i}`));
    await closing;
    expect(closed).toBe(true);
    expect(server.connections).toBe(0);
  });

  it('connect with no listener: ECONNREFUSED with syscall and vsock address', async () => {
    const p = port();
    const c = dial(p);
    const err = await waitError(c);
    expect(err).toBeInstanceOf(VsockError);
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.syscall).toBe('connect');
    expect(err.address).toBe(`local(1):${p}`);
    expect(err.message).toContain(`local(1):${p}`);
    expect(c.destroyed).toBe(true);
  });

  it('connect to a CID with no transport fails with a typed error', async () => {
    const c = connect({ cid: 99, port: 1, transport: t, connectTimeout: 500 });
    const err = await waitError(c);
    expect(err).toBeInstanceOf(VsockError);
    expect(typeof err.code).toBe('string');
    expect(err.address).toBe('vm(99):1');
  });

  it('destroy() while connecting is clean (no event after close, no leak)', async () => {
    const p = port();
    const resets: string[] = [];
    const server = await listen(t, p, (s) => {
      // the peer vanished mid-handshake: the accepted socket may see a reset
      s.on('error', (e: VsockError) => resets.push(e.code));
      s.end();
    });
    const c = dial(p);
    c.destroy();
    await once(c, 'close');
    const again = dial(p);
    again.resume();
    await once(again, 'close');
    expect(resets.every((code) => code === 'ECONNRESET')).toBe(true);
    await closeServer(server);
  });

  it('backpressure: write() returns false with a slow reader and memory stays bounded', async () => {
    const p = port();
    let serverSide: VsockSocket | undefined;
    const server = await listen(
      t,
      p,
      (s) => {
        serverSide = s;
      },
      { pauseOnConnect: true },
    );
    const c = dial(p);
    await once(c, 'connect');
    while (!serverSide) await new Promise((r) => setTimeout(r, 10));
    const chunk = Buffer.alloc(64 * 1024, 7);
    const rss0 = process.memoryUsage().rss;
    let accepted = 0;
    while (c.write(chunk)) {
      accepted += chunk.length;
      if (accepted > 256 * MiB) break;
    }
    expect(accepted).toBeLessThan(256 * MiB); // write() said "stop" long before
    // give the kernel time to fill its buffers, then check nothing grows while we respect 'drain'
    await new Promise((r) => setTimeout(r, 200));
    expect(c.writableLength).toBeLessThanOrEqual(c.writableHighWaterMark + chunk.length);
    const inFlight = accepted + chunk.length - c.writableLength;
    expect(inFlight).toBeLessThan(16 * MiB); // what the kernel took: its socket buffers
    expect(process.memoryUsage().rss - rss0).toBeLessThan(64 * MiB);
    // now a slow reader: drain must come and every byte must arrive
    const total = accepted + chunk.length;
    const received = new Promise<number>((resolve) => {
      let n = 0;
      serverSide!.on('data', (d: Buffer) => {
        n += d.length;
        serverSide!.pause();
        setTimeout(() => serverSide!.resume(), 1);
      });
      serverSide!.on('end', () => resolve(n));
    });
    serverSide!.resume();
    await once(c, 'drain');
    c.end();
    expect(await received).toBe(total);
    expect(c.bytesWritten).toBe(total);
    await closeServer(server);
  });

  it('setTimeout emits timeout on an idle socket (net semantics)', async () => {
    const p = port();
    const server = await listen(t, p, () => {});
    const c = dial(p, { timeout: 50 });
    await once(c, 'timeout');
    c.destroy();
    await closeServer(server);
  });

  describe('protocols over vsock', () => {
    let cert: Buffer;
    let key: Buffer;
    beforeAll(() => {
      const pair = selfSignedCert('enclave.vsock');
      if (!pair) throw new Error('the openssl CLI is needed in the VM (apt-get install openssl)');
      ({ cert, key } = pair);
    });

    it('tls over vsock (tls.connect({ socket }) and TLSSocket server side)', async () => {
      const p = port();
      const server = await listen(t, p, (s) => {
        const ts = new tls.TLSSocket(s, { isServer: true, cert, key });
        ts.pipe(ts);
      });
      const raw = dial(p);
      const c = tls.connect({ socket: raw, servername: 'enclave.vsock', ca: cert });
      await once(c, 'secureConnect');
      expect(c.authorized).toBe(true);
      const [sent, got] = await Promise.all([writePattern(c, 4 * MiB, 5), hashStream(c)]);
      expect(got).toEqual({ bytes: 4 * MiB, sha256: sent });
      await closeServer(server);
    });

    it('http over vsock: http.Server fed by the vsock server, http.request via the dialer', async () => {
      const p = port();
      const httpServer = http.createServer((req, res) => {
        res.end(`${req.method} ${req.url} from ${(req.socket as VsockSocket).remoteVsockAddress}`);
      });
      const server = await listen(t, p, (s) => httpServer.emit('connection', s));
      const agent = new http.Agent({ keepAlive: true });
      (agent as unknown as { createConnection: unknown }).createConnection = vsockDialer({
        cid: CID_LOCAL,
        port: p,
        transport: t,
      });
      const get = (path: string) =>
        new Promise<string>((resolve, reject) => {
          http
            .get({ host: 'enclave.vsock', path, agent }, async (res) =>
              resolve((await readAll(res as never)).toString()),
            )
            .on('error', reject);
        });
      expect(await get('/a')).toMatch(/^GET \/a from local\(1\):\d+$/);
      expect(await get('/b')).toMatch(/^GET \/b from local\(1\):\d+$/);
      agent.destroy();
      httpServer.close();
      await closeServer(server);
    });

    it('undici over vsock (Agent connect option), plain and https', async () => {
      const p = port();
      const httpServer = http.createServer((req, res) => res.end(`undici ${req.url}`));
      const server = await listen(t, p, (s) => httpServer.emit('connection', s));
      const agent = new Agent({
        connect: vsockDialer({ cid: CID_LOCAL, port: p, transport: t }) as never,
      });
      const res = await request('http://enclave.vsock/x', { dispatcher: agent });
      expect(await res.body.text()).toBe('undici /x');
      await agent.close();

      const ps = port();
      const httpsServer = http.createServer((req, res) => res.end(`secure ${req.url}`));
      const tlsServer = await listen(t, ps, (s) => {
        const ts = new tls.TLSSocket(s, { isServer: true, cert, key });
        httpsServer.emit('connection', ts);
      });
      const sagent = new Agent({
        connect: vsockDialer({
          cid: CID_LOCAL,
          port: ps,
          transport: t,
          tls: { ca: cert },
        }) as never,
      });
      const sres = await request('https://enclave.vsock/y', { dispatcher: sagent });
      expect(await sres.body.text()).toBe('secure /y');
      await sagent.close();
      httpServer.close();
      httpsServer.close();
      await closeServer(server);
      await closeServer(tlsServer);
    });

    it('PORT_ANY listener: the kernel picks the port', async () => {
      const server = await listen(t, PORT_ANY, (s) => s.end('any port'));
      const { port: p } = server.address()!;
      expect(p).not.toBe(PORT_ANY);
      expect((await readAll(dial(p))).toString()).toBe('any port');
      await closeServer(server);
    });
  });
});
