import { EifError } from '../errors.js';

/** File type bits of `st_mode` as newc stores them. */
export const S_IFMT = 0o170000;
export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFDIR = 0o040000;
export const S_IFBLK = 0o060000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

/** One newc header. `name` is the path inside the archive (no leading `/`). */
export interface CpioHeader {
  name: string;
  ino: number;
  /** Full `st_mode`: type bits | permission bits (setuid/setgid/sticky included). */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  /** Size of the data that follows (for a symlink: the target's length). */
  size: number;
  devMajor: number;
  devMinor: number;
  rdevMajor: number;
  rdevMinor: number;
}

const MAX_U32 = 0xffffffff;
/** Linux's PATH_MAX: the initramfs unpacker rejects longer names (namesize counts the NUL). */
const PATH_MAX = 4096;

function hex8(field: string, name: string, value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) {
    throw new EifError(
      'ERR_EIF_ROOTFS_UNSUPPORTED',
      `cpio entry ${JSON.stringify(name)}: ${field} ${value} does not fit the newc format's 32-bit field; ` +
        'files must be smaller than 4 GiB and ids/times must be 32-bit',
      { field: `${name}.${field}`, value },
    );
  }
  return value.toString(16).padStart(8, '0');
}

/** Bytes needed after `length` bytes to reach a multiple of 4. */
export function pad4(length: number): number {
  return (4 - (length % 4)) % 4;
}

/**
 * Encodes a newc ("070701") header, its NUL-terminated name and the padding that aligns the data
 * that follows to 4 bytes. The header itself is 110 bytes.
 */
export function encodeHeader(h: CpioHeader): Buffer {
  const name = Buffer.from(h.name, 'utf8');
  if (name.includes(0)) {
    throw new EifError('ERR_EIF_ROOTFS_UNSUPPORTED', `cpio entry name contains a NUL byte`, {
      field: h.name,
    });
  }
  if (name.length + 1 > PATH_MAX) {
    throw new EifError(
      'ERR_EIF_ROOTFS_UNSUPPORTED',
      `cpio entry ${JSON.stringify(`${h.name.slice(0, 80)}...`)} has a ${name.length}-byte path; the kernel's initramfs unpacker refuses paths of ${PATH_MAX} bytes or more (the enclave would not boot)`,
      { field: h.name.slice(0, 200) },
    );
  }
  const fields =
    '070701' +
    hex8('ino', h.name, h.ino) +
    hex8('mode', h.name, h.mode) +
    hex8('uid', h.name, h.uid) +
    hex8('gid', h.name, h.gid) +
    hex8('nlink', h.name, h.nlink) +
    hex8('mtime', h.name, h.mtime) +
    hex8('filesize', h.name, h.size) +
    hex8('devmajor', h.name, h.devMajor) +
    hex8('devminor', h.name, h.devMinor) +
    hex8('rdevmajor', h.name, h.rdevMajor) +
    hex8('rdevminor', h.name, h.rdevMinor) +
    hex8('namesize', h.name, name.length + 1) +
    '00000000';
  const total = 110 + name.length + 1;
  const out = Buffer.alloc(total + pad4(total));
  out.write(fields, 0, 'latin1');
  name.copy(out, 110);
  return out;
}

/** The zero padding after `size` data bytes. */
export function dataPadding(size: number): Buffer {
  return Buffer.alloc(pad4(size));
}

/** Header conventions: ours (canonical) or the ones linuxkit's cpio writer (nitro-cli) uses. */
export interface CpioFlavor {
  /** First inode number; entries get consecutive numbers (hardlinks share one). */
  firstIno: number;
  /** `devmajor`/`devminor` written in every header. */
  devMajor: number;
  devMinor: number;
  /** The archive's total length is padded with zeros to a multiple of this after the trailer. */
  trailerPad: number;
  /** Whether the trailer takes the next inode number (linuxkit) or 0. */
  trailerIno: boolean;
}

/** Canonical: inodes from 1, device 0:0, trailer with inode 0, padded to 512 like GNU cpio. */
export const CANONICAL_FLAVOR: CpioFlavor = {
  firstIno: 1,
  devMajor: 0,
  devMinor: 0,
  trailerPad: 512,
  trailerIno: false,
};

/**
 * linuxkit's writer (github.com/surma/gocpio, used by nitro-cli's linuxkit): inodes from 721,
 * device 3:1 in every header, the trailer takes the next inode, archive padded to 512.
 */
export const LINUXKIT_FLAVOR: CpioFlavor = {
  firstIno: 721,
  devMajor: 3,
  devMinor: 1,
  trailerPad: 512,
  trailerIno: true,
};

/** The `TRAILER!!!` entry plus the zero padding that ends an archive of `length` bytes so far. */
export function encodeTrailer(flavor: CpioFlavor, ino: number, length: number): Buffer {
  const header = encodeHeader({
    name: 'TRAILER!!!',
    ino: flavor.trailerIno ? ino : 0,
    mode: 0,
    uid: 0,
    gid: 0,
    nlink: 1,
    mtime: 0,
    size: 0,
    devMajor: flavor.devMajor,
    devMinor: flavor.devMinor,
    rdevMajor: 0,
    rdevMinor: 0,
  });
  const end = length + header.length;
  const pad = (flavor.trailerPad - (end % flavor.trailerPad)) % flavor.trailerPad;
  return Buffer.concat([header, Buffer.alloc(pad)]);
}
