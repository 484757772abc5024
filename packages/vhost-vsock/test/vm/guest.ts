// A small Linux guest for the VM suite: Debian's kernel from the vsock-vm cache, virtio-vsock as
// modules, busybox, and `vt` (guest/vt.c, built here with gcc -static). The guest serves a
// command agent on vsock port 7000: each connection's first line is run by `sh` with the rest
// of the connection as stdin and its stdout sent back.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type VsockTransport } from '@enclave-extras/vsock';

const here = dirname(fileURLToPath(import.meta.url));
export const VSOCK_VM_CACHE = process.env.VSOCK_VM_CACHE ?? '/var/cache/enclave-extras/vsock-vm';
export const AGENT_PORT = 7000;
const MODULES = [
  'kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/virtio/virtio.ko',
  'kernel/drivers/virtio/virtio_pci_legacy_dev.ko',
  'kernel/drivers/virtio/virtio_pci_modern_dev.ko',
  'kernel/drivers/virtio/virtio_pci.ko',
  'kernel/net/vmw_vsock/vsock.ko',
  'kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko',
  'kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko',
];

function which(cmd: string): string | undefined {
  try {
    return (
      execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined
    );
  } catch {
    return undefined;
  }
}

/** What is missing to run the suite, or null when everything is there. */
export function missing(): string | null {
  if (process.env.ENCLAVE_EXTRAS_SKIP_VM === '1') return 'ENCLAVE_EXTRAS_SKIP_VM=1';
  if (!qemuPath())
    return 'qemu-system-x86_64 not found (apt-get install qemu-system-x86, or set VHOST_VSOCK_QEMU)';
  if (!existsSync(join(VSOCK_VM_CACHE, 'vmlinuz')))
    return `no guest kernel in ${VSOCK_VM_CACHE} (run ../shared/tools/vsock-vm --setup)`;
  for (const m of MODULES)
    if (!existsSync(join(VSOCK_VM_CACHE, 'kmods', m)))
      return `kernel module ${m} missing in ${VSOCK_VM_CACHE}/kmods`;
  if (!existsSync(join(VSOCK_VM_CACHE, 'debs')))
    return `no busybox-static .deb in ${VSOCK_VM_CACHE}/debs`;
  if (!which('gcc')) return 'gcc not found (the guest tool is built with gcc -static)';
  if (!which('cpio')) return 'cpio not found';
  return null;
}

export function qemuPath(): string | undefined {
  return process.env.VHOST_VSOCK_QEMU ?? which('qemu-system-x86_64');
}

function initScript(modules: readonly string[]): string {
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in ${modules.map((m) => m.split('/').pop()).join(' ')}; do insmod /mods/$m || echo "vt-guest: insmod $m failed"; done
echo "vt-guest: up, vsock agent on port ${AGENT_PORT}"
vt listen ${AGENT_PORT} 'read -r line; eval "$line"' &
while true; do sleep 3600; done
`;
}

/**
 * Builds (once, cached by content) the initramfs; returns its path. `withModules: false` is for
 * kernels with virtio-vsock built in (the enclave kernel).
 */
export function buildInitramfs(withModules = true): string {
  const modules = withModules ? MODULES : [];
  const INIT = initScript(modules);
  const vt = readFileSync(join(here, 'guest', 'vt.c'));
  const key = createHash('sha256')
    .update(vt)
    .update(INIT)
    .update(modules.join())
    .digest('hex')
    .slice(0, 16);
  const cache = join(here, '..', '..', 'node_modules', '.cache', 'vhost-vsock-guest');
  const out = join(cache, `initramfs-${key}.cpio`);
  if (existsSync(out)) return out;
  const stage = join(cache, `stage-${process.pid}`);
  rmSync(stage, { recursive: true, force: true });
  for (const d of ['bin', 'mods', 'proc', 'sys', 'dev', 'tmp', 'deb'])
    mkdirSync(join(stage, d), { recursive: true });
  const deb = execFileSync(
    'sh',
    ['-c', `ls ${VSOCK_VM_CACHE}/debs/busybox-static*.deb | head -1`],
    { encoding: 'utf8' },
  ).trim();
  execFileSync('dpkg-deb', ['-x', deb, join(stage, 'deb')]);
  copyFileSync(join(stage, 'deb', 'bin', 'busybox'), join(stage, 'bin', 'busybox'));
  rmSync(join(stage, 'deb'), { recursive: true, force: true });
  chmodSync(join(stage, 'bin', 'busybox'), 0o755);
  execFileSync('gcc', [
    '-static',
    '-O2',
    '-Wall',
    '-o',
    join(stage, 'bin', 'vt'),
    join(here, 'guest', 'vt.c'),
  ]);
  for (const m of modules)
    copyFileSync(
      join(VSOCK_VM_CACHE, 'kmods', m),
      join(stage, 'mods', m.split('/').pop() as string),
    );
  writeFileSync(join(stage, 'init'), INIT, { mode: 0o755 });
  execFileSync('sh', [
    '-c',
    `cd '${stage}' && find . | LC_ALL=C sort | cpio -o -H newc --quiet > '${out}.tmp'`,
  ]);
  renameSync(`${out}.tmp`, out);
  rmSync(stage, { recursive: true, force: true });
  return out;
}

export const GUEST_APPEND =
  'console=ttyS0 panic=-1 loglevel=4 8250.nr_uarts=1 i8042.noaux i8042.nokbd cryptomgr.notests rodata=off audit=0 apparmor=0 security=none tsc=reliable';

/** The QEMU argv for a standard (pc) machine with a vhost-user-vsock-pci device on `socketPath`. */
export function qemuArgs(o: {
  socketPath: string;
  initramfs: string;
  consoleLog: string;
  memMiB?: number;
}): string[] {
  const mem = o.memMiB ?? 512;
  return [
    '-machine',
    'pc,accel=tcg,memory-backend=mem',
    '-m',
    `${mem}M`,
    '-object',
    `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-smp',
    '1',
    '-kernel',
    join(VSOCK_VM_CACHE, 'vmlinuz'),
    '-initrd',
    o.initramfs,
    '-append',
    GUEST_APPEND,
    '-chardev',
    `socket,id=c,path=${o.socketPath}`,
    '-device',
    'vhost-user-vsock-pci,chardev=c',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-serial',
    `file:${o.consoleLog}`,
    '-nic',
    'none',
  ];
}

export interface Guest {
  proc: ChildProcess;
  consoleLog: string;
  console(): string;
  stop(): Promise<void>;
}

export function startQemu(o: { socketPath: string; consoleLog: string; memMiB?: number }): Guest {
  const initramfs = buildInitramfs();
  const proc = spawn(qemuPath() as string, qemuArgs({ ...o, initramfs }), {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr?.on('data', (d) => {
    stderr += String(d);
  });
  const exited = new Promise<void>((ok) => proc.once('exit', () => ok()));
  return {
    proc,
    consoleLog: o.consoleLog,
    console: () =>
      (existsSync(o.consoleLog) ? readFileSync(o.consoleLog, 'utf8') : '') +
      (stderr ? `\n[qemu stderr]\n${stderr}` : ''),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Runs `cmd` in the guest through its agent (port 7000) with `input` as stdin; resolves with stdout. */
export function runInGuest(
  transport: VsockTransport,
  cid: number,
  cmd: string,
  input?: Buffer,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect({ cid, port: AGENT_PORT, transport, allowHalfOpen: true });
    const out: Buffer[] = [];
    s.on('data', (d: Buffer) => out.push(d));
    s.on('error', reject);
    s.on('end', () => {
      resolve(Buffer.concat(out));
      s.destroy();
    });
    s.write(`${cmd}\n`);
    if (input) s.write(input);
    s.end();
  });
}

/** Waits until the guest agent answers (boot, or reboot); throws with the console otherwise. */
export async function waitForAgent(
  transport: VsockTransport,
  cid: number,
  guest: Guest,
  extra: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + 240_000;
  for (;;) {
    try {
      if ((await runInGuest(transport, cid, 'echo ready')).toString() === 'ready\n') return;
    } catch {}
    if (
      Date.now() > deadline ||
      // the guest init's own failure lines only: a loaded TCG host makes the kernel print
      // "tsc: Fast TSC calibration failed" on a boot that goes on fine
      /^vt-guest: .*failed$/m.test(guest.console()) ||
      guest.proc.exitCode !== null
    ) {
      throw new Error(`guest agent not reachable; console:\n${guest.console()}\n${extra()}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** QEMU with the nitro-enclave machine (nsm-vm's cached build) and the enclave kernel, if built. */
export function nitroAssets(): { qemu: string; kernel: string } | string {
  const qemu =
    process.env.NITRO_QEMU ?? '/var/cache/enclave-extras/nsm-vm/qemu/qemu-system-x86_64-wrapper';
  const kernel = process.env.ENCLAVE_KERNEL ?? '/var/cache/enclave-extras/enclave-kernel/bzImage';
  if (process.env.ENCLAVE_EXTRAS_SKIP_VM === '1') return 'ENCLAVE_EXTRAS_SKIP_VM=1';
  if (!existsSync(qemu))
    return `no QEMU with the nitro-enclave machine at ${qemu} (run ../shared/tools/nsm-vm --qemu-path once, or set NITRO_QEMU)`;
  if (!existsSync(kernel))
    return `no enclave kernel at ${kernel} (run ../shared/tools/enclave-kernel once, or set ENCLAVE_KERNEL)`;
  if (!which('gcc') || !which('cpio')) return 'gcc and cpio are needed for the guest initramfs';
  if (!existsSync(join(VSOCK_VM_CACHE, 'debs')))
    return `no busybox-static .deb in ${VSOCK_VM_CACHE}/debs`;
  return { qemu, kernel };
}

/** The AWS blobs' x86_64 cmdline (the machine appends its virtio_mmio.device= entries). */
export const ENCLAVE_CMDLINE =
  'reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on';

/** The nitro-enclave machine booting `eif`, its vsock served on `socketPath`. */
export function startNitroEnclave(o: {
  qemu: string;
  eif: string;
  socketPath: string;
  consoleLog: string;
  memMiB?: number;
}): Guest {
  const args = [
    '-M',
    'nitro-enclave,vsock=c,id=vhost-vsock-test',
    '-m',
    `${o.memMiB ?? 512}M`,
    '-smp',
    '1',
    '-kernel',
    o.eif,
    '-chardev',
    `socket,id=c,path=${o.socketPath}`,
    '-display',
    'none',
    '-serial',
    `file:${o.consoleLog}`,
  ];
  const proc = spawn(o.qemu, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr?.on('data', (d) => {
    stderr += String(d);
  });
  const exited = new Promise<void>((ok) => proc.once('exit', () => ok()));
  return {
    proc,
    consoleLog: o.consoleLog,
    console: () =>
      (existsSync(o.consoleLog) ? readFileSync(o.consoleLog, 'utf8') : '') +
      (stderr ? `\n[qemu stderr]\n${stderr}` : ''),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}
