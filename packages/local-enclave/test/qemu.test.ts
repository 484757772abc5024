// Finding QEMU, its command line, and boot failures reported by startEnclave (real QEMU when the
// nsm-vm tool can give one; those tests say why they skip otherwise).
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  initPath,
  isLocalEnclaveError,
  NITRO_CLI_CMDLINE_X86_64,
  resolveQemu,
  startEnclave,
  type VsockBackend,
} from '../src/index.js';
import { qemuArgs } from '../src/qemu.js';

const tmp = mkdtempSync(join(tmpdir(), 'ee-qemu-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const nsmVm = join(import.meta.dirname, '..', '..', '..', '..', 'shared', 'tools', 'nsm-vm');
function realQemu(): string | undefined {
  if (process.env.ENCLAVE_EXTRAS_QEMU) return process.env.ENCLAVE_EXTRAS_QEMU;
  if (!existsSync(nsmVm) || !existsSync('/var/cache/enclave-extras/nsm-vm/qemu/qemu-system-x86_64'))
    return undefined;
  const r = spawnSync(nsmVm, ['--qemu-path'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().split('\n').pop() : undefined;
}
const qemu = realQemu();
if (!qemu)
  process.stdout.write(
    'qemu.test: no QEMU with nitro-enclave (ENCLAVE_EXTRAS_QEMU or a built nsm-vm cache): real-QEMU tests skipped\n',
  );

async function rejects(p: Promise<unknown>, code: string, text: RegExp): Promise<Error> {
  try {
    await p;
  } catch (err) {
    expect(isLocalEnclaveError(err), String(err)).toBe(true);
    expect((err as { code: string }).code).toBe(code);
    // The whole message on a mismatch: vitest shortens the value it prints.
    expect((err as Error).message, (err as Error).message).toMatch(text);
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** The size and CID of the enclaves these tests boot (or fail to boot). */
const smallEnclave = {
  cpuCount: 1,
  memoryMiB: 256,
  enclaveCid: 16,
  vsockDir: tmp,
  accel: 'tcg',
} as const;

/** A vhost-user socket that accepts and never answers: enough for QEMU to get past connecting. */
function silentBackend(): {
  factory: (o: { socketPath: string }) => Promise<VsockBackend>;
  closed: () => boolean;
} {
  let closed = false;
  return {
    closed: () => closed,
    factory: ({ socketPath }) =>
      new Promise((resolve) => {
        const sockets = new Set<net.Socket>();
        const server = net.createServer((s) => sockets.add(s));
        server.listen(socketPath, () =>
          resolve({
            listen: () => {},
            close: () =>
              new Promise<void>((r) => {
                closed = true;
                for (const s of sockets) s.destroy();
                server.close(() => r());
              }),
          }),
        );
      }),
  };
}

describe('resolveQemu', () => {
  it('names what is missing', () => {
    const saved = {
      q: process.env.ENCLAVE_EXTRAS_QEMU,
      p: process.env.PATH,
      t: process.env.ENCLAVE_EXTRAS_NSM_VM,
    };
    try {
      delete process.env.ENCLAVE_EXTRAS_QEMU;
      delete process.env.ENCLAVE_EXTRAS_NSM_VM;
      process.env.PATH = '/nonexistent';
      expect(() => resolveQemu()).toThrow(
        /No QEMU given.*--qemu PATH.*ENCLAVE_EXTRAS_QEMU.*nsm-vm/s,
      );
      expect(() => resolveQemu({ qemu: join(tmp, 'none') })).toThrow(/none does not exist/);
      const fake = join(tmp, 'qemu-without-machine');
      writeFileSync(fake, '#!/bin/sh\necho "microvm              microvm (i386)"\n');
      chmodSync(fake, 0o755);
      expect(() => resolveQemu({ qemu: fake })).toThrow(/has no nitro-enclave machine/);
      process.env.ENCLAVE_EXTRAS_QEMU = fake;
      expect(() => resolveQemu()).toThrow(/ENCLAVE_EXTRAS_QEMU=.*has no nitro-enclave machine/);
    } finally {
      for (const [k, v] of [
        ['ENCLAVE_EXTRAS_QEMU', saved.q],
        ['PATH', saved.p],
        ['ENCLAVE_EXTRAS_NSM_VM', saved.t],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it.skipIf(!qemu)('accepts a QEMU that has the nitro-enclave machine', () => {
    expect(resolveQemu({ qemu: qemu as string })).toBe(qemu);
  });
});

describe('qemuArgs', () => {
  it('builds the nitro-enclave machine with the vhost-user chardev and the console on stdio', () => {
    const args = qemuArgs({
      eifPath: '/x/app.eif',
      enclaveId: 'i-local-enc0011223344556677',
      cpuCount: 2,
      memoryMiB: 512,
      vhostSocket: '/run/v.sock',
      accel: 'tcg',
      parentRole: 'arn:aws:iam::1:role/a,b',
    });
    expect(args.slice(0, 2)).toEqual([
      '-M',
      'nitro-enclave,vsock=vsock0,id=i-local-enc0011223344556677,parent-role=arn:aws:iam::1:role/a,,b',
    ]);
    expect(args.join(' ')).toContain('-kernel /x/app.eif');
    expect(args.join(' ')).toContain('-chardev socket,id=vsock0,path=/run/v.sock');
    expect(args.join(' ')).toContain('-smp 2 -m 512M');
    expect(args).toContain('-no-reboot');
  });
});

// QEMU's exit can be seen before its last console bytes are read (the init prints FATAL and
// powers off at once; CI saw the FATAL line missing under load). A stand-in QEMU makes that order
// certain: it exits at once while a child of it writes the FATAL line 300 ms later.
describe('startEnclave reads the console to its end after QEMU exits', () => {
  it('the FATAL line written after the exit is quoted; the backend is closed', async () => {
    const fake = join(tmp, 'qemu-exits-first');
    writeFileSync(
      fake,
      [
        '#!/bin/sh',
        'if [ "$1" = "-M" ] && [ "$2" = "help" ]; then echo "nitro-enclave        Nitro Enclave"; exit 0; fi',
        "(sleep 0.3; echo 'ee-init: FATAL: heartbeat: socket(AF_VSOCK): Address family not supported') &",
        'exit 0',
        '',
      ].join('\n'),
    );
    chmodSync(fake, 0o755);
    const eif = join(tmp, 'fake-qemu.eif');
    writeFileSync(eif, Buffer.alloc(4096));
    const backend = silentBackend();
    await rejects(
      startEnclave({
        ...smallEnclave,
        eifPath: eif,
        qemu: fake,
        workDir: join(tmp, 'work-fake'),
        createBackend: backend.factory,
        bootTimeoutMs: 30_000,
      }),
      'ERR_LOCAL_ENCLAVE_BOOT_FAILED',
      /QEMU exited \(0\) before the boot heartbeat\. The init said: "ee-init: FATAL: heartbeat: socket\(AF_VSOCK\)/,
    );
    expect(backend.closed()).toBe(true);
  });
});

// A kernel without vsock (Debian's, from the vsock-vm cache): the init boots and must fail at the
// heartbeat, saying why, and the enclave must stop.
const noVsockKernel = '/var/cache/enclave-extras/vsock-vm/vmlinuz';
const haveNoVsockKernel = existsSync(noVsockKernel);
if (qemu && !haveNoVsockKernel) {
  process.stdout.write(
    `qemu.test: ${noVsockKernel} absent: the init-failure boot test is skipped\n`,
  );
}

describe.skipIf(!qemu)('startEnclave boot failures (real QEMU)', () => {
  it.skipIf(!haveNoVsockKernel)(
    'the init on a kernel without vsock: BOOT_FAILED quoting its FATAL line; the default vhost-user backend and QEMU are gone',
    async () => {
      const { buildEif } = await import('@enclave-extras/eif');
      const root = join(tmp, 'tiny');
      mkdirSync(join(root, 'bin'), { recursive: true });
      writeFileSync(join(root, 'bin', 'x'), '');
      const eif = await buildEif({
        kernel: noVsockKernel,
        init: initPath(),
        cmdline: NITRO_CLI_CMDLINE_X86_64,
        nsmKo: false,
        rootfs: { type: 'directory', path: root },
        cmd: ['/bin/x'],
        output: join(tmp, 'no-vsock.eif'),
      });
      const workDir = join(tmp, 'work-novsock');
      const vsockDir = join(tmp, 'v');
      mkdirSync(vsockDir, { recursive: true });
      const err = await rejects(
        startEnclave({
          eifPath: eif.path,
          cpuCount: 1,
          memoryMiB: 512,
          enclaveCid: 16,
          vsockDir,
          qemu: qemu as string,
          accel: 'tcg',
          workDir,
          bootTimeoutMs: 220_000, // TCG on a loaded 2-core CI machine: 7 s quiet, 46 s seen under load
        }),
        'ERR_LOCAL_ENCLAVE_BOOT_FAILED',
        /QEMU exited \(0\) before the boot heartbeat\. The init said: "ee-init: FATAL: heartbeat: socket\(AF_VSOCK\)/,
      );
      expect(
        (err as unknown as { details: { consoleTail: string } }).details.consoleTail,
      ).toContain('Run /init as init process');
      expect(readdirSync(workDir)).toEqual([]); // the vhost-user socket is gone
      expect(readdirSync(vsockDir)).toEqual([]); // and the VM's socket in the vsock folder
    },
    240_000,
  );

  it('an EIF QEMU cannot load: BOOT_FAILED with QEMU message; backend closed, nothing left', async () => {
    const eif = join(tmp, 'not-an.eif');
    writeFileSync(eif, Buffer.alloc(4096, 0x41));
    const backend = silentBackend();
    const workDir = join(tmp, 'work');
    const err = await rejects(
      startEnclave({
        ...smallEnclave,
        eifPath: eif,
        qemu: qemu as string,
        workDir,
        createBackend: backend.factory,
        bootTimeoutMs: 60_000,
      }),
      'ERR_LOCAL_ENCLAVE_BOOT_FAILED',
      /failed to boot: QEMU exited \(1\) before the boot heartbeat: .*(eif|EIF|magic)/s,
    );
    expect(err.message).toContain('not-an.eif');
    expect(backend.closed()).toBe(true);
    expect(existsSync(join(workDir, 'i-local'))).toBe(false);
  });

  it('an EIF that is not readable: ERR_LOCAL_ENCLAVE_EIF', async () => {
    await rejects(
      startEnclave({
        eifPath: join(tmp, 'missing.eif'),
        cpuCount: 1,
        memoryMiB: 256,
        enclaveCid: 16,
        vsockDir: tmp,
        qemu: qemu as string,
      }),
      'ERR_LOCAL_ENCLAVE_EIF',
      /missing\.eif cannot be read/,
    );
  });

  it('invalid sizes and CIDs are refused before anything starts', async () => {
    const base = { eifPath: '/x.eif', cpuCount: 1, memoryMiB: 256, enclaveCid: 16, vsockDir: tmp };
    await rejects(
      startEnclave({ ...base, enclaveCid: 3 }),
      'ERR_LOCAL_ENCLAVE_INVALID_ARGUMENT',
      /enclaveCid 3/,
    );
    await rejects(
      startEnclave({ ...base, cpuCount: 0 }),
      'ERR_LOCAL_ENCLAVE_INVALID_ARGUMENT',
      /cpuCount 0/,
    );
    await rejects(
      startEnclave({ ...base, vsockDir: '' }),
      'ERR_LOCAL_ENCLAVE_INVALID_ARGUMENT',
      /vsockDir is required/,
    );
  });
});
