// ee-parent run's time and log services with the real CLIs over the vsock emulation: an
// ee-enclave run app's stdout/stderr and ee-enclave's own log lines come out of ee-parent as
// JSON lines with the CID, the enclave's metrics join ee-parent's /metrics, the parent serves
// its real clock, and clock.required stops ee-enclave before the app when there is no parent.
// (ee-enclave is never given a reachable clock here: this machine's clock must not be set.)
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { measureOffset, systemClock } from '@enclave-extras/runtime';
import { createEmulatedTransport } from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpGet, type Proc, spawnCli } from './helpers.js';

const root = new URL('../../../', import.meta.url).pathname;
const parentCli = `${root}apps/parent/dist/cli.js`;
const enclaveCli = `${root}apps/enclave/dist/cli.js`;
const built = existsSync(parentCli) && existsSync(enclaveCli);

let dir: string;
let parent: Proc;
let metricsPort: number;

interface Out {
  cid?: number;
  stream?: string;
  seq?: number;
  msg?: string;
  log?: { msg?: string };
  event?: string;
}
const outLines = (p: Proc): Out[] =>
  p
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Out);

async function until(what: string, test: () => boolean | Promise<boolean>, ms = 20_000) {
  const end = Date.now() + ms;
  while (!(await test())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!built)('ee-parent time: and logs:', () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ee-telemetry-'));
    writeFileSync(
      join(dir, 'parent.yaml'),
      'metrics: { listen: "tcp:127.0.0.1:0" }\ntime: { listen: "vsock:any:7100" }\nlogs: { listen: "vsock:any:7101" }\n',
    );
    parent = spawnCli(parentCli, [
      'run',
      '-c',
      join(dir, 'parent.yaml'),
      '--vsock-dir',
      join(dir, 'v'),
    ]);
    const ready = await parent.waitLog((l) => l.msg === 'ready', 'ee-parent ready');
    metricsPort = ready.metricsPort as number;
    expect(ready).toMatchObject({ timePort: 7100, logsPort: 7101 });
  });
  afterAll(async () => {
    parent?.child.kill('SIGTERM');
    await parent?.exited;
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves its real clock: the offset to this machine is within the round trip', async () => {
    const clock = await systemClock(); // read only
    const m = await measureOffset({
      parent: { kind: 'vsock', cid: 3, port: 7100 },
      now: clock.now,
      vsock: { transport: createEmulatedTransport({ dir: join(dir, 'v') }) },
    });
    const abs = m.offsetNs < 0n ? -m.offsetNs : m.offsetNs;
    expect(abs).toBeLessThanOrEqual(m.delayNs / 2n + 1n);
  });

  it("writes the app's lines and ee-enclave's log as JSON lines; the enclave's metrics join /metrics", async () => {
    writeFileSync(
      join(dir, 'enclave.yaml'),
      'network: { setup: false }\nlogs: { parent: "vsock:3:7101", metricsIntervalMs: 1000 }\n',
    );
    const app = `
      for (let i = 1; i <= 1000; i++) console.log('app line ' + i);
      console.error('to stderr');
      process.on('SIGTERM', () => process.exit(0));
      setInterval(() => {}, 1000);
    `;
    const enclave = spawnCli(enclaveCli, [
      'run',
      '-c',
      join(dir, 'enclave.yaml'),
      '--vsock-dir',
      join(dir, 'v'),
      '--',
      process.execPath,
      '-e',
      app,
    ]);
    await until('the enclave metrics on /metrics', async () => {
      const r = await httpGet(metricsPort, '/metrics');
      return /ee_runtime_log_records_total\{cid="1",stream="stdout"\} 1000/.test(r.body);
    });
    const page = (await httpGet(metricsPort, '/metrics')).body;
    expect(page).toMatch(/ee_parent_log_records_total\{cid="1",stream="stdout"\} 1000/);
    expect(page).toMatch(/ee_parent_time_requests_total \d+/);
    expect(page).toMatch(/ee_proxy_fds_open\{cid="1"\} \d+/);
    expect(page.match(/^# TYPE ee_proxy_fds_open /gm)).toHaveLength(1);

    enclave.child.kill('SIGTERM');
    expect((await enclave.exited).code).toBe(0);
    await until('the disconnect', () => outLines(parent).some((l) => l.event === 'disconnected'));
    const out = outLines(parent);
    const app1 = out.filter((l) => l.stream === 'stdout');
    expect(app1.map((l) => l.msg)).toEqual(
      Array.from({ length: 1000 }, (_, i) => `app line ${i + 1}`),
    );
    expect(app1.every((l) => l.cid === 1)).toBe(true);
    expect(out.filter((l) => l.stream === 'stderr').map((l) => l.msg)).toEqual(['to stderr']);
    const runtime = out.filter((l) => l.stream === 'runtime').map((l) => l.log?.msg);
    expect(runtime).toContain('app started');
    expect(runtime).toContain('forwarding signal to the app');
    // the app's output no longer reaches ee-enclave's own stdout (logs.console is off)
    expect(enclave.stdout()).toBe('');
  });

  it('a start-up failure reaches the parent too (no console without debug mode)', async () => {
    const before = outLines(parent).filter((l) => l.event === 'disconnected').length;
    const enclave = spawnCli(enclaveCli, [
      'run',
      '-c',
      join(dir, 'enclave.yaml'),
      '--vsock-dir',
      join(dir, 'v'),
      '--',
      join(dir, 'no-such-app'),
    ]);
    expect((await enclave.exited).code).toBe(1);
    await until(
      'the disconnect',
      () => outLines(parent).filter((l) => l.event === 'disconnected').length > before,
    );
    const fatal = outLines(parent).find((l) => l.stream === 'runtime' && l.log?.msg === 'fatal') as
      | { log: { code?: string; err?: string } }
      | undefined;
    expect(fatal?.log.code).toBe('ENOENT');
    expect(fatal?.log.err).toContain('no-such-app');
  });

  it('logs.output: FILE appends the JSON lines to that file', async () => {
    const file = join(dir, 'enclave-logs.jsonl');
    writeFileSync(file, '{"kept":true}\n');
    writeFileSync(
      join(dir, 'parent-file.yaml'),
      `logs: { listen: "vsock:any:7201", output: ${JSON.stringify(file)} }\n`,
    );
    const p2 = spawnCli(parentCli, [
      'run',
      '-c',
      join(dir, 'parent-file.yaml'),
      '--vsock-dir',
      join(dir, 'v'),
    ]);
    try {
      await p2.waitLog((l) => l.msg === 'ready', 'second ee-parent ready');
      writeFileSync(
        join(dir, 'enclave-file.yaml'),
        'network: { setup: false }\nlogs: { parent: "vsock:3:7201" }\n',
      );
      const enclave = spawnCli(enclaveCli, [
        'run',
        '-c',
        join(dir, 'enclave-file.yaml'),
        '--vsock-dir',
        join(dir, 'v'),
        '--',
        process.execPath,
        '-e',
        'console.log("into the file")',
      ]);
      expect((await enclave.exited).code).toBe(0);
      await until('the disconnect in the file', () =>
        readFileSync(file, 'utf8').includes('"disconnected"'),
      );
      const lines = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Out & { kept?: boolean });
      expect(lines[0]).toEqual({ kept: true });
      expect(lines.filter((l) => l.stream === 'stdout').map((l) => l.msg)).toEqual([
        'into the file',
      ]);
      expect(p2.stdout()).toBe('');
    } finally {
      p2.child.kill('SIGTERM');
      await p2.exited;
    }
  });

  it('clock.required: ee-enclave refuses to start the app when the time service is unreachable', async () => {
    const marker = join(dir, 'started');
    writeFileSync(
      join(dir, 'enclave-clock.yaml'),
      'network: { setup: false }\nclock: { parent: "vsock:3:7999", required: true, startTimeoutMs: 300 }\n',
    );
    const enclave = spawnCli(enclaveCli, [
      'run',
      '-c',
      join(dir, 'enclave-clock.yaml'),
      '--vsock-dir',
      join(dir, 'v'),
      '--',
      process.execPath,
      '-e',
      `require('node:fs').writeFileSync(${JSON.stringify(marker)}, '')`,
    ]);
    const { code } = await enclave.exited;
    expect(code).toBe(1);
    expect(enclave.stderr()).toContain('ERR_RUNTIME_CLOCK_UNREACHABLE');
    expect(enclave.stderr()).toContain('vm(3):7999');
    expect(existsSync(marker)).toBe(false);
  });
});
