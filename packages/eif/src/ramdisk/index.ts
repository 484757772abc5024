export type { ImageConfig } from './image.js';
export {
  type BootstrapRamdiskOptions,
  bootstrapRamdisk,
  type CustomerRamdiskOptions,
  commandAndEnv,
  customerRamdisk,
  LINUXKIT_MTIME,
  type RamdiskCompression,
} from './ramdisk.js';
export {
  MOUNT_DIRS,
  type OpenRootfsOptions,
  openRootfs,
  type Rootfs,
  type RootfsSource,
} from './rootfs.js';
