import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage, VolumeError } from './errors.js';
import { run } from './exec.js';

const NFS_PROGRAM = 100003;

/**
 * Sends one ONC RPC NULL call (NFS program, version 4, AUTH_NONE) over TCP and resolves when an
 * accepted reply with the same xid arrives. Through the proxies a TCP connect alone proves
 * nothing (the enclave-side route accepts before the parent answers): only an RPC reply does.
 */
export function probeNfs(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const xid = randomBytes(4);
    const body = Buffer.alloc(40);
    xid.copy(body, 0);
    body.writeUInt32BE(0, 4); // CALL
    body.writeUInt32BE(2, 8); // RPC version 2
    body.writeUInt32BE(NFS_PROGRAM, 12);
    body.writeUInt32BE(4, 16); // NFS version 4
    body.writeUInt32BE(0, 20); // procedure NULL
    // cred AUTH_NONE (flavor 0, length 0), verf AUTH_NONE: bytes 24..39 stay zero
    const mark = Buffer.alloc(4);
    mark.writeUInt32BE((0x80000000 | body.length) >>> 0, 0);
    const sock = net.connect({ host, port });
    let got = Buffer.alloc(0);
    const timer = setTimeout(
      () => done(new Error(`no RPC reply within ${timeoutMs} ms`)),
      timeoutMs,
    );
    let settled = false;
    const done = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    sock.once('connect', () => sock.write(Buffer.concat([mark, body])));
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length < 4 + 24) return;
      if (!got.subarray(4, 8).equals(xid)) return done(new Error('RPC reply with a foreign xid'));
      const type = got.readUInt32BE(8);
      const replyStat = got.readUInt32BE(12);
      if (type !== 1 || replyStat !== 0) return done(new Error('RPC call denied'));
      // accepted reply: verf (flavor, len, body) then accept_stat
      const verfLen = got.readUInt32BE(20);
      const at = 24 + verfLen;
      if (got.length < at + 4) return;
      const acceptStat = got.readUInt32BE(at);
      if (acceptStat !== 0)
        return done(new Error(`RPC accept_stat ${acceptStat} (NFSv4 not served?)`));
      done();
    });
    sock.once('error', (e) => done(e));
    sock.once('close', () => done(new Error('connection closed before an RPC reply')));
  });
}

export interface WaitForServerOptions {
  host: string;
  port: number;
  /** Give up after this long (ms). */
  readyTimeoutMs: number;
  /** Per-attempt reply timeout (ms). Default 3000. */
  attemptTimeoutMs?: number;
  /** Pause between attempts (ms). Default 500. */
  retryDelayMs?: number;
  signal?: AbortSignal;
  volume?: string;
  onRetry?: (attempt: number, err: unknown) => void;
}

/** Retries `probeNfs` until the server answers or the deadline passes (ERR_VOLUME_SERVER_UNREACHABLE). */
export async function waitForNfsServer(o: WaitForServerOptions): Promise<void> {
  const deadline = Date.now() + o.readyTimeoutMs;
  const address = `${o.host}:${o.port}`;
  let attempt = 0;
  let last: unknown;
  for (;;) {
    if (o.signal?.aborted)
      throw new VolumeError(
        'ERR_VOLUME_ABORTED',
        `waiting for the NFS server ${address} was aborted`,
        {
          cause: o.signal.reason,
          path: address,
          ...(o.volume ? { volume: o.volume } : {}),
        },
      );
    attempt++;
    try {
      await probeNfs(
        o.host,
        o.port,
        Math.min(o.attemptTimeoutMs ?? 3000, Math.max(100, deadline - Date.now())),
      );
      return;
    } catch (err) {
      last = err;
      o.onRetry?.(attempt, err);
    }
    if (Date.now() + (o.retryDelayMs ?? 500) >= deadline) break;
    await sleep(o.retryDelayMs ?? 500, undefined, o.signal ? { signal: o.signal } : {}).catch(
      () => {},
    );
  }
  throw new VolumeError(
    'ERR_VOLUME_SERVER_UNREACHABLE',
    `NFS server ${address} did not answer an RPC NULL call within ${o.readyTimeoutMs} ms (${attempt} attempts; last: ${errorMessage(last)}). Check that the parent exports the directory (ee-parent nfs-exports), that its NFS server runs, and that the route to it is up.`,
    { cause: last, path: address, ...(o.volume ? { volume: o.volume } : {}) },
  );
}

export interface NfsMountOptions {
  host: string;
  port: number;
  /** Exported path on the server (NFSv4 pseudo-root relative), e.g. `/` or `/enclave`. */
  export: string;
  target: string;
  /** `4.2` (default), `4.1` or `4.0`. */
  vers: '4.0' | '4.1' | '4.2';
  /** NFS timeo in deciseconds (default 600 = 60 s, the Linux default for TCP). */
  timeo: number;
  /** retransmissions before a "server not responding" message (hard mounts keep retrying). */
  retrans: number;
  /** Extra mount options, appended verbatim (`noatime`, `rsize=1048576` ...). */
  extra: readonly string[];
  volume?: string;
  signal?: AbortSignal;
}

/** The `-o` option string for an NFS mount (exported for tests and for the docs). */
export function nfsMountOptionString(o: Omit<NfsMountOptions, 'target' | 'export'>): string {
  const opts = [
    `vers=${o.vers}`,
    'proto=tcp',
    `port=${o.port}`,
    'hard',
    `timeo=${o.timeo}`,
    `retrans=${o.retrans}`,
    `addr=${o.host}`,
    `clientaddr=${o.host.includes(':') ? '::1' : '127.0.0.1'}`,
    'nosuid',
    'nodev',
    ...o.extra,
  ];
  return opts.join(',');
}

/**
 * Mounts the export with the kernel's NFS client. `mount -i` calls mount(2) with the text
 * options directly (no mount.nfs helper needed in the enclave image; busybox or util-linux).
 */
export async function mountNfs(o: NfsMountOptions): Promise<void> {
  const source = `${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.export}`;
  const r = await run(
    'mount',
    ['-i', '-t', 'nfs4', '-o', nfsMountOptionString(o), source, o.target],
    {
      ...(o.signal ? { signal: o.signal } : {}),
    },
  );
  if (r.code === 0) return;
  const text = (r.stderr || r.stdout).trim();
  throw new VolumeError(
    r.spawnError?.code === 'ENOENT' ? 'ERR_VOLUME_UNSUPPORTED' : 'ERR_VOLUME_MOUNT_FAILED',
    r.spawnError?.code === 'ENOENT'
      ? 'the mount program is missing: put util-linux (or busybox) mount in the enclave image'
      : `mounting NFS ${source} on ${o.target} failed: ${text || `exit ${r.code}`}. Check the export path (ee-parent nfs-exports) and that the kernel has NFSv4 (CONFIG_NFS_V4).`,
    {
      ...(o.volume ? { volume: o.volume } : {}),
      path: o.target,
      syscall: 'mount',
      cause: r.spawnError ?? text,
    },
  );
}

/** `sync -f` then `umount`. Throws ERR_VOLUME_UNMOUNT_FAILED (busy ...) leaving the mount as is. */
export async function syncAndUnmount(target: string, volume?: string): Promise<void> {
  await run('sync', ['-f', target]);
  const r = await run('umount', [target]);
  if (r.code === 0) return;
  throw new VolumeError(
    'ERR_VOLUME_UNMOUNT_FAILED',
    `umount ${target} failed: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}. A process may still have files open there.`,
    { ...(volume ? { volume } : {}), path: target, syscall: 'umount', cause: r.stderr },
  );
}
