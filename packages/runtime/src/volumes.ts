// The volumes hook of runEnclave (issue 12): routes for the volumes that name one, mounts after
// the network and routes are up and before the app, sync + umount after it (bounded by the drain
// timeout). The mounting itself is @enclave-extras/volumes.
import type { Logger } from '@enclave-extras/proxy';
import { routeSchema } from '@enclave-extras/proxy/config';
import {
  type MountedVolumes,
  type MountVolumeOptions,
  mountVolumes,
  volumeRoutes,
} from '@enclave-extras/volumes';
import type { EnclaveConfig } from './config.js';

/** The proxy routes of `volumes[].route` (`127.0.0.x:2049` -> vsock -> the parent's NFS route). */
export function volumeRouteConfigs(config: EnclaveConfig) {
  return volumeRoutes(config.volumes).map((r) => routeSchema.parse(r));
}

/** Mounts every volume in order; on a failure the ones mounted are unmounted and it throws. */
export async function mountEnclaveVolumes(
  config: EnclaveConfig,
  log: Logger,
  dataKeys: MountVolumeOptions['dataKeys'] | undefined,
  signal?: AbortSignal,
): Promise<MountedVolumes | undefined> {
  if (config.volumes.length === 0) return undefined;
  return mountVolumes(config.volumes, {
    logger: log,
    ...(dataKeys ? { dataKeys } : {}),
    ...(signal ? { signal } : {}),
  });
}

/** sync + umount, waiting at most `timeoutMs` (a hard NFS mount whose parent is gone can hang). */
export async function unmountEnclaveVolumes(
  volumes: MountedVolumes | undefined,
  timeoutMs: number,
  log: Logger,
): Promise<void> {
  if (!volumes) return;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), Math.max(timeoutMs, 1000));
  });
  try {
    const r = await Promise.race([volumes.unmountAll().then(() => 'done' as const), timedOut]);
    if (r === 'timeout')
      log.error(
        { timeoutMs },
        'volumes: unmount did not finish within the drain timeout (is the parent NFS server gone?)',
      );
  } catch (err) {
    log.error(
      { err: (err as Error).message, code: (err as { code?: string }).code },
      'volumes: unmount failed',
    );
  } finally {
    clearTimeout(timer);
  }
}
