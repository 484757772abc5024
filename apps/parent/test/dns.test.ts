// ee-parent run's dns: service with the real CLI over the vsock emulation: a question for a name
// the egress policy allows is answered (from /etc/hosts, no network), one it can never allow is
// REFUSED, /metrics counts both, and a SIGHUP reload that drops the rule refuses the name.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDnsResponse } from '@enclave-extras/proxy';
import { connect, createEmulatedTransport } from '@enclave-extras/vsock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpGet, type Proc, spawnCli } from './helpers.js';

const root = new URL('../../../', import.meta.url).pathname;
const parentCli = `${root}apps/parent/dist/cli.js`;
const built = existsSync(parentCli);

let dir: string;
let parent: Proc;
let metricsPort: number;

function question(name: string, id: number): Buffer {
  const labels = name
    .split('.')
    .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x0100, 2);
  head.writeUInt16BE(1, 4);
  return Buffer.concat([head, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/** One framed question to vsock:3:8053 through the emulation, one framed answer. */
function ask(name: string, id: number) {
  const transport = createEmulatedTransport({ dir: join(dir, 'v') });
  return new Promise<ReturnType<typeof parseDnsResponse>>((resolve, reject) => {
    const q = question(name, id);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(q.length, 0);
    const s = connect({ cid: 3, port: 8053, transport }, () => s.write(Buffer.concat([len, q])));
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        s.end();
        resolve(parseDnsResponse(buf.subarray(2, 2 + buf.readUInt16BE(0))));
      }
    });
    s.on('error', reject);
  });
}

describe.skipIf(!built)('ee-parent dns:', () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ee-parent-dns-'));
    writeFileSync(
      join(dir, 'parent.yaml'),
      'metrics: { listen: "tcp:127.0.0.1:0" }\negressGateway: { listen: "vsock:any:8080", policy: { allow: ["localhost:80"] } }\ndns: { listen: "vsock:any:8053" }\n',
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
    expect(ready).toMatchObject({ dns: 'vm(any):8053' });
  });
  afterAll(async () => {
    parent?.child.kill('SIGTERM');
    await parent?.exited;
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers allowed names, refuses the rest, counts both, follows a reload', async () => {
    const ok = await ask('localhost', 1);
    expect(ok).toMatchObject({ id: 1, rcode: 0 });
    expect(ok?.records.map((r) => r.address)).toContain('127.0.0.1');
    expect(await ask('exfil.attacker.example', 2)).toMatchObject({ id: 2, rcode: 5, records: [] });
    const metrics = await httpGet(metricsPort, '/metrics');
    expect(metrics.body).toContain('ee_dns_queries_total{result="answered"} 1');
    expect(metrics.body).toContain('ee_dns_queries_total{result="refused"} 1');
    writeFileSync(
      join(dir, 'parent.yaml'),
      'metrics: { listen: "tcp:127.0.0.1:0" }\negressGateway: { listen: "vsock:any:8080", policy: { allow: ["other.example:80"] } }\ndns: { listen: "vsock:any:8053" }\n',
    );
    parent.child.kill('SIGHUP');
    await parent.waitLog((l) => l.msg === 'reloaded', 'reloaded');
    expect(await ask('localhost', 3)).toMatchObject({ id: 3, rcode: 5 });
  });

  it('dns: without egressGateway is a config error (exit 2)', async () => {
    writeFileSync(join(dir, 'bad.yaml'), 'dns: { listen: "vsock:any:8053" }\n');
    const p = spawnCli(parentCli, [
      'run',
      '-c',
      join(dir, 'bad.yaml'),
      '--vsock-dir',
      join(dir, 'v'),
    ]);
    const { code } = await p.exited;
    expect(code).toBe(2);
    expect(p.stderr()).toMatch(/dns.*egressGateway/);
  });
});
