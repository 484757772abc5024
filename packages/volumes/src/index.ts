export {
  encryptionSchema,
  kmsAccessSchema,
  nfsOptionsSchema,
  sizeSchema,
  type VolumeConfig,
  type VolumeConfigInput,
  volumeRoutes,
  volumeSchema,
  volumesSchema,
} from './config.js';
export {
  VOLUME_ERROR_CODES,
  VolumeError,
  type VolumeErrorCode,
  type VolumeErrorOptions,
} from './errors.js';
export {
  checkExports,
  checkNfsListeners,
  type ExportClient,
  type ExportEntry,
  type ExportFinding,
  listeningAddresses,
  type NfsExportOptions,
  nfsExportLine,
  parseExports,
} from './exports.js';
export { type DataKeySource, type KmsDataKeysOptions, type KmsLike, kmsDataKeys } from './keys.js';
export type { VolumeLogger } from './logger.js';

export {
  nfsMountOptionString,
  probeNfs,
  type WaitForServerOptions,
  waitForNfsServer,
} from './nfs.js';
export {
  type MountedVolume,
  type MountedVolumes,
  type MountVolumeOptions,
  mountVolume,
  mountVolumes,
} from './volume.js';
