// The vsock side of a local enclave: a vhost-user-vsock device backend that QEMU's
// nitro-enclave machine connects to (@enclave-extras/vhost-vsock), bridging the guest's vsock to
// the vsock emulation folder, plus in-process host ports (the boot heartbeat on port 9000).
import type { Duplex } from 'node:stream';
import { LocalEnclaveError, type Logger } from './errors.js';

/** The part of @enclave-extras/vhost-vsock's backend this package uses. */
export interface VsockBackend {
  /** Serves host port `port` in-process: a guest connecting to (CID 3, port) reaches `handler`. */
  listen(port: number, handler: (socket: Duplex) => void): unknown;
  close(): Promise<void> | void;
}

export interface VsockBackendOptions {
  /** The vhost-user Unix socket QEMU connects to (the backend listens on it). */
  socketPath: string;
  /** The guest's CID (answered to QEMU's GET_CONFIG). */
  guestCid: number;
  /** The vsock emulation folder the guest's vsock is bridged to. */
  vsockDir: string;
  logger?: Logger;
}

/** Creates a listening backend (QEMU may connect once this resolves). */
export type VsockBackendFactory = (
  options: VsockBackendOptions,
) => Promise<VsockBackend> | VsockBackend;

const BACKEND_PACKAGE = '@enclave-extras/vhost-vsock';

/** The default factory: `createVhostVsockBackend` of @enclave-extras/vhost-vsock. */
export async function loadDefaultBackend(): Promise<VsockBackendFactory> {
  let mod: { createVhostVsockBackend?: VsockBackendFactory };
  try {
    // A variable specifier: the backend package is a peer that may be absent.
    const specifier = BACKEND_PACKAGE;
    mod = (await import(specifier)) as typeof mod;
  } catch (err) {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_BACKEND',
      `${BACKEND_PACKAGE} cannot be loaded: install it beside @enclave-extras/local-enclave (it serves the enclave's vsock device to QEMU).`,
      { cause: err },
    );
  }
  if (typeof mod.createVhostVsockBackend !== 'function') {
    throw new LocalEnclaveError(
      'ERR_LOCAL_ENCLAVE_BACKEND',
      `${BACKEND_PACKAGE} has no createVhostVsockBackend export: update it to the version this package expects.`,
    );
  }
  return mod.createVhostVsockBackend;
}
