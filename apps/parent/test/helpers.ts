// Real processes and sockets for the app tests of ee-parent and ee-enclave (apps/enclave/test re-exports
// this file): spawn the built CLI, read its JSON log lines.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { createEmulatedTransport, connect as vsockConnect } from '@enclave-extras/vsock';

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export interface Proc {
  child: ChildProcess;
  logs: LogLine[];
  stderr(): string;
  stdout(): string;
  waitLog(pred: (l: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnCli(cli: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [cli, ...args], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogLine[] = [];
  let err = '';
  let out = '';
  let partial = '';
  const waiters = new Set<() => void>();
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        // not a log line
      }
    }
    for (const w of waiters) w();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      for (const w of waiters) w();
      resolve({ code, signal });
    }),
  );
  return {
    child,
    logs,
    stderr: () => err,
    stdout: () => out,
    exited,
    waitLog(pred, what, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = logs.find(pred);
          if (hit) {
            done();
            resolve(hit);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            done();
            reject(new Error(`process exited before "${what}"; stderr:\n${err}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out waiting for "${what}"; stderr:\n${err}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** TCP server on 127.0.0.1 answering each connection with `sha256(all it received)` after the client's FIN. */
export async function hashServer(): Promise<{
  port: number;
  server: net.Server;
  close(): Promise<void>;
}> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    const h = createHash('sha256');
    s.on('data', (d) => h.update(d));
    s.on('end', () => s.end(h.digest('hex')));
  });
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, r));
  return {
    port: (server.address() as net.AddressInfo).port,
    server,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** TCP echo server on 127.0.0.1 (half-close passed through). */
export async function echoServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Opens an emulated vsock connection to (cid, port) in `dir`. */
export function vsockOpen(dir: string, cid: number, port: number): Promise<net.Socket> {
  const s = vsockConnect({
    cid,
    port,
    allowHalfOpen: true,
    transport: createEmulatedTransport({ dir }),
  });
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Sends `payload`, half-closes, reads everything until the peer's FIN. */
export function roundTrip(s: net.Socket, payload: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.once('end', () => resolve(Buffer.concat(chunks).toString()));
    s.once('error', reject);
    s.end(payload);
  });
}

/** Writes `text` and waits for the same number of bytes back (echo). */
export function echoOnce(s: net.Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.length >= text.length) {
        s.removeListener('data', onData);
        s.removeListener('error', reject);
        s.removeListener('close', onClose);
        resolve(got);
      }
    };
    const onClose = () => reject(new Error(`connection closed after ${got.length} bytes`));
    s.on('data', onData);
    s.once('error', reject);
    s.once('close', onClose);
    s.write(text);
  });
}

export function payload(n: number): Buffer {
  return randomBytes(n);
}

export async function httpGet(
  port: number,
  path: string,
): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
}
