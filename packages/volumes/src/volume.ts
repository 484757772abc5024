// Only asynchronous file calls here: the enclave-side proxy carrying the NFS traffic may run in
// this process, and a synchronous call on the share would block the event loop that forwards it.
import {
  link,
  mkdir,
  open,
  readFile,
  rm,
  rmdir,
  stat,
  statfs,
  truncate,
  unlink,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { VolumeConfig } from './config.js';
import { errorMessage, VolumeError, type VolumeErrorCode } from './errors.js';
import { run } from './exec.js';
import {
  addKey,
  getPolicyDescriptor,
  type KeyHandle,
  keyDescriptor,
  removeKey,
  setPolicy,
} from './fscrypt.js';
import type { DataKeySource } from './keys.js';
import { SyscallError } from './libc.js';
import { type HeldLock, type LockOutcome, lockExclusive } from './lock.js';
import { silentLogger, type VolumeLogger } from './logger.js';
import { chooseEncryption, hasDmCrypt, imageFormat, openLuks } from './luks.js';
import { isMountPoint, loopDevicesFor } from './mounts.js';
import { mountNfs, syncAndUnmount, waitForNfsServer } from './nfs.js';

export interface MountVolumeOptions {
  /** Where the data key of an encrypted volume comes from (`kmsDataKeys({ kms, keyId })`). */
  dataKeys?: (volume: VolumeConfig) => DataKeySource | undefined;
  /** Private mounts of encrypted volumes go under here. Default `/run/enclave-extras/volumes`. */
  stateDir?: string;
  logger?: VolumeLogger;
  signal?: AbortSignal;
  /**
   * Where an fscrypt volume's key goes. `auto` (default): the file system's keyring where the
   * kernel has it (Linux >= 5.4), else a `logon` key in this process's session keyring, which
   * child processes (the app) inherit. `session`: always the session keyring, which is what the
   * stock 4.14 enclave kernel gets; it lets that path run on a newer kernel.
   */
  fscryptKeyring?: 'auto' | 'session';
}

export interface MountedVolume {
  readonly name: string;
  readonly mountPoint: string;
  readonly encrypted: boolean;
  /** How an encrypted volume is encrypted (`encryption.kind: auto` resolved); absent when plain. */
  readonly encryption?: 'fscrypt' | 'luks2';
  /** `sync`, then unmount everything this mount set up, in reverse order. Idempotent. */
  unmount(): Promise<void>;
}

type Undo = { what: string; run: () => Promise<void> };

const EXT4_SUPER_MAGIC = 0xef53;
const EXT4_FEATURE_INCOMPAT_ENCRYPT = 0x10000;

function fail(
  code: VolumeErrorCode,
  v: VolumeConfig,
  message: string,
  extra: { path?: string; cause?: unknown; syscall?: string; errno?: string } = {},
): VolumeError {
  return new VolumeError(code, `volume ${v.name}: ${message}`, { volume: v.name, ...extra });
}

async function unwind(stack: Undo[], logger: VolumeLogger, name: string): Promise<void> {
  while (stack.length > 0) {
    const u = stack.pop() as Undo;
    try {
      await u.run();
    } catch (err) {
      logger.warn(
        { volume: name, step: u.what, err: errorMessage(err) },
        'volumes: undo step failed',
      );
      stack.push(u); // still mounted: a later unmount() retries from here
      throw err;
    }
  }
}

/** Reads the ext4 superblock: throws ERR_VOLUME_CORRUPT unless it is ext4 with the encrypt feature. */
async function checkSuperblock(v: VolumeConfig, image: string): Promise<void> {
  const fh = await open(image, 'r');
  const sb = Buffer.alloc(1024);
  try {
    const { bytesRead: n } = await fh.read(sb, 0, 1024, 1024);
    if (n < 1024)
      throw fail(
        'ERR_VOLUME_CORRUPT',
        v,
        `${image} is shorter than an ext4 superblock (${n + 1024} bytes): the image is truncated. Restore it from a backup; it is not reformatted automatically.`,
        { path: image },
      );
  } finally {
    await fh.close();
  }
  if (sb.readUInt16LE(56) !== EXT4_SUPER_MAGIC)
    throw fail(
      'ERR_VOLUME_CORRUPT',
      v,
      `${image} has no ext4 superblock (bad magic): the header is corrupt. Restore it from a backup; it is not reformatted automatically.`,
      { path: image },
    );
  if ((sb.readUInt32LE(0x60) & EXT4_FEATURE_INCOMPAT_ENCRYPT) === 0)
    throw fail(
      'ERR_VOLUME_CORRUPT',
      v,
      `${image} is ext4 without the encrypt feature: not a volume this package created`,
      { path: image },
    );
}

async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return Number(s.bavail) * Number(s.bsize);
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Writes `data` to `path` only if `path` does not exist yet (temp file, fsync, link): never overwrites. */
async function writeNew(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
  } finally {
    await unlink(tmp).catch(() => {});
  }
  const dh = await open(dirname(path), 'r');
  try {
    await dh.sync();
  } catch {
    // some file systems refuse fsync on a directory
  } finally {
    await dh.close();
  }
}

/** The volume's lock (see lock.ts), or ERR_VOLUME_LOCKED / ERR_VOLUME_ABORTED / ERR_VOLUME_UNSUPPORTED. */
async function lockVolume(
  v: VolumeConfig,
  path: string,
  waitMs: number,
  logger: VolumeLogger,
  signal: AbortSignal | undefined,
): Promise<HeldLock> {
  let told = -1;
  let outcome: LockOutcome;
  try {
    outcome = await lockExclusive(path, {
      waitMs,
      ...(signal ? { signal } : {}),
      onBusy: (waitedMs) => {
        const tens = Math.floor(waitedMs / 10_000);
        if (tens === told) return;
        told = tens;
        logger.warn(
          { volume: v.name, lock: path, waitedMs, lockWaitMs: waitMs },
          'volumes: another enclave holds this volume; waiting for its lock',
        );
      },
    });
  } catch (err) {
    if (err instanceof SyscallError)
      throw fail(
        'ERR_VOLUME_UNSUPPORTED',
        v,
        `locking ${path} failed (${errorMessage(err)}): the NFS mount must support locks (do not mount with nolock or local_lock)`,
        { path, syscall: 'flock', errno: err.code, cause: err },
      );
    const code = (err as NodeJS.ErrnoException).code;
    throw fail(
      code === 'ENOSPC' || code === 'EDQUOT' ? 'ERR_VOLUME_NO_SPACE' : 'ERR_VOLUME_MOUNT_FAILED',
      v,
      `the lock file ${path} cannot be opened for writing (${errorMessage(err)}): an encrypted volume needs a writable export`,
      { path, syscall: 'open', ...(code ? { errno: code } : {}), cause: err },
    );
  }
  if (outcome.held) return outcome.lock;
  if (outcome.reason === 'aborted')
    throw fail('ERR_VOLUME_ABORTED', v, `waiting for the lock ${path} was aborted`, {
      path,
      cause: signal?.reason,
    });
  throw fail(
    'ERR_VOLUME_LOCKED',
    v,
    `${path} is locked by another NFS client, waited ${Math.round(outcome.waitedMs / 1000)} s: another enclave has this volume open (mounting it twice would corrupt it), or one that died without unmounting less than the NFS server's lease time ago (90 s by default). Stop the other enclave, or wait and retry; raise encryption.lockWaitMs to wait longer.`,
    { path },
  );
}

async function mountExt4(v: VolumeConfig, image: string, target: string): Promise<void> {
  const r = await run('mount', ['-t', 'ext4', '-o', 'loop,nosuid,nodev', image, target]);
  if (r.code === 0) return;
  const text = (r.stderr || r.stdout).trim();
  const corrupt = /superblock|structure needs cleaning|bad magic|corrupt/i.test(text);
  throw fail(
    corrupt ? 'ERR_VOLUME_CORRUPT' : 'ERR_VOLUME_MOUNT_FAILED',
    v,
    `mounting ${image} (ext4 on a loop device) failed: ${text || `exit ${r.code}`}${corrupt ? '. The image is damaged: restore it or run e2fsck on a copy; it is not reformatted automatically.' : '. Does the kernel have ext4 and loop devices?'}`,
    { path: image, syscall: 'mount', cause: text },
  );
}

async function createImage(
  v: VolumeConfig,
  image: string,
  size: number,
  logger: VolumeLogger,
): Promise<void> {
  const partial = `${image}.partial`;
  await rm(partial, { force: true }); // ours: a first boot that died while formatting
  await (await open(partial, 'wx', 0o600)).close();
  try {
    await truncate(partial, size);
    const r = await run('mkfs.ext4', [
      '-q',
      '-F',
      '-b',
      '4096',
      '-m',
      '0',
      '-O',
      'encrypt',
      '-L',
      v.name.slice(0, 16),
      '-E',
      'nodiscard',
      partial,
    ]);
    if (r.code !== 0)
      throw fail(
        r.spawnError?.code === 'ENOENT'
          ? 'ERR_VOLUME_UNSUPPORTED'
          : /No space/i.test(r.stderr)
            ? 'ERR_VOLUME_NO_SPACE'
            : 'ERR_VOLUME_MOUNT_FAILED',
        v,
        r.spawnError?.code === 'ENOENT'
          ? 'mkfs.ext4 is missing: put e2fsprogs in the enclave image (needed on the first boot only)'
          : `mkfs.ext4 on ${partial} failed: ${r.stderr.trim() || `exit ${r.code}`}`,
        { path: partial, cause: r.spawnError ?? r.stderr },
      );
    const ph = await open(partial, 'r');
    try {
      await ph.sync();
    } finally {
      await ph.close();
    }
    await link(partial, image); // fails with EEXIST rather than replace an image
  } catch (err) {
    await rm(partial, { force: true });
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC')
      throw fail('ERR_VOLUME_NO_SPACE', v, `no space on the export for ${image}`, {
        path: image,
        cause: err,
      });
    throw err;
  }
  await unlink(partial);
  logger.info({ volume: v.name, image, size }, 'volumes: created the encrypted image');
}

/**
 * Mounts one volume, checking everything before the app may start: a missing mount point, a
 * mount point already in use, a server that never answers, a refused or wrong key, a corrupt
 * image, too little free space: each a VolumeError, and whatever was set up is undone first.
 * Never formats or overwrites an existing image or key blob.
 */
export async function mountVolume(
  v: VolumeConfig,
  options: MountVolumeOptions = {},
): Promise<MountedVolume> {
  const logger = options.logger ?? silentLogger;
  const stack: Undo[] = [];
  const signal = options.signal;
  let used: 'fscrypt' | 'luks2' | undefined;
  try {
    // 1. the mount point
    let st: Awaited<ReturnType<typeof stat>> | undefined;
    try {
      st = await stat(v.mountPoint);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (!st) {
      if (!v.createMountPoint)
        throw fail(
          'ERR_VOLUME_MOUNT_POINT_MISSING',
          v,
          `mount point ${v.mountPoint} does not exist: create it in the image (mkdir) or set createMountPoint: true`,
          { path: v.mountPoint },
        );
      await mkdir(v.mountPoint, { recursive: true, mode: 0o755 });
      stack.push({ what: `rmdir ${v.mountPoint}`, run: () => rmdir(v.mountPoint).catch(() => {}) });
    } else if (!st.isDirectory()) {
      throw fail(
        'ERR_VOLUME_MOUNT_POINT_MISSING',
        v,
        `mount point ${v.mountPoint} is not a directory`,
        { path: v.mountPoint },
      );
    }
    if (isMountPoint(v.mountPoint))
      throw fail(
        'ERR_VOLUME_ALREADY_MOUNTED',
        v,
        `${v.mountPoint} is already a mount point: unmount it first (or is another volume using it?)`,
        { path: v.mountPoint },
      );

    // 2. the NFS export
    await waitForNfsServer({
      host: v.server.host,
      port: v.server.port,
      readyTimeoutMs: v.readyTimeoutMs,
      volume: v.name,
      ...(signal ? { signal } : {}),
      onRetry: (attempt, err) => {
        if (attempt === 1 || attempt % 10 === 0)
          logger.info(
            { volume: v.name, attempt, err: errorMessage(err) },
            'volumes: NFS server not ready yet, retrying',
          );
      },
    });
    const enc = v.encryption;
    const base = join(options.stateDir ?? '/run/enclave-extras/volumes', v.name);
    const nfsDir = enc ? join(base, 'nfs') : v.mountPoint;
    if (enc) {
      await mkdir(nfsDir, { recursive: true, mode: 0o700 });
      if (isMountPoint(nfsDir))
        throw fail(
          'ERR_VOLUME_ALREADY_MOUNTED',
          v,
          `${nfsDir} is already mounted: is this volume mounted by another process?`,
          { path: nfsDir },
        );
    }
    await mountNfs({
      host: v.server.host,
      port: v.server.port,
      export: v.server.export,
      target: nfsDir,
      vers: v.nfs.vers,
      timeo: v.nfs.timeo,
      retrans: v.nfs.retrans,
      extra: v.nfs.options,
      volume: v.name,
      ...(signal ? { signal } : {}),
    });
    stack.push({ what: `umount ${nfsDir}`, run: () => syncAndUnmount(nfsDir, v.name) });
    logger.info(
      {
        volume: v.name,
        server: `${v.server.host}:${v.server.port}`,
        export: v.server.export,
        at: nfsDir,
      },
      'volumes: NFS mounted',
    );

    if (enc) {
      const image = join(nfsDir, enc.image ?? `${v.name}.img`);
      const blobPath = join(nfsDir, enc.keyBlob ?? `${enc.image ?? `${v.name}.img`}.key`);
      // one enclave at a time: before anything reads or creates the image or its key
      const lock = await lockVolume(v, `${image}.lock`, enc.lockWaitMs, logger, signal);
      stack.push({ what: `unlock ${lock.path}`, run: () => lock.release() });
      const keys = options.dataKeys?.(v);
      if (!keys)
        throw fail(
          'ERR_VOLUME_CONFIG',
          v,
          'an encrypted volume needs a data key source (dataKeys: kmsDataKeys({ kms, keyId }))',
        );
      const [haveImage, haveBlob] = [await exists(image), await exists(blobPath)];
      if (haveImage && !haveBlob)
        throw fail(
          'ERR_VOLUME_INCOMPLETE',
          v,
          `${image} exists but its key blob ${blobPath} does not: the volume cannot be opened, and a new key is never made for an existing image. Restore the blob.`,
          { path: blobPath },
        );
      const existing = haveImage ? await imageFormat(image) : undefined;
      const choice = chooseEncryption(enc.kind, {
        dmCrypt: await hasDmCrypt(),
        ...(existing ? { existing } : {}),
      });
      if ('error' in choice)
        throw fail(choice.error, v, existing ? `${image} ${choice.message}` : choice.message, {
          path: image,
        });
      logger.info(
        { volume: v.name, encryption: choice.kind, reason: choice.reason },
        `volumes: encryption ${choice.kind}`,
      );
      used = choice.kind;
      const luks = choice.kind === 'luks2';
      if (luks && haveBlob && !haveImage)
        throw fail(
          'ERR_VOLUME_INCOMPLETE',
          v,
          `the key blob ${blobPath} exists but the LUKS2 container ${image} does not: a container is only created when neither exists. Restore the container, or delete the blob if this is a first boot that never finished.`,
          { path: image },
        );
      let key: Uint8Array;
      let newBlob: Uint8Array | undefined;
      if (haveBlob) {
        const blob = await readFile(blobPath);
        try {
          key = await keys.decrypt(blob);
        } catch (err) {
          throw fail(
            'ERR_VOLUME_KEY_REFUSED',
            v,
            `KMS refused to decrypt the data key ${blobPath} (${errorMessage(err)}): this enclave's attestation does not satisfy the key policy, or the key or its encryption context changed. Nothing on the volume was touched.`,
            { path: blobPath, cause: err },
          );
        }
      } else {
        if ((await freeBytes(nfsDir)) < enc.size)
          throw fail(
            'ERR_VOLUME_NO_SPACE',
            v,
            `the export has ${await freeBytes(nfsDir)} bytes free, the image needs ${enc.size}: free space on the parent or choose a smaller size`,
            { path: nfsDir },
          );
        let made: { plaintext: Uint8Array; ciphertext: Uint8Array };
        try {
          made = await keys.generate();
        } catch (err) {
          throw fail(
            'ERR_VOLUME_KEY_REFUSED',
            v,
            `KMS refused GenerateDataKey for key ${enc.keyId} (${errorMessage(err)}): check the key policy and this enclave's PCRs`,
            { cause: err },
          );
        }
        key = made.plaintext;
        if (luks)
          newBlob = made.ciphertext; // written once the container is formatted
        else {
          await writeNew(blobPath, made.ciphertext);
          logger.info(
            { volume: v.name, blob: blobPath },
            'volumes: new data key stored beside the image',
          );
        }
      }
      try {
        if (luks) {
          if (key.length !== 64)
            throw fail(
              'ERR_VOLUME_WRONG_KEY',
              v,
              `the data key is ${key.length} bytes, a volume key is 64 (AES-256-XTS)`,
            );
          await openLuks({
            v,
            image,
            blobPath,
            key,
            ...(newBlob ? { newBlob } : {}),
            stack,
            logger,
            writeNew,
          });
        } else {
          if (key.length !== 64)
            throw fail(
              'ERR_VOLUME_WRONG_KEY',
              v,
              `the data key is ${key.length} bytes, fscrypt AES-256-XTS needs 64`,
            );
          const fresh = !haveImage;
          if (fresh) await createImage(v, image, enc.size, logger);
          await checkSuperblock(v, image);
          if (loopDevicesFor(image).length > 0)
            throw fail(
              'ERR_VOLUME_ALREADY_MOUNTED',
              v,
              `${image} is already attached to ${loopDevicesFor(image).join(', ')}: mounting it twice would corrupt it`,
              { path: image },
            );
          const fsDir = join(base, 'fs');
          await mkdir(fsDir, { recursive: true, mode: 0o700 });
          await mountExt4(v, image, fsDir);
          stack.push({ what: `umount ${fsDir}`, run: () => syncAndUnmount(fsDir, v.name) });
          let handle: KeyHandle;
          try {
            handle = await addKey(fsDir, key, options.fscryptKeyring ?? 'auto');
          } catch (err) {
            throw fail(
              'ERR_VOLUME_UNSUPPORTED',
              v,
              `the kernel refused the fscrypt key (${errorMessage(err)}): it needs CONFIG_FS_ENCRYPTION and AES-XTS/CTS`,
              { cause: err },
            );
          }
          stack.push({ what: 'remove the fscrypt key', run: () => removeKey(handle) });
          const dataDir = join(fsDir, 'data');
          const want = keyDescriptor(key);
          if (fresh) {
            await mkdir(dataDir, { mode: 0o755 });
            if (!(await setPolicy(dataDir, want)))
              throw fail(
                'ERR_VOLUME_UNSUPPORTED',
                v,
                `setting the fscrypt policy on ${dataDir} failed: the kernel needs fscrypt with AES-256-XTS/CTS`,
                { path: dataDir },
              );
          } else {
            const have = await getPolicyDescriptor(dataDir).catch(() => undefined);
            if (!have)
              throw fail(
                'ERR_VOLUME_CORRUPT',
                v,
                `${dataDir} in ${image} is missing or has no encryption policy: not a volume this package created, or damaged`,
                { path: image },
              );
            if (!have.equals(want))
              throw fail(
                'ERR_VOLUME_WRONG_KEY',
                v,
                `the data key from ${blobPath} (descriptor ${want.toString('hex')}) is not the key of ${image} (descriptor ${have.toString('hex')}): the blob was replaced. Restore the right blob.`,
                { path: blobPath },
              );
          }
          const r = await run('mount', ['--bind', dataDir, v.mountPoint]);
          if (r.code !== 0)
            throw fail(
              'ERR_VOLUME_MOUNT_FAILED',
              v,
              `bind-mounting ${dataDir} on ${v.mountPoint} failed: ${r.stderr.trim()}`,
              { path: v.mountPoint, cause: r.stderr },
            );
          stack.push({
            what: `umount ${v.mountPoint}`,
            run: () => syncAndUnmount(v.mountPoint, v.name),
          });
        }
      } finally {
        key.fill?.(0);
      }
    }

    if (v.minFreeMiB > 0) {
      const free = await freeBytes(v.mountPoint);
      if (free < v.minFreeMiB * 1024 * 1024)
        throw fail(
          'ERR_VOLUME_NO_SPACE',
          v,
          `only ${Math.floor(free / 1024 / 1024)} MiB free on ${v.mountPoint}, minFreeMiB is ${v.minFreeMiB}: free space (or lower minFreeMiB) before starting the app`,
          { path: v.mountPoint },
        );
    }
    logger.info(
      {
        volume: v.name,
        mountPoint: v.mountPoint,
        encrypted: Boolean(enc),
        ...(used ? { encryption: used } : {}),
      },
      'volumes: mounted',
    );
  } catch (err) {
    await unwind(stack, logger, v.name).catch(() => {});
    if (err instanceof VolumeError) throw err;
    throw fail('ERR_VOLUME_MOUNT_FAILED', v, `mount failed: ${errorMessage(err)}`, { cause: err });
  }
  let pending: Promise<void> | undefined;
  return {
    name: v.name,
    mountPoint: v.mountPoint,
    encrypted: Boolean(v.encryption),
    ...(used ? { encryption: used } : {}),
    unmount() {
      if (stack.length === 0) return pending ?? Promise.resolve();
      pending ??= unwind(stack, logger, v.name)
        .then(() => logger.info({ volume: v.name }, 'volumes: unmounted'))
        .finally(() => {
          pending = undefined;
        });
      return pending;
    },
  };
}

export interface MountedVolumes {
  readonly volumes: readonly MountedVolume[];
  /** Unmounts in reverse order; tries every volume, throws the first failure. */
  unmountAll(): Promise<void>;
}

/** Mounts the list in order; when one fails, the ones already mounted are unmounted and it throws. */
export async function mountVolumes(
  list: readonly VolumeConfig[],
  options: MountVolumeOptions = {},
): Promise<MountedVolumes> {
  const mounted: MountedVolume[] = [];
  const unmountAll = async () => {
    let first: unknown;
    for (const m of [...mounted].reverse()) {
      try {
        await m.unmount();
      } catch (err) {
        first ??= err;
      }
    }
    if (first) throw first;
  };
  try {
    for (const v of list) mounted.push(await mountVolume(v, options));
  } catch (err) {
    await unmountAll().catch(() => {});
    throw err;
  }
  return { volumes: mounted, unmountAll };
}
