import { existsSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  CID_ANY,
  createEmulatedTransport,
  createServer,
  emulatedSocketPath,
  emulatedVmSocketPath,
  type VsockServer,
  type VsockSocket,
} from '@enclave-extras/vsock';
import { VhostVsockError } from './errors.js';
import { type Logger, silentLogger } from './logger.js';
import {
  closeFd,
  EAGAIN,
  unixAccept,
  unixConnect,
  unixListen,
  type Watch,
  watchReadable,
} from './native.js';
import { FrontEnd } from './vhost-user.js';
import { type HostConnector, type VhostVsockStats, VsockDevice } from './vsock.js';

/** Options of {@link createVhostVsockBackend}. */
export interface VhostVsockBackendOptions {
  /** The Unix socket the vhost-user front-end (QEMU `-chardev socket,path=...`) connects to. */
  socketPath: string;
  /** The guest's CID, answered to GET_CONFIG (3 and above). */
  guestCid: number;
  /**
   * The vsock emulation folder (`@enclave-extras/vsock`'s `createEmulatedTransport({ dir })`,
   * `ENCLAVE_EXTRAS_VSOCK_DIR`, `--vsock-dir`): guest connects reach its listeners, and the
   * backend listens there on `vm_<guestCid>.sock` for host dials to the guest.
   */
  vsockDir?: string;
  /** The CID the guest sees for host-side peers of connections the host opens (default 2). */
  hostCid?: number;
  /** Receive buffer advertised to the guest per connection, bytes (default 256 KiB). */
  bufAlloc?: number;
  /**
   * Most connections the guest may have open at once (default 1024): each holds a host socket
   * (an fd), so a guest flooding REQUESTs gets RST past this instead of exhausting the host's fds.
   * Host dials into the guest do not count.
   */
  maxConnections?: number;
  logger?: Logger;
  /** Aborting closes the backend (like `close()`). */
  signal?: AbortSignal;
}

/** A running vhost-user-vsock device backend. */
export interface VhostVsockBackend {
  /** The vhost-user socket path. */
  readonly socketPath: string;
  readonly guestCid: number;
  /** The per-VM socket in the vsock folder host dials to the guest go through, if any. */
  readonly vmSocketPath: string | undefined;
  /**
   * Serves host port `port` in-process: a guest connecting to (any host CID, `port`) reaches
   * `handler` with a `net.Socket` (a `VsockSocket` whose `remoteCid`/`remotePort` are the
   * guest's), before the vsock folder is looked at.
   */
  listen(port: number, handler: (socket: VsockSocket) => void): Promise<void>;
  /** Stops serving `port` in-process. */
  unlisten(port: number): Promise<void>;
  /** Counters (a live object). */
  readonly stats: Readonly<VhostVsockStats>;
  /** Stops listening, drops the front-end (device reset) and every connection. */
  close(): Promise<void>;
}

const MAX_UNIX_PATH = 107;
const REQUEST_TIMEOUT_MS = 10_000;
const MAX_LINE = 64;

function checkU32(v: unknown, name: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 0xffff_ffff) {
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_INVALID_ARG',
      `${name} must be an integer from ${min} to 4294967295 (got ${String(v)})`,
    );
  }
  return v;
}

/**
 * Starts a vhost-user-vsock device backend: listens on `socketPath` for the front-end (QEMU)
 * and bridges the guest's vsock to the vsock emulation folder and to in-process handlers.
 */
export async function createVhostVsockBackend(
  options: VhostVsockBackendOptions,
): Promise<VhostVsockBackend> {
  if (typeof options !== 'object' || options === null) {
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_INVALID_ARG',
      'options must be an object { socketPath, guestCid }',
    );
  }
  if (typeof options.socketPath !== 'string' || options.socketPath === '') {
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_INVALID_ARG',
      'options.socketPath must be a non-empty path',
    );
  }
  const guestCid = checkU32(options.guestCid, 'options.guestCid', 3);
  if (guestCid === CID_ANY) {
    throw new VhostVsockError(
      'ERR_VHOST_VSOCK_INVALID_ARG',
      'options.guestCid must not be CID_ANY (4294967295)',
    );
  }
  const hostCid = checkU32(options.hostCid ?? 2, 'options.hostCid');
  const bufAlloc = checkU32(options.bufAlloc ?? 256 * 1024, 'options.bufAlloc', 4096);
  const maxConnections = checkU32(options.maxConnections ?? 1024, 'options.maxConnections', 1);
  const logger = options.logger ?? silentLogger;
  const socketPath = resolve(options.socketPath);
  const vsockDir = options.vsockDir === undefined ? undefined : resolve(options.vsockDir);
  if (options.signal?.aborted) {
    throw new VhostVsockError('ABORT_ERR', 'createVhostVsockBackend: aborted before start', {
      cause: options.signal.reason,
    });
  }

  const stats: VhostVsockStats = {
    connections: 0,
    connectionsTotal: 0,
    bytesFromGuest: 0,
    bytesToGuest: 0,
    refused: 0,
    deviceResets: 0,
    frontEndConnected: false,
    guestViolations: 0,
  };

  // in-process listeners: an emulated vsock folder of our own, looked at before vsockDir
  let privateDir: string | undefined;
  const inProcess = new Map<number, VsockServer>();
  // handler sockets by `${guestPort}:${hostPort}`, so a reset reaches them as ECONNRESET
  const handlerSockets = new Map<string, VsockSocket>();
  const ownDir = () => {
    if (!privateDir) privateDir = mkdtempSync(join(tmpdir(), 'ee-vhost-'));
    return privateDir;
  };

  const connector: HostConnector = (guest, dst) => {
    let path: string | undefined;
    if (inProcess.has(dst.port) && privateDir) {
      path = emulatedSocketPath(privateDir, { cid: CID_ANY, port: dst.port });
    } else if (vsockDir) {
      const exact = emulatedSocketPath(vsockDir, dst);
      const any = emulatedSocketPath(vsockDir, { cid: CID_ANY, port: dst.port });
      path = existsSync(exact) ? exact : existsSync(any) ? any : undefined;
    }
    if (!path) return null;
    const socket = net.connect({ path, allowHalfOpen: true });
    if (inProcess.has(dst.port)) {
      const key = `${guest.port}:${dst.port}`;
      socket.once('close', () => {
        // our side went away before the handler finished writing: the guest reset (or the
        // device was reset); a half-open handler would otherwise wait forever
        const h = handlerSockets.get(key);
        if (h && !h.destroyed && !h.writableFinished) h.destroy(resetError(dst.port));
      });
    }
    const preamble = Buffer.alloc(12);
    preamble.write('EEv1', 0, 'latin1');
    preamble.writeUInt32LE(guest.cid, 4);
    preamble.writeUInt32LE(guest.port, 8);
    socket.write(preamble);
    return socket;
  };

  const device = new VsockDevice({
    guestCid,
    hostCid,
    bufAlloc,
    maxConnections,
    connector,
    logger,
    stats,
  });

  // the vhost-user socket (a stale file from a dead backend is replaced)
  let listenFd: number;
  try {
    listenFd = unixListen(socketPath);
  } catch (err) {
    if (!existsSync(socketPath)) throw err;
    try {
      closeFd(unixConnect(socketPath));
      throw new VhostVsockError(
        'ERR_VHOST_VSOCK_LISTEN',
        `${socketPath}: another backend is listening there; stop it or pick another socketPath`,
      );
    } catch (probe) {
      if (probe instanceof VhostVsockError && probe.code === 'ERR_VHOST_VSOCK_LISTEN') throw probe;
    }
    unlinkSync(socketPath);
    listenFd = unixListen(socketPath);
  }
  let frontEnd: FrontEnd | null = null;
  const acceptWatch: Watch = watchReadable(listenFd, () => {
    for (;;) {
      const fd = unixAccept(listenFd);
      if (fd === -EAGAIN || fd < 0) return;
      if (frontEnd) {
        logger.warn({ socketPath }, 'vhost-vsock: a second front-end connected; refused');
        closeFd(fd);
        continue;
      }
      logger.info({ socketPath }, 'vhost-vsock: front-end connected');
      stats.frontEndConnected = true;
      frontEnd = new FrontEnd(fd, device, guestCid, logger, () => {
        frontEnd = null;
        stats.frontEndConnected = false;
        if (device.running) device.reset('front-end disconnected');
      });
    }
  });

  // host -> guest: `CONNECT <port>\n` on the per-VM socket, answered `OK <hostport>\n`
  let vmServer: net.Server | undefined;
  let vmSocketPath: string | undefined;
  if (vsockDir) {
    vmSocketPath = emulatedVmSocketPath(vsockDir, guestCid);
    if (Buffer.byteLength(vmSocketPath) > MAX_UNIX_PATH) {
      throw new VhostVsockError(
        'ERR_VHOST_VSOCK_INVALID_ARG',
        `vsockDir ${vsockDir} is too long for Unix socket paths`,
      );
    }
    const path = vmSocketPath;
    vmServer = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) =>
      acceptHostClient(socket),
    );
    try {
      await listenUnix(vmServer, path);
    } catch (err) {
      acceptWatch.close();
      closeFd(listenFd);
      try {
        unlinkSync(socketPath);
      } catch {}
      throw err;
    }
  }

  function acceptHostClient(socket: net.Socket): void {
    let line = '';
    const timer = setTimeout(() => socket.destroy(), REQUEST_TIMEOUT_MS);
    timer.unref();
    const onReadable = () => {
      for (;;) {
        const b = socket.read(1) as Buffer | null;
        if (b === null) return;
        if (b[0] === 0x0a) break;
        line += b.toString('latin1');
        if (line.length > MAX_LINE) return fail('request line too long');
      }
      socket.off('readable', onReadable);
      clearTimeout(timer);
      const m = /^CONNECT (\d{1,10})\r?$/.exec(line);
      const port = m ? Number(m[1]) : Number.NaN;
      if (!m || port > 0xffff_ffff) return fail(`bad request ${JSON.stringify(line)}`);
      device.hostConnect(port, socket, (ok, hostPort) => {
        if (!ok) {
          logger.debug({ port }, 'vhost-vsock: guest refused a host connect');
          socket.destroy();
          return;
        }
        socket.write(`OK ${hostPort}\n`);
      });
    };
    const fail = (why: string) => {
      clearTimeout(timer);
      logger.warn({ reason: why }, 'vhost-vsock: host client dropped');
      socket.destroy();
    };
    socket.on('readable', onReadable);
    socket.once('error', () => clearTimeout(timer));
    socket.once('end', () => clearTimeout(timer));
    socket.resume();
    socket.pause();
  }

  let closed = false;
  const backend: VhostVsockBackend = {
    socketPath,
    guestCid,
    vmSocketPath,
    stats,
    async listen(port, handler) {
      checkU32(port, 'port');
      if (closed)
        throw new VhostVsockError('ERR_VHOST_VSOCK_CLOSED', 'listen: the backend is closed');
      if (inProcess.has(port)) {
        throw new VhostVsockError(
          'ERR_VHOST_VSOCK_PORT_IN_USE',
          `port ${port} is already served in-process; unlisten it first`,
        );
      }
      const transport = createEmulatedTransport({ dir: ownDir(), localCid: hostCid });
      const server = createServer({ transport, allowHalfOpen: true }, (socket) => {
        // a connection still reading its preamble when close() ran arrives after the sweep of
        // handlerSockets: nothing would ever close it (its peer is gone, it is half-open)
        if (closed) {
          socket.destroy();
          return;
        }
        const key = `${socket.remotePort}:${port}`;
        handlerSockets.set(key, socket);
        socket.once('close', () => {
          if (handlerSockets.get(key) === socket) handlerSockets.delete(key);
        });
        handler(socket);
      });
      inProcess.set(port, server);
      await new Promise<void>((ok, ko) => {
        server.once('error', (err) => {
          inProcess.delete(port);
          ko(err);
        });
        server.listen({ port, cid: CID_ANY }, () => ok());
      });
    },
    async unlisten(port) {
      const s = inProcess.get(port);
      if (!s) return;
      inProcess.delete(port);
      await new Promise<void>((ok) => s.close(() => ok()));
    },
    async close() {
      if (closed) return;
      closed = true;
      acceptWatch.close();
      closeFd(listenFd);
      try {
        unlinkSync(socketPath);
      } catch {}
      frontEnd?.close('backend closed');
      if (device.running) device.reset('backend closed');
      const waits: Promise<void>[] = [];
      if (vmServer) {
        const s = vmServer;
        waits.push(new Promise((ok) => s.close(() => ok())));
      }
      for (const h of handlerSockets.values()) h.destroy();
      handlerSockets.clear();
      for (const s of inProcess.values()) {
        waits.push(
          new Promise((ok) => {
            s.close(() => ok());
          }),
        );
      }
      inProcess.clear();
      await Promise.all(waits);
      if (privateDir) rmSync(privateDir, { recursive: true, force: true });
    },
  };
  options.signal?.addEventListener('abort', () => void backend.close(), { once: true });
  logger.info({ socketPath, guestCid, vsockDir, vmSocketPath }, 'vhost-vsock: backend listening');
  return backend;
}

function resetError(port: number): Error {
  return Object.assign(
    new Error(
      `read ECONNRESET: the guest reset the connection to host port ${port} (or the device was reset)`,
    ),
    {
      code: 'ECONNRESET',
      errno: -104,
      syscall: 'read',
    },
  );
}

async function listenUnix(server: net.Server, path: string): Promise<void> {
  const attempt = () =>
    new Promise<void>((ok, ko) => {
      server.once('error', ko);
      server.listen(path, () => {
        server.off('error', ko);
        ok();
      });
    });
  try {
    await attempt();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    // in use, or a stale file from a backend that died: probe it
    const alive = await new Promise<boolean>((ok) => {
      const p = net.connect({ path });
      p.once('connect', () => {
        p.destroy();
        ok(true);
      });
      p.once('error', () => ok(false));
    });
    if (alive) {
      throw new VhostVsockError(
        'ERR_VHOST_VSOCK_PORT_IN_USE',
        `${path}: another backend serves this guest CID in the vsock folder; stop it or use another CID`,
        { cause: err },
      );
    }
    unlinkSync(path);
    await attempt();
  }
}
