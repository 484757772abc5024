import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { verifyDocument } from '@enclave-extras/attestation';
import { afterAll, describe, expect, it } from 'vitest';
import {
  NsmClient,
  NsmError,
  NsmSimulator,
  serveSimulator,
  socketTransport,
} from '../src/index.js';
import { cbor, rejectsWith } from './helpers.js';

function frame(body: Uint8Array): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

/** Sends bytes on a fresh connection; resolves with everything received until the first reply or close. */
function rawExchange(path: string, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let got = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.write(bytes);
  });
}

const tmp = mkdtempSync(join(tmpdir(), 'nsm-daemon-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('simulator daemon', () => {
  it('shares one simulated enclave between clients', async () => {
    const path = join(tmp, 'shared.sock');
    const server = await serveSimulator({ socketPath: path });
    expect(server.address).toBe(`unix:${path}`);
    const a = await NsmClient.open({ transport: await socketTransport(path) });
    const b = await NsmClient.open({ transport: await socketTransport(path) });
    const v = await a.extendPcr(16, Uint8Array.of(1));
    expect((await b.describePcr(16)).data).toEqual(v);
    await b.lockPcr(16);
    await rejectsWith(a.extendPcr(16, Uint8Array.of(2)), 'ERR_NSM_READ_ONLY_INDEX');
    await a.close();
    await b.close();
    await server.close();
    expect(existsSync(path)).toBe(false);
  });

  it('passes transport errors through as NsmError with their code', async () => {
    const path = join(tmp, 'err.sock');
    const sim = new NsmSimulator();
    const server = await serveSimulator({ socketPath: path, simulator: sim });
    expect(server.simulator).toBe(sim);
    const t = await socketTransport(path);
    // the client checks size first; a raw frame bypassing it is answered with an error frame
    await rejectsWith(t.request(new Uint8Array(5000)), 'ERR_NSM_INPUT_TOO_LARGE');
    await rejectsWith(t.request(new Uint8Array(0)), 'ERR_NSM_INVALID_ARGUMENT');
    expect((await t.request(cbor('GetRandom'))).length).toBeGreaterThan(256);
    await t.close();
    await server.close();
  });

  it('rejects later requests once the daemon is gone, with a sticky error', async () => {
    const path = join(tmp, 'gone.sock');
    const server = await serveSimulator({ socketPath: path });
    const t = await socketTransport(path);
    await server.close();
    const first = await t.request(cbor('GetRandom')).then(
      () => undefined,
      (e: NsmError) => e,
    );
    expect(first).toBeInstanceOf(NsmError);
    // depending on when the close is seen: the daemon closed it, or the write hit a dead socket
    expect(['ERR_NSM_CLOSED', 'EPIPE', 'ECONNRESET']).toContain(first?.code);
    await rejectsWith(t.request(cbor('GetRandom')), first!.code);
    await t.close();
  });

  it('connect errors keep their errno code, syscall and address', async () => {
    const missing = join(tmp, 'missing.sock');
    const e = await rejectsWith(socketTransport(missing), 'ENOENT');
    expect(e.syscall).toBe('connect');
    expect(e.address).toBe(`unix:${missing}`);
    expect(e.message).toContain('nsm-simulator --socket');
    const notSock = join(tmp, 'plain-file');
    writeFileSync(notSock, '');
    await rejectsWith(socketTransport(notSock), 'ECONNREFUSED');
  });

  it('replaces a stale socket file but refuses a live one (EADDRINUSE)', async () => {
    const path = join(tmp, 'stale.sock');
    // a daemon that crashed (SIGKILL) leaves its socket file behind
    const script = `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`;
    const dead = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => dead.stdout?.once('data', r));
    dead.kill('SIGKILL');
    await new Promise((r) => dead.once('exit', r));
    expect(existsSync(path)).toBe(true);
    const server = await serveSimulator({ socketPath: path });
    await rejectsWith(serveSimulator({ socketPath: path }), 'EADDRINUSE');
    const c = await NsmClient.open({ transport: await socketTransport(path) });
    expect((await c.describeNsm()).maxPcrs).toBe(32);
    await c.close();
    await server.close();
  });

  it('logs through the injected pino-compatible logger', async () => {
    const lines: { level: string; msg?: string }[] = [];
    const log = (level: string) => (_obj: object, msg?: string) => lines.push({ level, msg });
    const logger = {
      debug: log('debug'),
      info: log('info'),
      warn: log('warn'),
      error: log('error'),
    };
    const path = join(tmp, 'log.sock');
    const server = await serveSimulator({ socketPath: path, logger });
    // a raw client sending an oversize request frame gets an error frame (and a warn line)
    const reply = await rawExchange(path, frame(new Uint8Array(5000)));
    expect(reply.readUInt8(4)).toBe(1);
    expect(JSON.parse(reply.subarray(5).toString())).toMatchObject({
      code: 'ERR_NSM_INPUT_TOO_LARGE',
    });
    // a frame length over 1 MiB closes the connection
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(0x7fffffff);
    expect((await rawExchange(path, huge)).length).toBe(0);
    await server.close();
    expect(lines.some((l) => l.level === 'info' && l.msg === 'nsm simulator listening')).toBe(true);
    expect(lines.some((l) => l.level === 'debug' && l.msg?.includes('client connected'))).toBe(
      true,
    );
    expect(lines.some((l) => l.level === 'warn')).toBe(true);
  });
});

describe('nsm-simulator bin', () => {
  const bin = resolve(import.meta.dirname, '../dist/bin.js');

  function run(args: string[]): ChildProcess {
    return spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  it('serves a simulator other processes can use, with a persistent dev root', async () => {
    expect(existsSync(bin), 'build the package first').toBe(true);
    const path = join(tmp, 'bin.sock');
    const state = join(tmp, 'bin-state');
    const child = run(['--socket', path, '--state-dir', state, '--module-id', 'i-42-enc42']);
    let stderr = '';
    child.stderr?.on('data', (d) => {
      stderr += String(d);
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    for (let i = 0; i < 100 && !stderr.includes('listening'); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(stderr).toContain('nsm simulator listening');
    const c = await NsmClient.open({ transport: await socketTransport(path) });
    expect((await c.describeNsm()).moduleId).toBe('i-42-enc42');
    const doc = await c.getAttestationDocument({ nonce: Uint8Array.of(7) });
    await c.close();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(path)).toBe(false);

    const printed = run(['--print-root', '--state-dir', state]);
    let pem = '';
    printed.stdout?.on('data', (d) => {
      pem += String(d);
    });
    await new Promise((r) => printed.on('exit', r));
    expect(pem).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(verifyDocument(doc, { roots: [pem] }).moduleId).toBe('i-42-enc42');
  });

  function runSync(args: string[]) {
    return spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 20_000 });
  }

  it('exits 2 on usage errors, one line nsm-simulator: ERR_USAGE: <message>', async () => {
    for (const [args, message] of [
      [['--pcr', 'nope'], /--pcr nope: expected N=HEX/],
      [[], /--socket PATH is required/],
      [['--bogus'], /Unknown option '--bogus'/],
    ] as const) {
      const r = runSync([...args]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/^nsm-simulator: ERR_USAGE: .*\n$/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });

  it('--help fits in 80 columns', () => {
    const r = runSync(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^nsm-simulator: /);
    expect(r.stdout.split('\n').filter((l) => l.length > 80)).toEqual([]);
  });

  it('--version prints the package version', () => {
    const r = runSync(['--version']);
    expect(r.status).toBe(0);
    const pkg = JSON.parse(readFileSync(resolve(import.meta.dirname, '../package.json'), 'utf8'));
    expect(r.stdout).toBe(`${pkg.version}\n`);
  });
});
