// Internal: the one listen step of the parent-side vsock services (time, logs), with the typed
// ERR_RUNTIME_LISTEN error naming the address and the config key to change.
import type { VsockServer } from '@enclave-extras/vsock';
import { RuntimeError } from './errors.js';

/** Listens `server` on vsock `cid` (default any) and `port`; resolves to the port bound. */
export async function listenVsockService(
  server: VsockServer,
  options: { cid?: number; port: number },
  what: string,
  configKey: string,
): Promise<{ port: number; where: string }> {
  const where = `vsock:${options.cid ?? 'any'}:${options.port}`;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) =>
      reject(
        new RuntimeError(
          'ERR_RUNTIME_LISTEN',
          `The ${what} cannot listen on ${where}: ${err.message}. Pick a free port for ${configKey}.`,
          { cause: err, syscall: 'listen', address: where },
        ),
      );
    server.once('error', onError);
    server.listen(
      { port: options.port, ...(options.cid !== undefined ? { cid: options.cid } : {}) },
      () => {
        server.removeListener('error', onError);
        resolve();
      },
    );
  });
  return { port: server.address()?.port ?? options.port, where };
}
