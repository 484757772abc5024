import { createEmulatedTransport } from './emulated.js';
import { kernelTransport } from './kernel.js';
import type { VsockTransport } from './transport.js';

/** Environment variable that opts into the Unix-socket emulation (its value is the directory). */
export const VSOCK_DIR_ENV = 'ENCLAVE_EXTRAS_VSOCK_DIR';

const emulations = new Map<string, VsockTransport>();

/**
 * The transport used when none is passed: the emulation over `$ENCLAVE_EXTRAS_VSOCK_DIR` when
 * that variable is set and non-empty (an explicit opt-in), else {@link kernelTransport}.
 * There is no silent fallback: without the variable, a machine without vsock gets
 * EAFNOSUPPORT/ENODEV errors.
 */
export function defaultTransport(): VsockTransport {
  const dir = process.env[VSOCK_DIR_ENV];
  if (dir === undefined || dir === '') return kernelTransport;
  let t = emulations.get(dir);
  if (!t) {
    t = createEmulatedTransport({ dir });
    emulations.set(dir, t);
  }
  return t;
}
