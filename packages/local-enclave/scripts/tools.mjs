// Finding QEMU (with the nitro-enclave machine) and the enclave kernel for the suite, the bench
// and the demo, without building anything that takes long unless asked.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repo } from './demo-image.mjs';

export const toolsDir = join(repo, '..', 'shared', 'tools');

function lastLine(s) {
  return (s ?? '').trim().split('\n').pop() ?? '';
}

/** { qemu } or { skip: why }. ENCLAVE_EXTRAS_QEMU, else nsm-vm --qemu-path (~6 min the first time). */
export function findQemu(say = () => {}) {
  let qemu = process.env.ENCLAVE_EXTRAS_QEMU;
  if (!qemu) {
    const nsmVm = join(toolsDir, 'nsm-vm');
    if (!existsSync(nsmVm)) {
      return {
        skip: `no QEMU: set ENCLAVE_EXTRAS_QEMU, or put the shared tools beside the repo (${nsmVm})`,
      };
    }
    say(`QEMU from ${nsmVm} --qemu-path (builds its cache the first time, ~6 min)`);
    const r = spawnSync(nsmVm, ['--qemu-path'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (r.status !== 0)
      return { skip: `nsm-vm --qemu-path failed (exit ${r.status}): ${lastLine(r.stderr)}` };
    qemu = lastLine(r.stdout);
  }
  const m = spawnSync(qemu, ['-M', 'help'], { encoding: 'utf8' });
  if (m.status !== 0 || !/^nitro-enclave\s/m.test(m.stdout ?? '')) {
    return {
      skip: `${qemu} has no nitro-enclave machine (QEMU >= 9.2 built with libcbor + gnutls)`,
    };
  }
  return { qemu };
}

/**
 * { kernel } or { skip: why }. ENCLAVE_EXTRAS_KERNEL, else the enclave-kernel tool's cached
 * bzImage; the tool builds it (~15-40 min) only when ENCLAVE_EXTRAS_BUILD_KERNEL=1 or `build`.
 */
export function findKernel({ build = process.env.ENCLAVE_EXTRAS_BUILD_KERNEL === '1' } = {}) {
  if (process.env.ENCLAVE_EXTRAS_KERNEL) return { kernel: process.env.ENCLAVE_EXTRAS_KERNEL };
  const tool = join(toolsDir, 'enclave-kernel');
  const cached = join(
    process.env.ENCLAVE_KERNEL_CACHE ?? '/var/cache/enclave-extras/enclave-kernel',
    'bzImage',
  );
  if (!existsSync(tool)) {
    return {
      skip: 'no enclave kernel: set ENCLAVE_EXTRAS_KERNEL (a bzImage with NSM, VIRTIO_MMIO_CMDLINE_DEVICES and vsock built in)',
    };
  }
  if (!existsSync(cached) && !build) {
    return {
      skip: `the enclave kernel is not built yet: run ${tool} once (~15-40 min, cached) or set ENCLAVE_EXTRAS_BUILD_KERNEL=1`,
    };
  }
  const r = spawnSync(tool, [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) return { skip: `${tool} failed (exit ${r.status})` };
  return { kernel: lastLine(r.stdout) };
}
