// The run directory: one `<enclave id>.json` per running local enclave (written by its
// supervisor), its console log `<id>.console` and supervisor log `<id>.log`.
import {
  accessSync,
  constants,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalEnclaveError } from './errors.js';

/** Environment variable overriding the run directory. */
export const RUN_DIR_ENV = 'ENCLAVE_EXTRAS_RUN_DIR';

/** The state of one running local enclave (file `<runDir>/<EnclaveID>.json`). */
export interface EnclaveState {
  EnclaveName: string;
  EnclaveID: string;
  /** The supervisor's process id (it owns QEMU and the vsock backend), as nitro-cli's enclave process. */
  ProcessID: number;
  EnclaveCID: number;
  NumberOfCPUs: number;
  CPUIDs: number[];
  MemoryMiB: number;
  State: 'RUNNING' | 'TERMINATING';
  Flags: 'DEBUG_MODE' | 'NONE';
  /** Local additions (not in nitro-cli's output). */
  local: {
    eifPath: string;
    qemuPid: number;
    vsockDir: string;
    consolePath: string;
    logPath: string;
    startedAt: string;
    bootMs: number;
  };
}

/** `ENCLAVE_EXTRAS_RUN_DIR`, else /run/enclave-extras/enclaves (root), else a per-user folder. */
export function defaultRunDir(): string {
  const fromEnv = process.env[RUN_DIR_ENV];
  if (fromEnv) return fromEnv;
  try {
    accessSync('/run', constants.W_OK);
    return '/run/enclave-extras/enclaves';
  } catch {
    const base =
      process.env.XDG_RUNTIME_DIR ??
      join(tmpdir(), `enclave-extras-${process.getuid?.() ?? 'user'}`);
    return join(base, 'enclave-extras', 'enclaves');
  }
}

export function ensureRunDir(dir: string): string {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_STATE',
      `The run directory ${dir} cannot be created; pass --run-dir or set ${RUN_DIR_ENV}.`,
      {
        path: dir,
        cause: err,
      },
    );
  }
  return dir;
}

export function statePath(dir: string, id: string): string {
  return join(dir, `${id}.json`);
}

export function writeState(dir: string, state: EnclaveState): void {
  const p = statePath(dir, state.EnclaveID);
  try {
    writeFileSync(`${p}.tmp`, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    renameSync(`${p}.tmp`, p);
  } catch (err) {
    throw new LocalEnclaveError('ERR_LOCAL_ENCLAVE_STATE', `Cannot write ${p}.`, {
      path: p,
      cause: err,
    });
  }
}

export function removeState(dir: string, id: string): void {
  rmSync(statePath(dir, id), { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Running enclaves in `dir`; state files whose supervisor is gone are removed. */
export function readStates(dir: string): EnclaveState[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_STATE',
      `Cannot read the run directory ${dir}.`,
      { path: dir, cause: err },
    );
  }
  const out: EnclaveState[] = [];
  for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
    const p = join(dir, name);
    let s: EnclaveState;
    try {
      s = JSON.parse(readFileSync(p, 'utf8')) as EnclaveState;
    } catch {
      continue; // being written, or not ours
    }
    if (typeof s.ProcessID !== 'number' || !alive(s.ProcessID)) {
      rmSync(p, { force: true });
      continue;
    }
    out.push(s);
  }
  return out;
}
