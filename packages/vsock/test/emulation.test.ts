import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CID_ANY,
  CID_PARENT,
  connect,
  createEmulatedTransport,
  createServer,
  defaultTransport,
  emulatedSocketPath,
  kernelTransport,
  localCid,
  PORT_ANY,
  VsockError,
  VsockSocket,
  vsockDialer,
} from '../src/index.js';
import {
  closeServer,
  hashStream,
  listen,
  readAll,
  selfSignedCert,
  waitError,
  writePattern,
} from './helpers.js';

let dir: string;
let enclave: ReturnType<typeof createEmulatedTransport>;
let parent: ReturnType<typeof createEmulatedTransport>;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'eev-'));
  enclave = createEmulatedTransport({ dir, localCid: 16 });
  parent = createEmulatedTransport({ dir, localCid: CID_PARENT });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('emulated transport', () => {
  it('echoes and reports vsock addresses on both ends', async () => {
    const seen: Array<[number | undefined, number | undefined]> = [];
    const server = await listen(parent, 8000, (s) => {
      seen.push([s.remoteCid, s.localCid]);
      s.pipe(s);
    });
    expect(server.address()).toEqual({ cid: CID_ANY, port: 8000 });
    expect(existsSync(join(dir, 'any_8000.sock'))).toBe(true);
    const c = connect({ cid: CID_PARENT, port: 8000, transport: enclave });
    expect(c).toBeInstanceOf(VsockSocket);
    expect(c).toBeInstanceOf(net.Socket);
    expect(c.transportKind).toBe('emulated');
    await once(c, 'connect');
    expect(c.remoteVsockAddress).toBe('vm(3):8000');
    expect(c.localCid).toBe(16);
    expect(c.localPort).toBeGreaterThanOrEqual(1024);
    c.end('hello vsock');
    expect((await readAll(c)).toString()).toBe('hello vsock');
    expect(seen).toEqual([[16, CID_PARENT]]);
    await closeServer(server);
    expect(existsSync(join(dir, 'any_8000.sock'))).toBe(false);
  });

  it('a listener on an exact cid wins over CID_ANY; other cids reach the CID_ANY one', async () => {
    const exact = await listen(parent, 8001, (s) => s.end('exact'), { cid: 7 });
    const any = await listen(parent, 8001, (s) => s.end('any'));
    expect(emulatedSocketPath(dir, { cid: 7, port: 8001 })).toBe(join(dir, '7_8001.sock'));
    const a = connect({ cid: 7, port: 8001, transport: enclave });
    expect((await readAll(a)).toString()).toBe('exact');
    const b = connect({ cid: 9, port: 8001, transport: enclave });
    expect((await readAll(b)).toString()).toBe('any');
    await closeServer(exact);
    await closeServer(any);
  });

  it('moves 8 MiB hash-checked both ways with 64 KiB writes', async () => {
    const server = await listen(parent, 8002, (s) => s.pipe(s));
    const c = connect({ cid: CID_PARENT, port: 8002, transport: enclave });
    const [sent, got] = await Promise.all([writePattern(c, 8 << 20, 7), hashStream(c)]);
    expect(got).toEqual({ bytes: 8 << 20, sha256: sent });
    await closeServer(server);
  });

  it('half-close: the client ends, the server still answers', async () => {
    const server = await listen(
      parent,
      8003,
      async (s) => {
        const body = await readAll(s);
        s.end(`got ${body.length}`);
      },
      { allowHalfOpen: true },
    );
    const c = connect({ cid: 3, port: 8003, transport: enclave, allowHalfOpen: true });
    c.end(Buffer.alloc(1000));
    expect((await readAll(c)).toString()).toBe('got 1000');
    await closeServer(server);
  });

  it('connect with no listener fails with ECONNREFUSED naming the vsock address', async () => {
    const c = connect({ cid: 42, port: 9999, transport: enclave });
    const err = await waitError(c);
    expect(err).toBeInstanceOf(VsockError);
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.syscall).toBe('connect');
    expect(err.address).toBe('vm(42):9999');
    expect(err.message).toMatch(/vm\(42\):9999/);
    expect((err as VsockError).cause).toBeDefined();
  });

  it('EADDRINUSE when the port is taken, and a stale socket file is replaced', async () => {
    const a = await listen(parent, 8004, (s) => s.end());
    const b = createServer({ transport: enclave });
    b.listen({ port: 8004 });
    const [err] = (await once(b, 'error')) as [VsockError];
    expect(err.code).toBe('EADDRINUSE');
    expect(err.address).toBe('any(4294967295):8004');
    await closeServer(a);
    // a socket file left by a process that crashed (SIGKILL: nobody unlinks it)
    const stale = join(dir, 'any_8005.sock');
    const crash = `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`;
    spawnSync(process.execPath, ['-e', crash]);
    expect(existsSync(stale)).toBe(true);
    const c = await listen(parent, 8005, (s) => s.end('fresh'));
    expect((await readAll(connect({ cid: 3, port: 8005, transport: enclave }))).toString()).toBe(
      'fresh',
    );
    await closeServer(c);
  });

  it('a stale socket file is replaced at once: a connect right after listen() reaches the new server', async () => {
    // as with kernel vsock, listen() has bound and listens when it returns, stale file or not
    const stale = join(dir, 'any_8006.sock');
    const crash = `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`;
    spawnSync(process.execPath, ['-e', crash]);
    expect(existsSync(stale)).toBe(true);
    const server = createServer({ transport: parent }, (s) => s.end('fresh'));
    server.listen({ port: 8006 });
    const reply = readAll(connect({ cid: CID_PARENT, port: 8006, transport: enclave }));
    expect((await reply).toString()).toBe('fresh');
    await closeServer(server);
    // a live listener is still EADDRINUSE, also decided at once
    const live = await listen(parent, 8007, (s) => s.end());
    const second = createServer({ transport: enclave });
    second.listen({ port: 8007 });
    const [err] = (await once(second, 'error')) as [VsockError];
    expect(err.code).toBe('EADDRINUSE');
    await closeServer(live);
  });

  it('PORT_ANY picks a free port that clients can reach', async () => {
    const server = await listen(parent, PORT_ANY, (s) => s.end('picked'));
    const { port } = server.address()!;
    expect(port).toBeGreaterThanOrEqual(49152);
    expect((await readAll(connect({ cid: 3, port, transport: enclave }))).toString()).toBe(
      'picked',
    );
    await closeServer(server);
  });

  it('close() stops accepting but lets open sockets finish', async () => {
    const accepted: VsockSocket[] = [];
    const server = await listen(parent, 8006, (s) => accepted.push(s));
    const c = connect({ cid: 3, port: 8006, transport: enclave });
    await once(c, 'connect');
    while (accepted.length === 0) await new Promise((r) => setTimeout(r, 5));
    let closed = false;
    const closing = new Promise<void>((resolve) =>
      server.close(() => {
        closed = true;
        resolve();
      }),
    );
    expect(server.listening).toBe(false);
    const refused = connect({ cid: 3, port: 8006, transport: enclave });
    expect((await waitError(refused)).code).toBe('ECONNREFUSED');
    expect(closed).toBe(false);
    accepted[0]!.end('bye');
    expect((await readAll(c)).toString()).toBe('bye');
    await closing;
    expect(closed).toBe(true);
  });

  it('abort signal destroys a socket with ABORT_ERR', async () => {
    const server = await listen(parent, 8007, () => {});
    const ac = new AbortController();
    const c = connect({ cid: 3, port: 8007, transport: enclave, signal: ac.signal });
    await once(c, 'connect');
    ac.abort();
    const err = await waitError(c);
    expect((err as VsockError).code).toBe('ABORT_ERR');
    await closeServer(server);
  });

  it('serves http through the connection-forwarding pattern, dialled with http and undici', async () => {
    const httpServer = http.createServer((req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end(`${req.method} ${req.url} via ${(req.socket as VsockSocket).remoteVsockAddress}`);
    });
    const server = await listen(parent, 8008, (s) => httpServer.emit('connection', s));
    const dialer = vsockDialer({ cid: 3, port: 8008, transport: enclave });

    const body = await new Promise<string>((resolve, reject) => {
      const req = http.request(
        { host: 'parent.vsock', path: '/hello', createConnection: dialer as never },
        async (res) => resolve((await readAll(res as never)).toString()),
      );
      req.on('error', reject);
      req.end();
    });
    expect(body).toMatch(/^GET \/hello via vm\(16\):\d+$/);

    const agent = new Agent({ connect: dialer as never });
    const res = await request('http://parent.vsock/u', { dispatcher: agent });
    expect(await res.body.text()).toMatch(/^GET \/u via vm\(16\):\d+$/);
    await agent.close();

    const s = await dialer.dial();
    expect(s.remoteVsockAddress).toBe('vm(3):8008');
    s.destroy();
    httpServer.close();
    await closeServer(server);
  });

  it('defaultTransport() is the kernel unless ENCLAVE_EXTRAS_VSOCK_DIR is set', () => {
    const saved = process.env.ENCLAVE_EXTRAS_VSOCK_DIR;
    try {
      delete process.env.ENCLAVE_EXTRAS_VSOCK_DIR;
      expect(defaultTransport()).toBe(kernelTransport);
      process.env.ENCLAVE_EXTRAS_VSOCK_DIR = '';
      expect(defaultTransport()).toBe(kernelTransport);
      process.env.ENCLAVE_EXTRAS_VSOCK_DIR = dir;
      const t = defaultTransport();
      expect(t.kind).toBe('emulated');
      expect(t.description).toContain(dir);
      expect(defaultTransport()).toBe(t);
      expect(localCid()).toBe(1);
    } finally {
      if (saved === undefined) delete process.env.ENCLAVE_EXTRAS_VSOCK_DIR;
      else process.env.ENCLAVE_EXTRAS_VSOCK_DIR = saved;
    }
  });

  it('runs tls over an emulated stream', async () => {
    const tls = await import('node:tls');
    const pair = selfSignedCert('parent.vsock');
    if (!pair) {
      console.log('tls over emulation skipped: the openssl CLI is not available');
      return;
    }
    const { cert, key } = pair;
    const server = await listen(parent, 8009, (s) => {
      const t = new tls.TLSSocket(s, { isServer: true, cert, key });
      t.pipe(t);
    });
    const raw = connect({ cid: 3, port: 8009, transport: enclave });
    const t = tls.connect({ socket: raw, servername: 'parent.vsock', ca: cert });
    await once(t, 'secureConnect');
    t.end('over tls');
    expect((await readAll(t)).toString()).toBe('over tls');
    await closeServer(server);
  });

  it('vsockDialer speaks https when undici asks for it, and loads node:tls only then', async () => {
    const pair = selfSignedCert('parent.vsock');
    if (!pair) {
      console.log('https dialer skipped: the openssl CLI is not available');
      return;
    }
    const dist = new URL('../dist/index.js', import.meta.url).pathname;
    const child = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        [
          `const v = await import(${JSON.stringify(dist)});`,
          "const tlsLoaded = () => process.moduleLoadList.includes('NativeModule tls');",
          'const before = tlsLoaded();',
          `const dir = ${JSON.stringify(join(dir, 'https'))};`,
          'const parent = v.createEmulatedTransport({ dir, localCid: 3 });',
          'const enclave = v.createEmulatedTransport({ dir, localCid: 16 });',
          "const { createServer } = await import('node:tls');",
          `const tlsServer = createServer({ cert: process.env.CERT, key: process.env.KEY }, (t) => t.end('hello over https ' + t.servername));`,
          "const server = v.createServer({ transport: parent }, (s) => tlsServer.emit('connection', s));",
          'await new Promise((r) => server.listen({ port: 8010 }, r));',
          'const dialer = v.vsockDialer({ cid: 3, port: 8010, transport: enclave, tls: { ca: process.env.CERT } });',
          "const s = dialer({ protocol: 'https:', hostname: 'parent.vsock' });",
          "let body = ''; s.on('data', (d) => { body += d; });",
          "await new Promise((r, j) => { s.once('end', r); s.once('error', j); });",
          'console.log(JSON.stringify({ before, after: tlsLoaded(), body }));',
          'server.close();',
        ].join('\n'),
      ],
      {
        encoding: 'utf8',
        timeout: 30_000,
        env: { ...process.env, CERT: pair.cert.toString(), KEY: pair.key.toString() },
      },
    );
    expect(child.stderr).toBe('');
    expect(JSON.parse(child.stdout)).toEqual({
      before: false,
      after: true,
      body: 'hello over https parent.vsock',
    });
  });
});
