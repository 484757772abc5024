// The detached process behind one `run-enclave`: reads its configuration (JSON) on stdin, boots
// the enclave (vsock backend + QEMU), answers one JSON line on stdout, writes the state file and
// keeps QEMU and the backend running until the enclave stops or it gets SIGTERM/SIGINT.
// Its own log (JSON lines) goes to stderr, which run-enclave points at `<runDir>/<id>.log`.
import { join } from 'node:path';
import { startEnclave } from './enclave.js';
import type { Logger } from './errors.js';
import type { SupervisorAnswer, SupervisorConfig } from './runner.js';
import { type EnclaveState, removeState, writeState } from './state.js';

const LEVELS = { debug: 20, info: 30, warn: 40, error: 50 } as const;

function jsonLogger(level: keyof typeof LEVELS): Logger {
  const min = LEVELS[level];
  const at =
    (name: keyof typeof LEVELS) =>
    (obj: object, msg?: string): void => {
      if (LEVELS[name] < min) return;
      process.stderr.write(
        `${JSON.stringify({ level: LEVELS[name], time: Date.now(), pid: process.pid, name: 'local-enclave', ...obj, msg })}\n`,
      );
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

async function readStdin(): Promise<string> {
  let s = '';
  for await (const chunk of process.stdin) s += chunk;
  return s;
}

function answer(a: SupervisorAnswer): void {
  process.stdout.write(`${JSON.stringify(a)}\n`);
}

async function main(): Promise<void> {
  const cfg = JSON.parse(await readStdin()) as SupervisorConfig;
  const log = jsonLogger(cfg.logLevel ?? 'info');
  const consolePath = join(cfg.runDir, `${cfg.enclaveId}.console`);
  const logPath = join(cfg.runDir, `${cfg.enclaveId}.log`);
  process.on('SIGHUP', () => {});
  let enclave: Awaited<ReturnType<typeof startEnclave>>;
  try {
    enclave = await startEnclave({ ...cfg, consolePath, workDir: cfg.runDir, logger: log });
  } catch (err) {
    const e = err as { code?: string; message?: string; details?: { consoleTail?: string } };
    log.error({ code: e.code, err: e.message }, 'enclave failed to start');
    answer({
      ok: false,
      code: e.code ?? 'ERR_LOCAL_ENCLAVE_BOOT_FAILED',
      message: e.message ?? String(err),
      ...(e.details?.consoleTail ? { consoleTail: e.details.consoleTail } : {}),
    });
    process.exit(1);
  }
  const state: EnclaveState = {
    EnclaveName: enclave.enclaveName,
    EnclaveID: enclave.enclaveId,
    ProcessID: process.pid,
    EnclaveCID: enclave.enclaveCid,
    NumberOfCPUs: enclave.cpuCount,
    CPUIDs: enclave.cpuIds,
    MemoryMiB: enclave.memoryMiB,
    State: 'RUNNING',
    Flags: enclave.debugMode ? 'DEBUG_MODE' : 'NONE',
    local: {
      eifPath: cfg.eifPath,
      qemuPid: enclave.qemuPid,
      vsockDir: cfg.vsockDir,
      consolePath,
      logPath,
      startedAt: new Date().toISOString(),
      bootMs: enclave.bootMs,
    },
  };
  writeState(cfg.runDir, state);
  answer({ ok: true, state });
  let stopping = false;
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ enclaveId: enclave.enclaveId, why }, 'terminating the enclave');
    try {
      writeState(cfg.runDir, { ...state, State: 'TERMINATING' });
    } catch {
      // the run dir went away: still stop
    }
    await enclave.terminate();
    removeState(cfg.runDir, enclave.enclaveId);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  const end = await enclave.exited;
  log.info({ enclaveId: enclave.enclaveId, ...end }, 'the enclave stopped');
  await stop('the enclave stopped');
}

main().catch((err: unknown) => {
  process.stderr.write(
    `${JSON.stringify({ level: 50, msg: 'supervisor failed', err: String((err as Error)?.stack ?? err) })}\n`,
  );
  try {
    answer({
      ok: false,
      code: 'ERR_LOCAL_ENCLAVE_BOOT_FAILED',
      message: String((err as Error)?.message ?? err),
    });
  } catch {
    // stdout gone
  }
  process.exit(1);
});
