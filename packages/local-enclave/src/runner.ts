// nitro-cli semantics on top of startEnclave(): run-enclave starts the enclave under a detached
// supervisor process (QEMU + vsock backend) and returns once it booted; describe-enclaves and
// terminate-enclave work from the run directory's state files.
import { spawn } from 'node:child_process';
import { closeSync, createReadStream, existsSync, openSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { newEnclaveId } from './enclave.js';
import { LocalEnclaveError, type LocalEnclaveErrorCode } from './errors.js';
import { distFile } from './paths.js';
import type { Accel } from './qemu.js';
import {
  defaultRunDir,
  type EnclaveState,
  ensureRunDir,
  readStates,
  removeState,
} from './state.js';

/** What `run-enclave` prints (nitro-cli's EnclaveRunInfo keys). */
export interface EnclaveRunInfo {
  EnclaveName: string;
  EnclaveID: string;
  ProcessID: number;
  EnclaveCID: number;
  NumberOfCPUs: number;
  CPUIDs: number[];
  MemoryMiB: number;
}

/** One entry of `describe-enclaves` (nitro-cli's EnclaveDescribeInfo keys). */
export interface EnclaveDescribeInfo extends EnclaveRunInfo {
  State: 'RUNNING' | 'TERMINATING';
  Flags: 'DEBUG_MODE' | 'NONE';
}

/** What `terminate-enclave` prints (nitro-cli's EnclaveTerminateInfo keys). */
export interface EnclaveTerminateInfo {
  EnclaveName: string;
  EnclaveID: string;
  Terminated: boolean;
}

export interface RunEnclaveOptions {
  eifPath: string;
  cpuCount: number;
  memoryMiB: number;
  enclaveCid: number;
  vsockDir: string;
  debugMode?: boolean;
  enclaveName?: string;
  qemu?: string;
  nsmVmTool?: string;
  accel?: Accel;
  parentRole?: string;
  parentId?: string;
  bootTimeoutMs?: number;
  /** State files, console and logs. Default: defaultRunDir(). */
  runDir?: string;
  /** The supervisor's log level (its JSON log is `<runDir>/<id>.log`). Default info. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

/** The serialisable configuration handed to the supervisor on its stdin. */
export interface SupervisorConfig extends RunEnclaveOptions {
  enclaveId: string;
  runDir: string;
}

export type SupervisorAnswer =
  | { ok: true; state: EnclaveState }
  | { ok: false; code: string; message: string; consoleTail?: string };

function toRunInfo(s: EnclaveState): EnclaveRunInfo {
  return {
    EnclaveName: s.EnclaveName,
    EnclaveID: s.EnclaveID,
    ProcessID: s.ProcessID,
    EnclaveCID: s.EnclaveCID,
    NumberOfCPUs: s.NumberOfCPUs,
    CPUIDs: s.CPUIDs,
    MemoryMiB: s.MemoryMiB,
  };
}

/**
 * Starts an enclave that keeps running after this call (and this process) returns, under a
 * detached supervisor, and resolves with nitro-cli's run-enclave JSON once it booted (heartbeat).
 */
export async function runEnclave(options: RunEnclaveOptions): Promise<EnclaveRunInfo> {
  const runDir = ensureRunDir(resolve(options.runDir ?? defaultRunDir()));
  const taken = readStates(runDir).find((s) => s.EnclaveCID === options.enclaveCid);
  if (taken) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_CID_IN_USE',
      `Enclave CID ${options.enclaveCid} is used by the running enclave ${taken.EnclaveID}: pick another --enclave-cid or terminate it.`,
      { field: 'enclaveCid', enclaveId: taken.EnclaveID },
    );
  }
  const supervisor = distFile('supervisor.js');
  if (!supervisor) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_INVALID_ARGUMENT',
      '@enclave-extras/local-enclave has no dist/supervisor.js: build the package (pnpm --filter @enclave-extras/local-enclave build).',
    );
  }
  const enclaveId = newEnclaveId(options.parentId);
  const config: SupervisorConfig = {
    ...options,
    eifPath: resolve(options.eifPath),
    vsockDir: resolve(options.vsockDir),
    runDir,
    enclaveId,
  };
  const logPath = join(runDir, `${enclaveId}.log`);
  const logFd = openSync(logPath, 'a', 0o600);
  const child = spawn(process.execPath, [supervisor], {
    detached: true,
    stdio: ['pipe', 'pipe', logFd],
  });
  closeSync(logFd);
  child.stdin?.end(JSON.stringify(config));
  const answer = await new Promise<SupervisorAnswer>((resolveAnswer, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        try {
          resolveAnswer(JSON.parse(out.slice(0, nl)) as SupervisorAnswer);
        } catch (err) {
          reject(err);
        }
      }
    });
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      reject(
        new LocalEnclaveError(
          'ERR_LOCAL_ENCLAVE_BOOT_FAILED',
          `The enclave supervisor exited (${code ?? signal}) before it reported; see ${logPath}.`,
          { path: logPath, enclaveId },
        ),
      ),
    );
  });
  child.stdout?.destroy();
  child.unref();
  if (!answer.ok) {
    throw new LocalEnclaveError(answer.code as LocalEnclaveErrorCode, answer.message, {
      enclaveId,
      path: logPath,
      ...(answer.consoleTail ? { consoleTail: answer.consoleTail } : {}),
    });
  }
  return toRunInfo(answer.state);
}

/** nitro-cli's describe-enclaves: the running local enclaves of `runDir`. */
export function describeEnclaves(options: { runDir?: string } = {}): EnclaveDescribeInfo[] {
  return readStates(resolve(options.runDir ?? defaultRunDir())).map((s) => ({
    ...toRunInfo(s),
    State: s.State,
    Flags: s.Flags,
  }));
}

/** The full state (with the local fields: console path, QEMU pid...) of one running enclave. */
export function enclaveState(enclaveId: string, options: { runDir?: string } = {}): EnclaveState {
  const runDir = resolve(options.runDir ?? defaultRunDir());
  const s = readStates(runDir).find((x) => x.EnclaveID === enclaveId);
  if (!s) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_NOT_FOUND',
      `No running enclave ${enclaveId} in ${runDir} (ee-parent describe-enclaves lists them).`,
      { enclaveId, path: runDir },
    );
  }
  return s;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** nitro-cli's terminate-enclave: stops the enclave (QEMU) and its supervisor. */
export async function terminateEnclave(
  enclaveId: string,
  options: { runDir?: string } = {},
): Promise<EnclaveTerminateInfo> {
  const runDir = resolve(options.runDir ?? defaultRunDir());
  const s = enclaveState(enclaveId, { runDir });
  try {
    process.kill(s.ProcessID, 'SIGTERM');
  } catch {
    // already gone
  }
  if (!(await waitGone(s.ProcessID, 15_000))) {
    for (const pid of [s.local.qemuPid, s.ProcessID]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await waitGone(s.ProcessID, 5000);
  }
  removeState(runDir, enclaveId);
  return { EnclaveName: s.EnclaveName, EnclaveID: s.EnclaveID, Terminated: true };
}

/** terminate-enclave --all. */
export async function terminateAllEnclaves(
  options: { runDir?: string } = {},
): Promise<EnclaveTerminateInfo[]> {
  const out: EnclaveTerminateInfo[] = [];
  for (const s of describeEnclaves(options)) out.push(await terminateEnclave(s.EnclaveID, options));
  return out;
}

/**
 * Streams an enclave's console (from its start) to `onData` until the enclave stops or `signal`
 * aborts (nitro-cli's console / --attach-console). An enclave that already stopped has its
 * console replayed from the run directory.
 */
export async function followConsole(
  enclaveId: string,
  onData: (chunk: Buffer) => void,
  options: { runDir?: string; signal?: AbortSignal } = {},
): Promise<void> {
  const runDir = resolve(options.runDir ?? defaultRunDir());
  const running = readStates(runDir).find((x) => x.EnclaveID === enclaveId);
  const path = running?.local.consolePath ?? join(runDir, `${enclaveId}.console`);
  if (!running && !existsSync(path)) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_NOT_FOUND',
      `No enclave ${enclaveId} in ${runDir} (ee-parent describe-enclaves lists the running ones).`,
      { enclaveId, path: runDir },
    );
  }
  let offset = 0;
  const drain = async (): Promise<void> => {
    if (!existsSync(path)) return;
    const size = statSync(path).size;
    if (size <= offset) return;
    const stream = createReadStream(path, { start: offset, end: size - 1 });
    for await (const chunk of stream) onData(chunk as Buffer);
    offset = size;
  };
  while (running && !options.signal?.aborted) {
    await drain();
    if (!alive(running.ProcessID)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await drain();
}
