// LUKS2 (dm-crypt) volumes: a LUKS2 container file on the NFS share, attached to a loop device,
// opened with cryptsetup (the data key on stdin, never on argv or disk), ext4 inside. Only
// asynchronous calls: the NFS traffic under the loop device may be carried by this process.
import { access, link, open, rm, stat, unlink } from 'node:fs/promises';
import type { VolumeConfig } from './config.js';
import { VolumeError, type VolumeErrorCode } from './errors.js';
import { run } from './exec.js';
import type { VolumeLogger } from './logger.js';
import { loopDevicesFor } from './mounts.js';
import { syncAndUnmount } from './nfs.js';

/** `encryption.kind` in the config. */
export type EncryptionKind = 'fscrypt' | 'luks2' | 'auto';

/** What the header of an existing image file says it is. */
export type ImageFormat = 'luks2' | 'luks1' | 'ext4' | 'unknown';

const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]); // "LUKS\xba\xbe"
const EXT4_SUPER_MAGIC = 0xef53;

/** Reads the first bytes of an image: a LUKS header (magic + version) or an ext4 superblock. */
export async function imageFormat(path: string): Promise<ImageFormat> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(2048);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    if (bytesRead >= 8 && head.subarray(0, 6).equals(LUKS_MAGIC)) {
      const version = head.readUInt16BE(6);
      return version === 2 ? 'luks2' : version === 1 ? 'luks1' : 'unknown';
    }
    if (bytesRead >= 1024 + 58 && head.readUInt16LE(1024 + 56) === EXT4_SUPER_MAGIC) return 'ext4';
    return 'unknown';
  } finally {
    await fh.close();
  }
}

/** What the kernel (and image) offer, for `chooseEncryption`. */
export interface EncryptionFacts {
  /** dm-crypt is usable: /sys/module/dm_crypt exists (loaded or built in with a sysfs entry). */
  dmCrypt: boolean;
  /** The header of the existing image, when there is one. */
  existing?: ImageFormat;
}

export interface EncryptionChoice {
  kind: 'fscrypt' | 'luks2';
  /** Why (logged). */
  reason: string;
}

/**
 * Picks fscrypt or LUKS2 for a volume. An existing image decides for itself (its header), so
 * `auto` never reinterprets a volume; a new one is LUKS2 under `auto` when the kernel has
 * dm-crypt, else fscrypt. Throws a message (the caller wraps it) when the configured kind
 * does not match the existing image or the kernel cannot open it.
 */
export function chooseEncryption(
  wanted: EncryptionKind,
  facts: EncryptionFacts,
): EncryptionChoice | { error: VolumeErrorCode; message: string } {
  const ex = facts.existing;
  if (ex === 'luks1' || ex === 'unknown')
    return {
      error: 'ERR_VOLUME_CORRUPT',
      message:
        ex === 'luks1'
          ? 'is a LUKS1 container, not one this package created (LUKS2)'
          : 'has neither a LUKS2 header nor an ext4 superblock: the header is corrupt or it is not a volume this package created. Restore it from a backup (for LUKS2, `cryptsetup repair` on a copy); it is not reformatted automatically.',
    };
  if (ex === 'luks2') {
    if (wanted === 'fscrypt')
      return {
        error: 'ERR_VOLUME_CONFIG',
        message: 'is a LUKS2 container but encryption.kind is fscrypt: set kind: luks2 or auto',
      };
    if (!facts.dmCrypt)
      return {
        error: 'ERR_VOLUME_UNSUPPORTED',
        message:
          'is a LUKS2 container but this kernel has no dm-crypt (/sys/module/dm_crypt is missing): boot a kernel with dm_crypt, or load the module',
      };
    return { kind: 'luks2', reason: 'the existing image is a LUKS2 container' };
  }
  if (ex === 'ext4') {
    if (wanted === 'luks2')
      return {
        error: 'ERR_VOLUME_CONFIG',
        message:
          'is an ext4 (fscrypt) image but encryption.kind is luks2: set kind: fscrypt or auto (an existing volume is never converted)',
      };
    return { kind: 'fscrypt', reason: 'the existing image is ext4 with fscrypt' };
  }
  if (wanted === 'fscrypt') return { kind: 'fscrypt', reason: 'encryption.kind is fscrypt' };
  if (wanted === 'luks2') {
    if (!facts.dmCrypt)
      return {
        error: 'ERR_VOLUME_UNSUPPORTED',
        message:
          'encryption.kind is luks2 but this kernel has no dm-crypt (/sys/module/dm_crypt is missing): use kind: fscrypt or auto on the stock enclave kernel',
      };
    return { kind: 'luks2', reason: 'encryption.kind is luks2' };
  }
  return facts.dmCrypt
    ? { kind: 'luks2', reason: 'auto: the kernel has dm-crypt (/sys/module/dm_crypt)' }
    : {
        kind: 'fscrypt',
        reason: 'auto: the kernel has no dm-crypt (/sys/module/dm_crypt missing)',
      };
}

/** Whether the kernel has dm-crypt: `sysModuleDir` (default /sys/module) holds `dm_crypt`. */
export async function hasDmCrypt(sysModuleDir = '/sys/module'): Promise<boolean> {
  try {
    await access(`${sysModuleDir}/dm_crypt`);
    return true;
  } catch {
    return false;
  }
}

type Undo = { what: string; run: () => Promise<void> };

export interface OpenLuksOptions {
  v: VolumeConfig;
  image: string;
  blobPath: string;
  key: Uint8Array;
  /** First boot: the container does not exist; `newBlob` is written once it is formatted. */
  newBlob?: Uint8Array;
  stack: Undo[];
  logger: VolumeLogger;
  writeNew: (path: string, data: Uint8Array) => Promise<void>;
}

function fail(
  code: VolumeErrorCode,
  v: VolumeConfig,
  message: string,
  extra: { path?: string; cause?: unknown; syscall?: string } = {},
): VolumeError {
  return new VolumeError(code, `volume ${v.name}: ${message}`, { volume: v.name, ...extra });
}

/** The device-mapper name of a volume (`ee-<name>`; `-new` while the first boot formats it). */
export function mapperName(volume: string, fresh = false): string {
  return `ee-${volume}${fresh ? '-new' : ''}`;
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

async function attachLoop(v: VolumeConfig, file: string): Promise<string> {
  const r = await run('losetup', ['--find', '--show', file]);
  const dev = r.stdout.trim();
  if (r.code !== 0 || !dev.startsWith('/dev/'))
    throw fail(
      r.spawnError?.code === 'ENOENT' ? 'ERR_VOLUME_UNSUPPORTED' : 'ERR_VOLUME_MOUNT_FAILED',
      v,
      r.spawnError?.code === 'ENOENT'
        ? 'losetup is missing: put util-linux (mount) in the enclave image'
        : `attaching ${file} to a loop device failed: ${r.stderr.trim() || `exit ${r.code}`}. Does the kernel have loop devices?`,
      { path: file, syscall: 'losetup', cause: r.spawnError ?? r.stderr },
    );
  return dev;
}

async function detachLoop(v: VolumeConfig, dev: string): Promise<void> {
  const r = await run('losetup', ['-d', dev]);
  if (r.code !== 0)
    throw fail('ERR_VOLUME_UNMOUNT_FAILED', v, `losetup -d ${dev} failed: ${r.stderr.trim()}`, {
      path: dev,
      syscall: 'losetup',
      cause: r.stderr,
    });
}

async function luksOpen(
  v: VolumeConfig,
  dev: string,
  image: string,
  blobPath: string,
  name: string,
  key: Uint8Array,
): Promise<void> {
  const r = await run(
    'cryptsetup',
    ['open', '--type', 'luks2', '--key-file=-', '--tries=1', dev, name],
    { input: key },
  );
  if (r.code === 0) return;
  const text = (r.stderr || r.stdout).trim();
  let code: VolumeErrorCode = 'ERR_VOLUME_MOUNT_FAILED';
  let hint = '';
  if (r.spawnError?.code === 'ENOENT') {
    code = 'ERR_VOLUME_UNSUPPORTED';
    hint = 'cryptsetup is missing: put it in the enclave image (Debian: cryptsetup-bin)';
  } else if (r.code === 2 || /No key available/i.test(text)) {
    code = 'ERR_VOLUME_WRONG_KEY';
    hint = `the data key from ${blobPath} does not open ${image}: the blob was replaced or belongs to another volume. Restore the right blob; the container is not reformatted.`;
  } else if (r.code === 5 || /already exists|busy|in use/i.test(text)) {
    code = 'ERR_VOLUME_ALREADY_MOUNTED';
    hint = `${image} (or the mapping ${name}) is already open: is this volume mounted by another process?`;
  } else if (/not a valid LUKS|checksum|corrupt|Unsupported LUKS|invalid/i.test(text)) {
    code = 'ERR_VOLUME_CORRUPT';
    hint = `the LUKS2 header of ${image} is damaged: restore it from a backup or try \`cryptsetup repair\` on a copy; it is not reformatted automatically.`;
  } else if (/device-mapper|dm-crypt|crypt target|kernel/i.test(text)) {
    code = 'ERR_VOLUME_UNSUPPORTED';
    hint = 'the kernel refused the dm-crypt mapping: it needs dm_crypt and AES-XTS';
  }
  throw fail(
    code,
    v,
    `cryptsetup open ${image} failed (exit ${r.code}: ${text.replace(/\.$/, '') || 'no message'})${hint ? `: ${hint}` : ''}`,
    { path: image, syscall: 'cryptsetup', cause: r.spawnError ?? text },
  );
}

async function luksClose(v: VolumeConfig, name: string): Promise<void> {
  const r = await run('cryptsetup', ['close', name]);
  if (r.code !== 0)
    throw fail(
      'ERR_VOLUME_UNMOUNT_FAILED',
      v,
      `cryptsetup close ${name} failed: ${r.stderr.trim() || `exit ${r.code}`}`,
      { path: `/dev/mapper/${name}`, syscall: 'cryptsetup', cause: r.stderr },
    );
}

async function hasExt4(dev: string): Promise<boolean> {
  const fh = await open(dev, 'r');
  try {
    const sb = Buffer.alloc(1024);
    const { bytesRead } = await fh.read(sb, 0, 1024, 1024);
    return bytesRead === 1024 && sb.readUInt16LE(56) === EXT4_SUPER_MAGIC;
  } finally {
    await fh.close();
  }
}

async function mkfs(v: VolumeConfig, dev: string): Promise<void> {
  const r = await run('mkfs.ext4', [
    '-q',
    '-F',
    '-b',
    '4096',
    '-m',
    '0',
    '-L',
    v.name.slice(0, 16),
    '-E',
    'nodiscard',
    dev,
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
        : `mkfs.ext4 on ${dev} failed: ${r.stderr.trim() || `exit ${r.code}`}`,
      { path: dev, cause: r.spawnError ?? r.stderr },
    );
}

/**
 * First boot only (neither container nor key blob exists): a sparse file under a temporary name,
 * `cryptsetup luksFormat --type luks2` with the data key on stdin, opened once for mkfs.ext4,
 * closed; then the key blob is written and the container linked into place (never over an
 * existing file). Anything that fails is removed; an existing container is never touched.
 */
async function createContainer(o: OpenLuksOptions, newBlob: Uint8Array): Promise<void> {
  const { v, image } = o;
  const size = v.encryption?.size ?? 0;
  const partial = `${image}.partial`;
  await rm(partial, { force: true }); // ours: a first boot that died while formatting
  const local: Undo[] = [];
  try {
    await (await open(partial, 'wx', 0o600)).close();
    local.push({ what: `rm ${partial}`, run: () => rm(partial, { force: true }) });
    const fh = await open(partial, 'r+');
    try {
      await fh.truncate(size);
    } finally {
      await fh.close();
    }
    const f = await run(
      'cryptsetup',
      [
        'luksFormat',
        '--type',
        'luks2',
        '--batch-mode',
        '--key-file=-',
        '--cipher',
        'aes-xts-plain64',
        '--key-size',
        '512',
        '--sector-size',
        '4096',
        // the key is 64 random bytes from KMS, not a passphrase: a memory-hard PBKDF adds nothing
        '--pbkdf',
        'pbkdf2',
        '--pbkdf-force-iterations',
        '1000',
        '--label',
        `ee-${v.name}`,
        partial,
      ],
      { input: o.key },
    );
    if (f.code !== 0)
      throw fail(
        f.spawnError?.code === 'ENOENT' ? 'ERR_VOLUME_UNSUPPORTED' : 'ERR_VOLUME_MOUNT_FAILED',
        v,
        f.spawnError?.code === 'ENOENT'
          ? 'cryptsetup is missing: put it in the enclave image (Debian: cryptsetup-bin)'
          : `cryptsetup luksFormat ${partial} failed: ${(f.stderr || f.stdout).trim() || `exit ${f.code}`}`,
        { path: partial, syscall: 'cryptsetup', cause: f.spawnError ?? f.stderr },
      );
    const dev = await attachLoop(v, partial);
    local.push({ what: `losetup -d ${dev}`, run: () => detachLoop(v, dev) });
    const name = mapperName(v.name, true);
    await luksOpen(v, dev, partial, o.blobPath, name, o.key);
    local.push({ what: `cryptsetup close ${name}`, run: () => luksClose(v, name) });
    await mkfs(v, `/dev/mapper/${name}`);
    await run('sync', []);
    await (local.pop() as Undo).run(); // close
    await (local.pop() as Undo).run(); // detach
    const ph = await open(partial, 'r');
    try {
      await ph.sync();
    } finally {
      await ph.close();
    }
    await o.writeNew(o.blobPath, newBlob);
    local.push({ what: `rm ${o.blobPath}`, run: () => rm(o.blobPath, { force: true }) });
    await link(partial, image); // fails with EEXIST rather than replace a container
  } catch (err) {
    while (local.length > 0)
      await (local.pop() as Undo)
        .run()
        .catch((e: unknown) =>
          o.logger.warn({ volume: v.name, err: String(e) }, 'volumes: undo step failed'),
        );
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC')
      throw fail('ERR_VOLUME_NO_SPACE', v, `no space on the export for ${image}`, {
        path: image,
        cause: err,
      });
    throw err;
  }
  await unlink(partial);
  o.logger.info(
    { volume: v.name, image, size, blob: o.blobPath },
    'volumes: created the LUKS2 container and stored its data key beside it',
  );
}

/**
 * Opens a LUKS2 volume at `v.mountPoint`: (first boot: create the container), loop device,
 * `cryptsetup open` (key on stdin), ext4 check, mount. Each step pushes its undo on `o.stack`
 * (umount, cryptsetup close, losetup -d), so a failure or `unmount()` unwinds all of it.
 */
export async function openLuks(o: OpenLuksOptions): Promise<void> {
  const { v, image, stack } = o;
  const fresh = o.newBlob !== undefined;
  const name = mapperName(v.name);
  if (await exists(`/dev/mapper/${name}`))
    throw fail(
      'ERR_VOLUME_ALREADY_MOUNTED',
      v,
      `the mapping /dev/mapper/${name} already exists: is this volume open in another process? (cryptsetup close ${name})`,
      { path: `/dev/mapper/${name}` },
    );
  if (o.newBlob) await createContainer(o, o.newBlob);
  const loops = loopDevicesFor(image);
  if (loops.length > 0)
    throw fail(
      'ERR_VOLUME_ALREADY_MOUNTED',
      v,
      `${image} is already attached to ${loops.join(', ')}: opening it twice would corrupt it`,
      { path: image },
    );
  const dev = await attachLoop(v, image);
  stack.push({ what: `losetup -d ${dev}`, run: () => detachLoop(v, dev) });
  await luksOpen(v, dev, image, o.blobPath, name, o.key);
  stack.push({ what: `cryptsetup close ${name}`, run: () => luksClose(v, name) });
  const mapped = `/dev/mapper/${name}`;
  if (!(await hasExt4(mapped)))
    throw fail(
      'ERR_VOLUME_CORRUPT',
      v,
      `${image} opens with its key but holds no ext4 file system${fresh ? '' : ' (damaged, or formatting on the first boot never finished)'}: restore it from a backup; it is not reformatted automatically`,
      { path: image },
    );
  const r = await run('mount', ['-t', 'ext4', '-o', 'nosuid,nodev', mapped, v.mountPoint]);
  if (r.code !== 0) {
    const text = (r.stderr || r.stdout).trim();
    const corrupt = /superblock|structure needs cleaning|bad magic|corrupt/i.test(text);
    throw fail(
      corrupt ? 'ERR_VOLUME_CORRUPT' : 'ERR_VOLUME_MOUNT_FAILED',
      v,
      `mounting ${mapped} (ext4 in ${image}) on ${v.mountPoint} failed: ${text || `exit ${r.code}`}`,
      { path: image, syscall: 'mount', cause: text },
    );
  }
  stack.push({
    what: `umount ${v.mountPoint}`,
    run: () => syncAndUnmount(v.mountPoint, v.name),
  });
}
