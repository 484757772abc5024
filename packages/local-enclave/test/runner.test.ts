// The run directory behind describe-enclaves / terminate-enclave, without QEMU: real processes
// stand in for supervisors (their pid is what the state file points at).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  describeEnclaves,
  type EnclaveState,
  followConsole,
  isLocalEnclaveError,
  runEnclave,
  terminateEnclave,
} from '../src/index.js';

const tmp = mkdtempSync(join(tmpdir(), 'ee-run-'));
const children: ReturnType<typeof spawn>[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

function state(id: string, pid: number, cid: number): EnclaveState {
  return {
    EnclaveName: 'app',
    EnclaveID: id,
    ProcessID: pid,
    EnclaveCID: cid,
    NumberOfCPUs: 1,
    CPUIDs: [0],
    MemoryMiB: 256,
    State: 'RUNNING',
    Flags: 'NONE',
    local: {
      eifPath: '/x.eif',
      qemuPid: pid,
      vsockDir: tmp,
      consolePath: join(tmp, `${id}.console`),
      logPath: join(tmp, `${id}.log`),
      startedAt: new Date(0).toISOString(),
      bootMs: 1,
    },
  };
}

function sleeper(): ReturnType<typeof spawn> {
  const c = spawn('sleep', ['60'], { stdio: 'ignore' });
  children.push(c);
  return c;
}

describe('run directory', () => {
  it('describe-enclaves lists live supervisors in nitro-cli keys and drops stale state files', () => {
    const dir = join(tmp, 'a');
    const live = sleeper();
    freshDir(dir);
    writeFileSync(
      join(dir, 'i-local-enc01.json'),
      JSON.stringify(state('i-local-enc01', live.pid as number, 16)),
    );
    writeFileSync(
      join(dir, 'i-local-enc02.json'),
      JSON.stringify(state('i-local-enc02', 2 ** 22 + 12345, 17)),
    );
    const list = describeEnclaves({ runDir: dir });
    expect(list).toEqual([
      {
        EnclaveName: 'app',
        EnclaveID: 'i-local-enc01',
        ProcessID: live.pid,
        EnclaveCID: 16,
        NumberOfCPUs: 1,
        CPUIDs: [0],
        MemoryMiB: 256,
        State: 'RUNNING',
        Flags: 'NONE',
      },
    ]);
    expect(readdirSync(dir)).toEqual(['i-local-enc01.json']);
  });

  it('terminate-enclave stops the supervisor and removes its state; an unknown id is NOT_FOUND', async () => {
    const dir = join(tmp, 'b');
    freshDir(dir);
    const live = sleeper();
    const gone = new Promise((r) => live.once('exit', r));
    writeFileSync(
      join(dir, 'i-local-enc03.json'),
      JSON.stringify(state('i-local-enc03', live.pid as number, 18)),
    );
    expect(await terminateEnclave('i-local-enc03', { runDir: dir })).toEqual({
      EnclaveName: 'app',
      EnclaveID: 'i-local-enc03',
      Terminated: true,
    });
    await gone;
    expect(existsSync(join(dir, 'i-local-enc03.json'))).toBe(false);
    await expect(terminateEnclave('i-local-enc03', { runDir: dir })).rejects.toMatchObject({
      code: 'ERR_LOCAL_ENCLAVE_NOT_FOUND',
      message: expect.stringContaining('describe-enclaves'),
    });
  });

  it('run-enclave refuses a CID that a running enclave holds, before starting anything', async () => {
    const dir = join(tmp, 'c');
    freshDir(dir);
    const live = sleeper();
    writeFileSync(
      join(dir, 'i-local-enc04.json'),
      JSON.stringify(state('i-local-enc04', live.pid as number, 20)),
    );
    try {
      await runEnclave({
        eifPath: '/x.eif',
        cpuCount: 1,
        memoryMiB: 256,
        enclaveCid: 20,
        vsockDir: tmp,
        runDir: dir,
      });
      throw new Error('expected CID_IN_USE');
    } catch (err) {
      expect(isLocalEnclaveError(err, 'ERR_LOCAL_ENCLAVE_CID_IN_USE'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/CID 20 is used by the running enclave i-local-enc04/);
    }
    expect(readdirSync(dir)).toEqual(['i-local-enc04.json']);
  });
  it('followConsole replays the console of an enclave that already stopped; unknown ids are NOT_FOUND', async () => {
    const dir = join(tmp, 'd');
    freshDir(dir);
    writeFileSync(join(dir, 'i-local-enc05.console'), 'ee-init: started\nhello\n');
    const chunks: Buffer[] = [];
    await followConsole('i-local-enc05', (c) => chunks.push(c), { runDir: dir });
    expect(Buffer.concat(chunks).toString()).toBe('ee-init: started\nhello\n');
    await expect(followConsole('i-local-enc06', () => {}, { runDir: dir })).rejects.toMatchObject({
      code: 'ERR_LOCAL_ENCLAVE_NOT_FOUND',
    });
  });
});

function freshDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
}
