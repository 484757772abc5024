// Orphan reaping by the enclave runner, with real processes: in this test process as a child
// subreaper, and as PID 1 of a fresh PID namespace.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import type { Logger } from '@enclave-extras/proxy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AppExit, enclaveConfigSchema, runEnclave } from '../src/index.js';
import {
  isNodeChild,
  loadReaperNative,
  type ReapedChild,
  setChildSubreaper,
  startReaper,
} from '../src/reaper.js';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist', 'index.js');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-reaper-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
}

/** Every process in /proc: `pid (comm) state ppid ...` (comm may hold spaces and parens). */
function processes(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.push({ pid: Number(name), state: rest[0] ?? '', ppid: Number(rest[1]) });
  }
  return out;
}

function zombiesOf(ppid: number): number[] {
  return processes()
    .filter((p) => p.ppid === ppid && p.state === 'Z')
    .map((p) => p.pid);
}

interface Logged {
  level: keyof Logger;
  obj: Record<string, unknown>;
  msg?: string;
}

function captureLogger(): { logger: Logger; lines: Logged[] } {
  const lines: Logged[] = [];
  const at =
    (level: keyof Logger) =>
    (obj: object, msg?: string): void => {
      lines.push({ level, obj: obj as Record<string, unknown>, ...(msg ? { msg } : {}) });
    };
  return {
    lines,
    logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') },
  };
}

const reapedOf = (lines: Logged[]) =>
  lines.filter((l) => l.msg === 'reaped orphan').map((l) => l.obj);

function readPids(file: string): number[] {
  return readFileSync(file, 'utf8').trim().split(/\s+/).map(Number);
}

/** runEnclave without network setup or routes, failing clearly instead of hanging. */
async function runShell(
  script: string,
  reapOrphans: boolean | 'auto',
  logger: Logger,
): Promise<AppExit> {
  const config = enclaveConfigSchema.parse({ network: { setup: false }, reapOrphans });
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error("the app's exit never arrived (was it reaped behind Node's back?)")),
      15_000,
    );
  });
  try {
    return await Promise.race([
      runEnclave(config, { command: 'sh', args: ['-c', script], logger }),
      hung,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Shell that returns once every pid listed in `file` (`count` of them) has exited: a zombie or
 * already reaped, read from /proc. Apps wait on this, not on a fixed sleep, so a loaded machine
 * cannot let the app exit before its orphans.
 */
/**
 * A shell command, run in the background by a subshell that then exits, that first waits until
 * it is this process's orphan (its parent is this process, the subreaper) and then runs `then`.
 * Without the wait, a command that ends at once (`kill -9 $$`) can finish while the subshell
 * still runs; the subshell then reaps it itself and it never reaches the reaper: the "orphan
 * missing from the reaped log, none left a zombie" that this suite saw under load.
 */
function orphan(then: string): string {
  return `sh -c 'while [ "$(cut -d" " -f4 /proc/$$/stat)" != ${process.pid} ]; do sleep 0.01; done; ${then}'`;
}

/** A pid file that is new for every attempt (a retried test must not read the last one's pids). */
let pidFiles = 0;
const pidFile = (name: string) => join(dir, `${name}-${++pidFiles}`);

function waitOrphans(file: string, count: number): string {
  return `while [ "$(wc -l < ${file})" -lt ${count} ]; do sleep 0.01; done; for p in $(cat ${file}); do while [ -e /proc/$p ] && [ "$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null)" != Z ]; do sleep 0.01; done; done`;
}

describe('enclave config reapOrphans', () => {
  it("defaults to 'auto' and takes true/false/'auto' only", () => {
    expect(enclaveConfigSchema.parse({}).reapOrphans).toBe('auto');
    for (const v of [true, false, 'auto'] as const) {
      expect(enclaveConfigSchema.parse({ reapOrphans: v }).reapOrphans).toBe(v);
    }
    expect(enclaveConfigSchema.safeParse({ reapOrphans: 'yes' }).success).toBe(false);
  });
});

// Under heavy load these used to come back with one orphan missing from the reaped log while none
// was left a zombie: the self-killing orphan died before its parent subshell exited and the
// subshell reaped it (see orphan()). Retried still (a third failure fails), each attempt with
// its own pid file.
describe.skipIf(process.platform !== 'linux')(
  'reaping as a child subreaper (this process)',
  { retry: 2 },
  () => {
    beforeAll(() => {
      // waitid(P_ALL) sees every child of the process: in a worker thread it would also see the
      // children of the other test files' event loops. Vitest's default pool is forks.
      expect(isMainThread, 'run this file in the forks pool').toBe(true);
    });

    it('reaps orphans while the app runs, and Node still gets the app exit status', async () => {
      const pids = pidFile('orphans-1');
      const { logger, lines } = captureLogger();
      const exit = await runShell(
        `(${orphan('sleep 0.2')} & echo $! >> ${pids}); (${orphan('sleep 0.3')} & echo $! >> ${pids}); (${orphan('kill -9 $$')} & echo $! >> ${pids}); ${waitOrphans(pids, 3)}; exit 7`,
        true,
        logger,
      );
      expect(exit).toEqual({ status: 7, code: 7, signal: null });
      const orphans = readPids(pids);
      expect(orphans).toHaveLength(3);
      expect(zombiesOf(process.pid)).toEqual([]);
      const reaped = reapedOf(lines);
      expect(reaped.map((r) => r.pid).sort()).toEqual([...orphans].sort());
      expect(reaped.find((r) => r.pid === orphans[0])).toEqual({
        pid: orphans[0],
        status: 0,
        code: 0,
        signal: null,
      });
      expect(reaped.find((r) => r.pid === orphans[2])).toEqual({
        pid: orphans[2],
        status: 137,
        code: null,
        signal: 'SIGKILL',
      });
      expect(lines.filter((l) => l.level === 'debug' && l.msg === 'reaped orphan')).toHaveLength(3);
      // runEnclave cleared the subreaper flag it set (PR_GET_CHILD_SUBREAPER).
      const native = await loadReaperNative();
      const flag = Buffer.alloc(4, 0xff);
      expect(native.prctl(37, 'void *', flag)).toBe(0);
      expect(flag.readInt32LE(0)).toBe(0);
    });

    it("never reaps Node's own exited child, even when a sweep runs before libuv's", async () => {
      const native = await loadReaperNative();
      expect(setChildSubreaper(native, true)).toBe(0);
      const pidFile = join(dir, 'orphan-sync');
      const reaped: ReapedChild[] = [];
      let appPid = -1;
      const reaper = startReaper({
        native,
        isOwned: (pid) => pid === appPid,
        onReap: (c) => reaped.push(c),
      });
      try {
        const app = spawn('sh', ['-c', `(sleep 0.05 & echo $! > ${pidFile}); exit 9`]);
        appPid = app.pid ?? -1;
        const exited = new Promise<number | null>((resolve) => app.once('exit', resolve));
        // Block the event loop (so libuv cannot reap anything) until the app and its orphan
        // are both zombies, then sweep synchronously: a waitpid(-1) would take the app here.
        const nap = new Int32Array(new SharedArrayBuffer(4));
        const deadline = Date.now() + 10_000;
        let orphan = 0;
        for (;;) {
          if (!orphan && existsSync(pidFile)) orphan = Number(readFileSync(pidFile, 'utf8')) || 0;
          const zombies = zombiesOf(process.pid);
          if (orphan && zombies.includes(orphan) && zombies.includes(appPid)) break;
          if (Date.now() > deadline) throw new Error('the app and its orphan did not both exit');
          Atomics.wait(nap, 0, 0, 10);
        }
        reaper.sweep();
        expect(zombiesOf(process.pid)).toContain(appPid);
        expect(await exited).toBe(9);
        for (let i = 0; i < 200 && reaper.reaped < 1; i++)
          await new Promise((r) => setTimeout(r, 10));
        expect(reaped).toEqual([{ pid: orphan, status: 0, code: 0, signal: null }]);
        expect(zombiesOf(process.pid)).toEqual([]);
      } finally {
        reaper.stop();
        setChildSubreaper(native, false);
      }
    });

    it("leaves every child_process child to libuv, not only the app (teardown's umount, cryptsetup ...)", async () => {
      // runEnclave's predicate names only the app's pid; before, that was all the reaper left
      // alone, and this sweep took the teardown command's exit status from Node, whose 'exit'
      // then never fired (volumes stayed mounted until the drain timeout).
      const native = await loadReaperNative();
      const appPid = -1; // the app has exited; teardown runs its commands
      const reaper = startReaper({ native, isOwned: (pid) => pid === appPid });
      try {
        const cmd = spawn('sh', ['-c', 'exit 5']);
        const pid = cmd.pid ?? -1;
        expect(isNodeChild(pid)).toBe(true);
        const exited = new Promise<number | null>((resolve) => cmd.once('exit', resolve));
        // block the event loop until the command is a zombie (libuv cannot reap it meanwhile),
        // then sweep synchronously as the reaper's timer would
        const nap = new Int32Array(new SharedArrayBuffer(4));
        const deadline = Date.now() + 10_000;
        while (!zombiesOf(process.pid).includes(pid)) {
          if (Date.now() > deadline) throw new Error('the command did not exit');
          Atomics.wait(nap, 0, 0, 10);
        }
        expect(reaper.sweep()).toBe(0);
        expect(zombiesOf(process.pid)).toContain(pid);
        expect(await exited).toBe(5);
        expect(reaper.reaped).toBe(0);
      } finally {
        reaper.stop();
      }
    });

    it('never takes the exit of the app from Node when orphans exit at the same moment', async () => {
      for (let round = 0; round < 5; round++) {
        const pids = pidFile(`orphans-race-${round}`);
        const { logger, lines } = captureLogger();
        // The orphans exit just before the app: their SIGCHLDs and the app's arrive together (the
        // app waits for their exits, see waitOrphans).
        const exit = await runShell(
          `for i in 1 2 3 4 5 6; do (sleep 0.25 & echo $! >> ${pids}); done; ${waitOrphans(pids, 6)}; exit ${round + 3}`,
          true,
          logger,
        );
        expect(exit.status).toBe(round + 3);
        expect(zombiesOf(process.pid)).toEqual([]);
        expect(
          reapedOf(lines)
            .map((r) => r.pid)
            .sort(),
        ).toEqual(readPids(pids).sort());
      }
    });

    it('without the reaper an orphan stays a zombie (what the reaper fixes)', async () => {
      const native = await loadReaperNative();
      expect(setChildSubreaper(native, true)).toBe(0);
      const pids = pidFile('orphans-off');
      try {
        const { logger, lines } = captureLogger();
        const exit = await runShell(
          `(sleep 0.1 & echo $! >> ${pids}); ${waitOrphans(pids, 1)}; exit 5`,
          false,
          logger,
        );
        expect(exit.status).toBe(5);
        const [orphan] = readPids(pids);
        expect(zombiesOf(process.pid)).toContain(orphan);
        expect(reapedOf(lines)).toEqual([]);
        // Clean up: reap exactly that zombie.
        expect(native.waitpid(orphan, Buffer.alloc(4), 1)).toBe(orphan);
        expect(zombiesOf(process.pid)).not.toContain(orphan);
      } finally {
        setChildSubreaper(native, false);
      }
    });
  },
);

// PID 1 of a new PID namespace (root, util-linux unshare); the runner is loaded from the build
// (turbo runs build before test) because a plain `node` cannot import the TypeScript sources.
const unshareOk =
  process.platform === 'linux' &&
  spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status === 0;
if (!unshareOk) {
  console.warn(
    '[reaper.test] SKIPPED PID 1 tests: `unshare --pid --fork --mount-proc` is not permitted here (needs root or user namespaces, and util-linux)',
  );
}

describe.skipIf(!unshareOk)(
  'reaping as PID 1 (unshare --pid --fork --mount-proc)',
  { retry: 2 },
  () => {
    beforeAll(() => {
      expect(
        existsSync(dist),
        `build first: pnpm --filter @enclave-extras/proxy build (${dist})`,
      ).toBe(true);
    });

    function asPid1(reapOrphans: boolean | 'auto'): {
      pid: number;
      exit: AppExit;
      zombies: ProcStat[];
      orphans: number[];
      killed: number;
      exit3: number;
      reaped: Record<string, unknown>[];
      warnings: unknown[];
    } {
      const pids = join(dir, `pid1-${Math.random().toString(36).slice(2)}`);
      const killed = `${pids}.killed`;
      const exit3 = `${pids}.exit3`;
      const file = join(dir, `pid1-${Math.random().toString(36).slice(2)}.mjs`);
      // Nine short-lived orphans (one killed by a signal, one exiting 3 after orphaning another)
      // exit while the app runs; the app itself exits last with 7.
      const app = [
        `for i in 1 2 3 4 5 6; do (sleep 0.$i & echo $! >> ${pids}); done`,
        `(sh -c 'sleep 0.1; kill -9 $$' & echo $! | tee -a ${pids} > ${killed})`,
        `(sh -c '(sleep 0.2 & echo $! >> ${pids}); sleep 0.1; exit 3' & echo $! | tee -a ${pids} > ${exit3})`,
        waitOrphans(pids, 9),
        'exit 7',
      ].join('; ');
      writeFileSync(
        file,
        `
      import { readdirSync, readFileSync } from 'node:fs';
      import { enclaveConfigSchema, runEnclave } from ${JSON.stringify(dist)};
      const lines = [];
      const at = (level) => (obj, msg) => lines.push({ level, obj, msg });
      const logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
      const config = enclaveConfigSchema.parse({ network: { setup: false }, reapOrphans: ${JSON.stringify(reapOrphans)} });
      const exit = await runEnclave(config, { command: 'sh', args: ['-c', ${JSON.stringify(app)}], logger });
      const zombies = [];
      for (const name of readdirSync('/proc')) {
        if (!/^\\d+$/.test(name)) continue;
        try {
          const stat = readFileSync('/proc/' + name + '/stat', 'utf8');
          const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
          if (rest[0] === 'Z') zombies.push({ pid: Number(name), state: rest[0], ppid: Number(rest[1]) });
        } catch {}
      }
      console.log(JSON.stringify({
        pid: process.pid,
        exit,
        zombies,
        reaped: lines.filter((l) => l.msg === 'reaped orphan').map((l) => l.obj),
        warnings: lines.filter((l) => l.level === 'warn'),
      }));
      process.exit(exit.status);
    `,
      );
      const r = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, file], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(r.stderr).toBe('');
      const o = JSON.parse(r.stdout);
      // The namespace's PID 1 exits with the app's status, and unshare passes it on.
      expect(r.status).toBe(7);
      return {
        ...o,
        orphans: readPids(pids),
        killed: readPids(killed)[0] ?? 0,
        exit3: readPids(exit3)[0] ?? 0,
      };
    }

    it("reaps every orphan by default ('auto') and exits with the app's status", () => {
      const o = asPid1('auto');
      expect(o.pid).toBe(1);
      expect(o.exit).toEqual({ status: 7, code: 7, signal: null });
      expect(o.orphans).toHaveLength(9);
      expect(o.zombies).toEqual([]);
      expect(o.reaped.map((r) => r.pid).sort()).toEqual([...o.orphans].sort());
      const byPid = new Map(o.reaped.map((r) => [r.pid, r]));
      expect(byPid.get(o.killed)).toMatchObject({ status: 137, code: null, signal: 'SIGKILL' });
      expect(byPid.get(o.exit3)).toMatchObject({ status: 3, code: 3, signal: null });
      expect(o.warnings).toEqual([]);
    });

    it('leaves the zombies with reapOrphans: false (the test can fail)', () => {
      const o = asPid1(false);
      expect(o.pid).toBe(1);
      expect(o.exit.status).toBe(7);
      expect(o.reaped).toEqual([]);
      expect(o.zombies.map((z) => z.pid).sort()).toEqual([...o.orphans].sort());
      expect(o.zombies.every((z) => z.ppid === 1)).toBe(true);
    });
  },
);
