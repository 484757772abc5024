// Finding a QEMU with the `nitro-enclave` machine (QEMU >= 9.2 built with libcbor + gnutls) and
// building its command line.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { LocalEnclaveError } from './errors.js';
import { onPath } from './paths.js';

/** Environment variable naming the QEMU (qemu-system-x86_64) to use. */
export const QEMU_ENV = 'ENCLAVE_EXTRAS_QEMU';
/** Environment variable naming the nsm-vm tool whose `--qemu-path` prints a suitable QEMU. */
export const NSM_VM_TOOL_ENV = 'ENCLAVE_EXTRAS_NSM_VM';

export interface QemuOptions {
  /** qemu-system-x86_64 with the nitro-enclave machine. Else ENCLAVE_EXTRAS_QEMU, else nsm-vm. */
  qemu?: string;
  /** The nsm-vm tool (`nsm-vm --qemu-path`). Default: ENCLAVE_EXTRAS_NSM_VM, else nsm-vm on PATH. */
  nsmVmTool?: string;
}

const QEMU_HELP =
  "A QEMU >= 9.2 built with libcbor and gnutls has the nitro-enclave machine (Debian's qemu-system-x86 packages do not). " +
  'Pass --qemu PATH (or set ENCLAVE_EXTRAS_QEMU) to such a qemu-system-x86_64, or install the nsm-vm tool (its --qemu-path builds one; ENCLAVE_EXTRAS_NSM_VM or nsm-vm on PATH).';

const checked = new Map<string, true>();

function hasMachine(qemu: string, source: string): string {
  if (checked.has(qemu)) return qemu;
  if (!existsSync(qemu)) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_QEMU_MISSING',
      `${source} ${qemu} does not exist. ${QEMU_HELP}`,
      {
        path: qemu,
      },
    );
  }
  const r = spawnSync(qemu, ['-M', 'help'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_QEMU_MISSING',
      `${source} ${qemu} -M help failed (exit ${r.status ?? r.signal}): ${(r.stderr ?? r.error?.message ?? '').trim()}. ${QEMU_HELP}`,
      { path: qemu, ...(r.error ? { cause: r.error } : {}) },
    );
  }
  if (!/^nitro-enclave\s/m.test(r.stdout)) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_QEMU_MISSING',
      `${source} ${qemu} has no nitro-enclave machine. ${QEMU_HELP}`,
      { path: qemu },
    );
  }
  checked.set(qemu, true);
  return qemu;
}

/** The QEMU to run enclaves with; checks that it has the nitro-enclave machine. */
export function resolveQemu(options: QemuOptions = {}): string {
  if (options.qemu) return hasMachine(options.qemu, 'The QEMU');
  const fromEnv = process.env[QEMU_ENV];
  if (fromEnv) return hasMachine(fromEnv, `The QEMU ${QEMU_ENV}=`);
  const tool = options.nsmVmTool ?? process.env[NSM_VM_TOOL_ENV] ?? onPath('nsm-vm');
  if (!tool) {
    throw new LocalEnclaveError('ERR_LOCAL_ENCLAVE_QEMU_MISSING', `No QEMU given. ${QEMU_HELP}`);
  }
  const r = spawnSync(tool, ['--qemu-path'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const path = r.stdout?.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !path) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_QEMU_MISSING',
      `${tool} --qemu-path did not print a QEMU (exit ${r.status ?? r.signal}): ${(r.stderr ?? r.error?.message ?? '').trim().split('\n').slice(-3).join(' | ')}. ${QEMU_HELP}`,
      { path: tool, ...(r.error ? { cause: r.error } : {}) },
    );
  }
  return hasMachine(path, `The QEMU printed by ${tool} --qemu-path,`);
}

/** `auto` uses KVM when /dev/kvm is usable and is not the PVM software hypervisor, else TCG. */
export type Accel = 'auto' | 'kvm' | 'tcg';

export function pickAccel(accel: Accel): 'kvm' | 'tcg' {
  if (accel !== 'auto') return accel;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return 'tcg';
  }
  // kvm_pvm (a software "KVM" in some sandboxes) cannot run a stock kernel.
  return existsSync('/sys/module/kvm_pvm') ? 'tcg' : 'kvm';
}

export interface QemuCommand {
  eifPath: string;
  enclaveId: string;
  cpuCount: number;
  memoryMiB: number;
  /** The vhost-user-vsock backend's Unix socket (QEMU connects to it). */
  vhostSocket: string;
  accel: 'kvm' | 'tcg';
  parentRole?: string;
  parentId?: string;
}

/** Machine option values are comma-separated: a comma in a value is written twice. */
function optValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/** The qemu-system-x86_64 arguments for one enclave; the console is on QEMU's stdout. */
export function qemuArgs(c: QemuCommand): string[] {
  const machine = [
    'nitro-enclave',
    'vsock=vsock0',
    `id=${optValue(c.enclaveId)}`,
    ...(c.parentRole ? [`parent-role=${optValue(c.parentRole)}`] : []),
    ...(c.parentId ? [`parent-id=${optValue(c.parentId)}`] : []),
  ].join(',');
  return [
    '-M',
    machine,
    '-accel',
    c.accel,
    '-cpu',
    c.accel === 'kvm' ? 'host' : 'max',
    '-smp',
    String(c.cpuCount),
    '-m',
    `${c.memoryMiB}M`,
    '-kernel',
    c.eifPath,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-monitor',
    'none',
    '-no-reboot',
    // Appended to the EIF's command line by the machine (not measured: PCRs come from the EIF's
    // sections). The enclave kernel's reboot=k needs a keyboard controller the machine lacks,
    // so the guest's reboot hangs; a triple fault resets, and -no-reboot turns that into exit.
    '-append',
    'reboot=t',
    '-chardev',
    `socket,id=vsock0,path=${c.vhostSocket}`,
    '-chardev',
    'stdio,id=console0,signal=off',
    '-serial',
    'chardev:console0',
  ];
}
