import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  createServer,
  type VsockServer,
  type VsockSocket,
  type VsockTransport,
} from '../src/index.js';

/** Starts a server; resolves once listening. */
export async function listen(
  transport: VsockTransport,
  port: number,
  onConnection: (s: VsockSocket) => void,
  options: { allowHalfOpen?: boolean; pauseOnConnect?: boolean; cid?: number } = {},
): Promise<VsockServer> {
  const server = createServer(
    {
      transport,
      allowHalfOpen: options.allowHalfOpen ?? false,
      pauseOnConnect: options.pauseOnConnect ?? false,
    },
    onConnection,
  );
  server.listen({ port, ...(options.cid === undefined ? {} : { cid: options.cid }) });
  await once(server, 'listening');
  return server;
}

export function closeServer(server: VsockServer): Promise<void> {
  return new Promise((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
}

/** Reads a stream to its end (without destroying it, unlike `for await`, so half-close works). */
export function readAll(stream: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

/** Writes `total` bytes of deterministic pseudo-random data in 64 KiB chunks with backpressure;
 * resolves with their sha256. */
export async function writePattern(stream: Duplex, total: number, seed = 1): Promise<string> {
  const hash = createHash('sha256');
  let x = seed >>> 0 || 1;
  let left = total;
  while (left > 0) {
    const n = Math.min(65536, left);
    const chunk = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      chunk.writeUInt32LE(x, i);
    }
    hash.update(chunk);
    left -= n;
    if (!stream.write(chunk)) await once(stream, 'drain');
  }
  stream.end();
  return hash.digest('hex');
}

/** Consumes a stream, resolving with the byte count and sha256 of what it read. */
export function hashStream(stream: Duplex): Promise<{ bytes: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    stream.on('data', (d: Buffer) => {
      bytes += d.length;
      hash.update(d);
    });
    stream.once('end', () => resolve({ bytes, sha256: hash.digest('hex') }));
    stream.once('error', reject);
  });
}

export function waitError(
  s: Duplex,
): Promise<Error & { code?: string; syscall?: string; address?: string }> {
  return new Promise((resolve) => s.once('error', resolve));
}

/** A throwaway self-signed P-256 certificate for `name` (openssl CLI); null when openssl is missing. */
export function selfSignedCert(name: string): { cert: Buffer; key: Buffer } | null {
  const dir = mkdtempSync(join(tmpdir(), 'eev-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        `/CN=${name}`,
        '-addext',
        `subjectAltName=DNS:${name}`,
      ],
      { stdio: 'ignore' },
    );
    return { cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')) };
  } catch {
    return null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
