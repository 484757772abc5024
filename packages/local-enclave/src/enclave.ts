// One local enclave, in this process: the vhost-user-vsock backend, the boot heartbeat and QEMU.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, rmSync, statSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Duplex } from 'node:stream';
import { loadDefaultBackend, type VsockBackend, type VsockBackendFactory } from './backend.js';
import { LocalEnclaveError, type Logger, silentLogger } from './errors.js';
import { type Accel, pickAccel, qemuArgs, resolveQemu } from './qemu.js';

/** The vsock port the enclave's init sends its boot heartbeat to (on the parent, CID 3). */
export const HEARTBEAT_PORT = 9000;
/** The heartbeat byte (sent by the init, echoed by the parent). */
export const HEARTBEAT_BYTE = 0xb7;

export interface StartEnclaveOptions {
  /** The enclave image. */
  eifPath: string;
  /** vCPUs (nitro-cli --cpu-count). */
  cpuCount: number;
  /** Memory in MiB (nitro-cli --memory). */
  memoryMiB: number;
  /** The enclave's CID (>= 4). */
  enclaveCid: number;
  /** The vsock emulation folder the enclave's vsock is bridged to (ee-parent --vsock-dir). */
  vsockDir: string;
  /** nitro-cli's --debug-mode: recorded in Flags ("DEBUG_MODE"); the console is always captured. */
  debugMode?: boolean;
  /** Default: the EIF's file name without `.eif`. */
  enclaveName?: string;
  /** Default: `i-<parentId or local>-enc<16 hex digits>`. */
  enclaveId?: string;
  /** qemu-system-x86_64 with the nitro-enclave machine; see resolveQemu(). */
  qemu?: string;
  /** nsm-vm tool used to find a QEMU when none is given. */
  nsmVmTool?: string;
  /** Default `auto`: KVM when usable, else TCG. */
  accel?: Accel;
  /** The machine's parent-role (sets PCR3 as Nitro does with the parent's IAM role ARN). */
  parentRole?: string;
  /** The machine's parent-id (sets PCR4 as Nitro does with the parent's instance id). */
  parentId?: string;
  /** No heartbeat within this: boot failure. Default: 60 s + 10 s per 16 MiB of EIF (TCG decompresses slowly). */
  bootTimeoutMs?: number;
  /** Folder for the vhost-user socket. Default: a fresh folder under the OS temp dir. */
  workDir?: string;
  /** Also write the console to this file. */
  consolePath?: string;
  /** Called with each chunk of console output. */
  onConsole?: (chunk: Buffer) => void;
  /** The vhost-user-vsock backend; default @enclave-extras/vhost-vsock. */
  createBackend?: VsockBackendFactory;
  logger?: Logger;
  signal?: AbortSignal;
}

/** A booted local enclave (its init answered the heartbeat). */
export interface LocalEnclave {
  readonly enclaveId: string;
  readonly enclaveName: string;
  readonly enclaveCid: number;
  readonly cpuCount: number;
  readonly cpuIds: number[];
  readonly memoryMiB: number;
  readonly debugMode: boolean;
  /** QEMU's process id. */
  readonly qemuPid: number;
  /** Milliseconds from QEMU's start to the heartbeat. */
  readonly bootMs: number;
  /** Resolves when QEMU exits (the enclave stopped, or was terminated). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last 64 KiB of console output. */
  consoleTail(): string;
  /** Stops QEMU (SIGTERM, then SIGKILL after 5 s) and the backend. Idempotent. */
  terminate(): Promise<void>;
}

const CONSOLE_KEEP = 64 * 1024;
/** How long a QEMU that exited may keep its stdio open (a child holding it) before we stop reading. */
const STDIO_DRAIN_MS = 2000;

/** A fresh enclave id in nitro-cli's shape (`i-...-enc<16 hex>`). */
export function newEnclaveId(parentId?: string): string {
  const instance = parentId && /^i-[0-9a-z]+$/.test(parentId) ? parentId : 'i-local';
  return `${instance}-enc${randomBytes(8).toString('hex')}`;
}

function checkInt(field: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_INVALID_ARGUMENT',
      `${field} ${value} must be an integer from ${min} to ${max}.`,
      { field },
    );
  }
}

function lastLines(text: string, n: number): string {
  return text.split('\n').slice(-n).join('\n');
}

/**
 * Boots `eifPath` under QEMU's nitro-enclave machine and resolves once its init sent the boot
 * heartbeat (vsock CID 3 port 9000, 0xB7, answered here). Rejects with
 * ERR_LOCAL_ENCLAVE_BOOT_FAILED (console tail in the message) when QEMU exits first or no
 * heartbeat comes within `bootTimeoutMs`; nothing keeps running then.
 */
export async function startEnclave(options: StartEnclaveOptions): Promise<LocalEnclave> {
  const log = options.logger ?? silentLogger;
  checkInt('cpuCount', options.cpuCount, 1, 64);
  checkInt('memoryMiB', options.memoryMiB, 64, 1024 * 1024);
  checkInt('enclaveCid', options.enclaveCid, 4, 0xfffffffe);
  if (!options.vsockDir) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_INVALID_ARGUMENT',
      'vsockDir is required: the enclave vsock is bridged to the vsock emulation folder that ee-parent uses (--vsock-dir).',
      { field: 'vsockDir' },
    );
  }
  if (typeof options.eifPath !== 'string' || options.eifPath === '') {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_INVALID_ARGUMENT',
      'eifPath: give the EIF to boot.',
      {
        field: 'eifPath',
      },
    );
  }
  const eifPath = resolve(options.eifPath);
  let eifSize: number;
  try {
    eifSize = statSync(eifPath).size;
  } catch (err) {
    throw new LocalEnclaveError('ERR_LOCAL_ENCLAVE_EIF', `The EIF ${eifPath} cannot be read.`, {
      path: eifPath,
      cause: err,
    });
  }
  const qemu = resolveQemu({
    ...(options.qemu ? { qemu: options.qemu } : {}),
    ...(options.nsmVmTool ? { nsmVmTool: options.nsmVmTool } : {}),
  });
  const createBackend = options.createBackend ?? (await loadDefaultBackend());
  const enclaveId = options.enclaveId ?? newEnclaveId(options.parentId);
  const enclaveName = options.enclaveName ?? basename(eifPath).replace(/\.eif$/, '');
  const accel = pickAccel(options.accel ?? 'auto');
  const bootTimeoutMs = options.bootTimeoutMs ?? 60_000 + Math.ceil(eifSize / (16 << 20)) * 10_000;

  const ownWorkDir = options.workDir === undefined;
  const workDir = options.workDir ?? join(tmpdir(), `ee-enclave-${randomBytes(4).toString('hex')}`);
  mkdirSync(workDir, { recursive: true, mode: 0o700 });
  const vhostSocket = join(workDir, `${enclaveId}.vhost.sock`);
  rmSync(vhostSocket, { force: true });

  let consoleText = '';
  let consoleFile: WriteStream | undefined;
  if (options.consolePath) {
    mkdirSync(dirname(options.consolePath), { recursive: true });
    consoleFile = createWriteStream(options.consolePath, { flags: 'a' });
  }
  const onConsole = (chunk: Buffer): void => {
    consoleText = (consoleText + chunk.toString('utf8')).slice(-CONSOLE_KEEP);
    consoleFile?.write(chunk);
    options.onConsole?.(chunk);
  };

  let backend: VsockBackend | undefined;
  let heartbeatDone: (() => void) | undefined;
  const heartbeat = new Promise<void>((r) => {
    heartbeatDone = r;
  });

  const cleanupFiles = (): void => {
    rmSync(vhostSocket, { force: true });
    if (ownWorkDir) rmSync(workDir, { recursive: true, force: true });
  };

  try {
    backend = await createBackend({
      socketPath: vhostSocket,
      guestCid: options.enclaveCid,
      vsockDir: options.vsockDir,
      logger: log,
    });
  } catch (err) {
    consoleFile?.end();
    cleanupFiles();
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_BACKEND',
      `The vhost-user-vsock backend for CID ${options.enclaveCid} did not start on ${vhostSocket}: ${(err as Error).message}`,
      { path: vhostSocket, cause: err },
    );
  }
  const heartbeatHandler = (socket: Duplex): void => {
    socket.on('error', (err) =>
      log.warn({ enclaveId, err: err.message }, 'heartbeat connection error'),
    );
    socket.once('data', (d: Buffer) => {
      if (d[0] !== HEARTBEAT_BYTE) {
        log.warn({ enclaveId, byte: d[0] }, 'heartbeat: unexpected byte');
        socket.destroy();
        return;
      }
      socket.end(Buffer.from([HEARTBEAT_BYTE]));
      heartbeatDone?.();
    });
  };
  await backend.listen(HEARTBEAT_PORT, heartbeatHandler);

  const args = qemuArgs({
    eifPath,
    enclaveId,
    cpuCount: options.cpuCount,
    memoryMiB: options.memoryMiB,
    vhostSocket,
    accel,
    ...(options.parentRole ? { parentRole: options.parentRole } : {}),
    ...(options.parentId ? { parentId: options.parentId } : {}),
  });
  log.info({ enclaveId, qemu, args }, 'starting QEMU');
  const started = Date.now();
  const child: ChildProcess = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stdout?.on('data', onConsole);
  // QEMU's own messages (e.g. a virtio device that reports an error and stops answering) go to
  // the log as they come, not only into a boot failure: a stall after boot is otherwise silent.
  let partial = '';
  child.stderr?.on('data', (d: Buffer) => {
    const text = d.toString();
    stderr = (stderr + text).slice(-16 * 1024);
    const lines = (partial + text).split('\n');
    partial = (lines.pop() ?? '').slice(-4096);
    for (const line of lines) if (line.trim()) log.warn({ enclaveId, qemu: line }, 'QEMU says');
  });
  const proc = child;
  // 'exit' can come before the last console bytes were read (the init prints its FATAL line and
  // powers off at once): settle on 'close', which Node emits once stdout and stderr ended too.
  // Something else holding them open (a child of QEMU's) gets STDIO_DRAIN_MS, then they are cut.
  proc.once('exit', () => {
    setTimeout(() => {
      proc.stdout?.destroy();
      proc.stderr?.destroy();
    }, STDIO_DRAIN_MS).unref();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => {
    proc.once('close', (code, signal) => r({ code, signal }));
    proc.once('error', () => r({ code: null, signal: null }));
  });
  let spawnError: Error | undefined;
  proc.once('error', (err) => {
    spawnError = err;
  });

  let closed = false;
  const terminate = async (): Promise<void> => {
    if (closed) {
      await exited;
      return;
    }
    closed = true;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    try {
      await backend?.close();
    } catch (err) {
      log.warn({ enclaveId, err: (err as Error).message }, 'closing the vsock backend failed');
    }
    await new Promise<void>((r) => (consoleFile ? consoleFile.end(r) : r()));
    cleanupFiles();
  };
  // When QEMU stops by itself (the enclave's command ended), release the backend too.
  void exited.then(() => {
    if (!closed) void terminate();
  });

  const boot = await Promise.race([
    heartbeat.then(() => 'ok' as const),
    exited.then(() => 'exited' as const),
    new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), bootTimeoutMs).unref()),
    new Promise<'aborted'>((r) => {
      if (options.signal?.aborted) r('aborted');
      options.signal?.addEventListener('abort', () => r('aborted'), { once: true });
    }),
  ]);
  if (boot !== 'ok') {
    await terminate();
    const tail = lastLines(consoleText.replaceAll('\r', ''), 30);
    const fatal = /^ee-init: FATAL: .*$/m.exec(tail)?.[0];
    if (boot === 'aborted') {
      throw new LocalEnclaveError(
        'ERR_LOCAL_ENCLAVE_ABORTED',
        `Starting enclave ${enclaveId} was cancelled.`,
        {
          enclaveId,
          consoleTail: tail,
          cause: options.signal?.reason,
        },
      );
    }
    const what =
      boot === 'timeout'
        ? `no boot heartbeat (vsock port ${HEARTBEAT_PORT}) within ${bootTimeoutMs} ms`
        : spawnError
          ? `QEMU ${qemu} could not start: ${spawnError.message}`
          : `QEMU exited (${proc.exitCode ?? proc.signalCode}) before the boot heartbeat${stderr.trim() ? `: ${lastLines(stderr.trim(), 5).replace(/\.+$/, '')}` : ''}`;
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_BOOT_FAILED',
      `Enclave ${enclaveId} (${eifPath}) failed to boot: ${what}.${fatal ? ` The init said: "${fatal}".` : ''} The image needs an init that sends the heartbeat (this package's init, or nitro-cli's) and a kernel with virtio-mmio command-line devices and vsock built in. Console tail:\n${tail || '(no console output)'}`,
      { enclaveId, path: eifPath, consoleTail: tail, ...(spawnError ? { cause: spawnError } : {}) },
    );
  }
  const bootMs = Date.now() - started;
  log.info({ enclaveId, bootMs }, 'enclave booted (heartbeat answered)');
  return {
    enclaveId,
    enclaveName,
    enclaveCid: options.enclaveCid,
    cpuCount: options.cpuCount,
    cpuIds: Array.from({ length: options.cpuCount }, (_, i) => i),
    memoryMiB: options.memoryMiB,
    debugMode: options.debugMode === true,
    qemuPid: proc.pid ?? 0,
    bootMs,
    exited,
    consoleTail: () => consoleText.replaceAll('\r', ''),
    terminate,
  };
}
