// fscrypt v1 policies (the only kind Linux 4.14, the stock enclave kernel, has) through koffi.
// Calls that may do block I/O (set/get policy) run on koffi's worker threads so the event loop,
// which may carry the NFS traffic under the loop device, keeps running. Internal only.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import koffi from 'koffi';
import { SyscallError, sys } from './libc.js';

const FS_IOC_SET_ENCRYPTION_POLICY = 0x800c6613;
const FS_IOC_GET_ENCRYPTION_POLICY = 0x400c6615;
const FS_IOC_ADD_ENCRYPTION_KEY = 0xc0506617;
const FS_IOC_REMOVE_ENCRYPTION_KEY = 0xc0406618;
const FSCRYPT_MODE_AES_256_XTS = 1;
const FSCRYPT_MODE_AES_256_CTS = 4;
const FSCRYPT_POLICY_FLAGS_PAD_32 = 0x03;
const FSCRYPT_KEY_SPEC_TYPE_DESCRIPTOR = 1;
const KEY_SPEC_SESSION_KEYRING = -3;
const KEYCTL_GET_KEYRING_ID = 0;
const KEYCTL_INVALIDATE = 21;
export const FSCRYPT_KEY_SIZE = 64;

const SYS_add_key = 248;
const SYS_keyctl = 250;

/** The v1 master key descriptor fscrypt's own tool uses: SHA-512(SHA-512(key))[0..8]. */
export function keyDescriptor(key: Uint8Array): Buffer {
  const once = createHash('sha512').update(key).digest();
  return createHash('sha512').update(once).digest().subarray(0, 8);
}

function ioctlAsync(fd: number, req: number, arg: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    sys().ioctl.async(fd, req, arg, (err: unknown, res: number) =>
      err ? reject(err) : resolve(res),
    );
  });
}

async function withDir<T>(dir: string, fn: (fd: number) => Promise<T>): Promise<T> {
  const fh = await open(dir, 'r');
  try {
    return await fn(fh.fd);
  } finally {
    await fh.close();
  }
}

/** Sets a v1 policy (AES-256-XTS contents, AES-256-CTS names, 32-byte name padding) on an empty dir. */
export async function setPolicy(dir: string, descriptor: Buffer): Promise<boolean> {
  const arg = Buffer.alloc(12);
  arg[0] = 0; // FSCRYPT_POLICY_V1
  arg[1] = FSCRYPT_MODE_AES_256_XTS;
  arg[2] = FSCRYPT_MODE_AES_256_CTS;
  arg[3] = FSCRYPT_POLICY_FLAGS_PAD_32;
  descriptor.copy(arg, 4);
  return withDir(
    dir,
    async (fd) => (await ioctlAsync(fd, FS_IOC_SET_ENCRYPTION_POLICY, arg)) === 0,
  );
}

/** The v1 policy's key descriptor of `dir`, or undefined when it has none (or cannot be read). */
export async function getPolicyDescriptor(dir: string): Promise<Buffer | undefined> {
  const arg = Buffer.alloc(12);
  const ok = await withDir(
    dir,
    async (fd) => (await ioctlAsync(fd, FS_IOC_GET_ENCRYPTION_POLICY, arg)) === 0,
  );
  if (!ok || arg[0] !== 0) return undefined;
  return Buffer.from(arg.subarray(4, 12));
}

export type KeyHandle =
  | { kind: 'filesystem'; mountRoot: string; descriptor: Buffer }
  | { kind: 'keyring'; serial: number };

/**
 * Makes the key available: the filesystem keyring (FS_IOC_ADD_ENCRYPTION_KEY, Linux >= 5.4;
 * visible to every process) or, on older kernels (4.14), a "logon" key `fscrypt:<descriptor>` in
 * this process's session keyring (inherited by the children it starts, i.e. the app).
 */
export async function addKey(
  mountRoot: string,
  key: Uint8Array,
  keyring: 'auto' | 'session' = 'auto',
): Promise<KeyHandle> {
  const descriptor = keyDescriptor(key);
  if (keyring === 'session') return addSessionKey(descriptor, key);
  const arg = Buffer.alloc(80 + key.length);
  arg.writeUInt32LE(FSCRYPT_KEY_SPEC_TYPE_DESCRIPTOR, 0);
  descriptor.copy(arg, 8);
  arg.writeUInt32LE(key.length, 40);
  Buffer.from(key).copy(arg, 80);
  // the ioctl itself does no block I/O (it only fills the filesystem's keyring): a direct call,
  // so errno is ours to read
  const fh = await open(mountRoot, 'r');
  let rc: number;
  let errno = 0;
  try {
    rc = sys().ioctl(fh.fd, FS_IOC_ADD_ENCRYPTION_KEY, arg);
    if (rc !== 0) errno = koffi.errno();
  } finally {
    await fh.close();
    arg.fill(0);
  }
  if (rc === 0) return { kind: 'filesystem', mountRoot, descriptor };
  if (errno !== koffi.os.errno.ENOTTY && errno !== koffi.os.errno.EOPNOTSUPP)
    throw new SyscallError('ioctl(FS_IOC_ADD_ENCRYPTION_KEY)', errno);
  return addSessionKey(descriptor, key);
}

function addSessionKey(descriptor: Buffer, key: Uint8Array): KeyHandle {
  // Linux < 5.4: a session keyring key. Make sure this process has its own session keyring first,
  // so the key outlives this call and the app (a child) inherits it.
  if (sys().keyctl(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1) < 0)
    throw new SyscallError('keyctl(GET_KEYRING_ID)', koffi.errno());
  const payload = Buffer.alloc(72);
  payload.writeUInt32LE(0, 0);
  Buffer.from(key).copy(payload, 4);
  payload.writeUInt32LE(key.length, 68);
  const serial = sys().addKey(
    SYS_add_key,
    'logon',
    `fscrypt:${descriptor.toString('hex')}`,
    payload,
    payload.length,
    KEY_SPEC_SESSION_KEYRING,
  );
  const e = serial < 0 ? koffi.errno() : 0;
  payload.fill(0);
  if (serial < 0) throw new SyscallError('add_key(logon)', e);
  return { kind: 'keyring', serial };
}

/** Forgets the key (best effort; the filesystem keyring also goes away at umount). */
export async function removeKey(h: KeyHandle): Promise<void> {
  if (h.kind === 'keyring') {
    sys().keyctl(SYS_keyctl, KEYCTL_INVALIDATE, h.serial, 0);
    return;
  }
  const arg = Buffer.alloc(64);
  arg.writeUInt32LE(FSCRYPT_KEY_SPEC_TYPE_DESCRIPTOR, 0);
  h.descriptor.copy(arg, 8);
  try {
    await withDir(h.mountRoot, (fd) => ioctlAsync(fd, FS_IOC_REMOVE_ENCRYPTION_KEY, arg));
  } catch {
    // already gone with the mount
  }
}
