// Local blobs: what nitro-cli's blobs folder holds (bzImage, cmdline, init), for images that boot
// under QEMU's nitro-enclave machine on any Linux machine. The kernel is a local build (AWS's
// enclave kernel is not published); the init is this package's own static init (dist/init).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LocalEnclaveError } from './errors.js';
import { distFile, onPath } from './paths.js';

/** nitro-cli's blobs/x86_64/cmdline (release 1.5.0), trimmed as nitro-cli stores it in an EIF. */
export const NITRO_CLI_CMDLINE_X86_64 =
  'reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on';

/** Environment variable naming the enclave kernel (bzImage) to use. */
export const KERNEL_ENV = 'ENCLAVE_EXTRAS_KERNEL';
/** Environment variable naming the `enclave-kernel` build tool (prints the bzImage path). */
export const KERNEL_TOOL_ENV = 'ENCLAVE_EXTRAS_KERNEL_TOOL';

export interface KernelOptions {
  /** A bzImage (x86_64). Else ENCLAVE_EXTRAS_KERNEL, else the `enclave-kernel` tool. */
  kernel?: string;
  /**
   * The `enclave-kernel` tool (builds once, caches, prints the bzImage path). Default:
   * ENCLAVE_EXTRAS_KERNEL_TOOL, else `enclave-kernel` on PATH. The first build takes ~15-40 min.
   */
  kernelTool?: string;
}

const KERNEL_HELP =
  'The enclave kernel must have NSM, VIRTIO_MMIO_CMDLINE_DEVICES, VSOCKETS and VIRTIO_VSOCKETS built in ' +
  "(Debian's kernels lack VIRTIO_MMIO_CMDLINE_DEVICES). Pass --kernel PATH (or set ENCLAVE_EXTRAS_KERNEL) to such " +
  "a bzImage, or let the enclave-kernel tool build one (Linux 6.12 from AWS's enclave config; ENCLAVE_EXTRAS_KERNEL_TOOL " +
  'or enclave-kernel on PATH): see the @enclave-extras/local-enclave README, "Kernel".';

function checkFile(path: string, what: string): string {
  const p = resolve(path);
  let size: number;
  try {
    size = statSync(p).size;
  } catch (err) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      `${what} ${p} cannot be read. ${KERNEL_HELP}`,
      {
        path: p,
        cause: err,
      },
    );
  }
  if (size === 0) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      `${what} ${p} is empty. ${KERNEL_HELP}`,
      { path: p },
    );
  }
  return p;
}

/** The path of the enclave kernel (bzImage) to build local images with. */
export function resolveKernel(options: KernelOptions = {}): string {
  if (options.kernel) return checkFile(options.kernel, 'The kernel');
  const fromEnv = process.env[KERNEL_ENV];
  if (fromEnv) return checkFile(fromEnv, `The kernel ${KERNEL_ENV}=`);
  const tool = options.kernelTool ?? process.env[KERNEL_TOOL_ENV] ?? onPath('enclave-kernel');
  if (!tool) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      `No enclave kernel given. ${KERNEL_HELP}`,
    );
  }
  const r = spawnSync(tool, [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const path = r.stdout?.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !path) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_KERNEL_MISSING',
      `${tool} did not print a kernel (exit ${r.status ?? r.signal}): ${(r.stderr ?? r.error?.message ?? '').trim().split('\n').slice(-3).join(' | ')}. ${KERNEL_HELP}`,
      { path: tool, ...(r.error ? { cause: r.error } : {}) },
    );
  }
  return checkFile(path, `The kernel printed by ${tool},`);
}

/** The path of this package's static init (dist/init). */
export function initPath(): string {
  const p = distFile('init');
  if (!p) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_INIT_MISSING',
      '@enclave-extras/local-enclave has no dist/init: build the package on Linux x86_64 with gcc and a static libc (Debian: gcc libc6-dev): pnpm --filter @enclave-extras/local-enclave build',
    );
  }
  return p;
}

/** The three blobs of a local image. */
export interface LocalBlobs {
  /** bzImage path. */
  kernel: string;
  /** The kernel's .config beside it (`<kernel>.config` or `config` in its folder), when present. */
  kernelConfig?: string;
  /** This package's static init. */
  init: string;
  /** The kernel command line (nitro-cli's x86_64 one). */
  cmdline: string;
}

/** Kernel + init + cmdline for images that boot under QEMU's nitro-enclave machine. */
export function localBlobs(options: KernelOptions & { cmdline?: string } = {}): LocalBlobs {
  const kernel = resolveKernel(options);
  const config = [`${kernel}.config`, join(kernel, '..', 'config')].find((p) => existsSync(p));
  return {
    kernel,
    ...(config ? { kernelConfig: config } : {}),
    init: initPath(),
    cmdline: options.cmdline ?? NITRO_CLI_CMDLINE_X86_64,
  };
}

/**
 * Writes a blobs folder in nitro-cli's layout (`bzImage`, `bzImage.config` when known, `cmdline`,
 * `init`; no `nsm.ko`: the kernel has NSM built in and the init skips a missing one), usable as
 * `ee-eif build --blobs DIR` / nitro-cli's NITRO_CLI_BLOBS. Returns the blobs written.
 */
export function writeBlobsDir(
  dir: string,
  options: KernelOptions & { cmdline?: string } = {},
): LocalBlobs {
  const blobs = localBlobs(options);
  mkdirSync(dir, { recursive: true });
  copyFileSync(blobs.kernel, join(dir, 'bzImage'));
  if (blobs.kernelConfig) copyFileSync(blobs.kernelConfig, join(dir, 'bzImage.config'));
  copyFileSync(blobs.init, join(dir, 'init'));
  writeFileSync(join(dir, 'cmdline'), `${blobs.cmdline}\n`);
  return {
    kernel: join(dir, 'bzImage'),
    ...(blobs.kernelConfig ? { kernelConfig: join(dir, 'bzImage.config') } : {}),
    init: join(dir, 'init'),
    cmdline: blobs.cmdline,
  };
}
