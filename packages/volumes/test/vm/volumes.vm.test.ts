// Runs inside ../shared/tools/vsock-vm only (pnpm test:vm): the VM's kernel NFS server exports a
// tmpfs (the parent's disk), NFS travels over real AF_VSOCK through our two proxies (parent route
// here, enclave route in each "boot" = one child process, test/vm/enclave-child.mjs), the
// kernel's NFS client, loop devices, ext4 and fscrypt do the rest. KMS is the local attested KMS
// with a key whose policy pins PCR0; the enclaves attest with the NSM simulator.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  CreateKeyCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  KMSClient,
} from '@aws-sdk/client-kms';
import { recipientAttestationPolicy } from '@enclave-extras/kms';
import { createLocalKms, type LocalKms } from '@enclave-extras/kms/local';
import { NsmClient, NsmSimulator } from '@enclave-extras/nsm';
import { createRoute, type Route } from '@enclave-extras/proxy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const inVm = process.env.VSOCK_VM === '1';
const execFileAsync = promisify(execFile);
const EXPORT = '/srv/ee-export';
const STATE = '/run/ee-volumes-test';
const VPORT = 22049;
const ENCLAVE_LISTEN = 'tcp:127.0.0.2:12049';
const SERVER = { host: '127.0.0.2', port: 12049 };
const CREDS = { accessKeyId: 'AKIDVOLUMES', secretAccessKey: 'volumes-secret' };
const GOOD_PCR0 = 'a1'.repeat(48);
const BAD_PCR0 = 'b2'.repeat(48);
const MARKER = 'MARKER-7f3c1e9a-only-the-enclave-may-read-this';
const SECRET_NAME = 'secret-name-q7x.txt';
const CHILD = new URL('./enclave-child.mjs', import.meta.url).pathname;

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
function content(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(seed).digest();
  for (let at = 0; at < size; at += block.length) {
    block.copy(out, at);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

/** Mounts and loop devices the tests may leave behind (must stay empty between boots). */
function leftovers(): string[] {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    // ee-enclave run keeps the NFS mounts of encrypted volumes under /run/enclave-extras/volumes
    .filter(
      (m) =>
        m.startsWith('/mnt/ee-') || m.startsWith(STATE) || m.startsWith('/run/enclave-extras/'),
    );
  const loops = readdirSync('/sys/block')
    .filter((n) => n.startsWith('loop'))
    .flatMap((n) => {
      try {
        return [readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim()];
      } catch {
        return [];
      }
    });
  // device-mapper devices (LUKS2 volumes): the kernel's list, whoever created them
  const dms = readdirSync('/sys/block')
    .filter((n) => n.startsWith('dm-'))
    .map((n) => `dm:${readFileSync(`/sys/block/${n}/dm/name`, 'utf8').trim()}`);
  return [...mounts, ...loops, ...dms];
}

/** The loop devices whose backing file is `file`. */
function loopsOf(file: string): string[] {
  return readdirSync('/sys/block')
    .filter((n) => n.startsWith('loop'))
    .filter((n) => {
      try {
        return readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim() === file;
      } catch {
        return false;
      }
    })
    .map((n) => `/dev/${n}`);
}

/** The block devices ext4 has said "recovery complete" for (a journal replayed at mount), in order. */
function journalReplays(): string[] {
  return execFileSync('dmesg', { encoding: 'utf8' })
    .split('\n')
    .flatMap((l) => /EXT4-fs \(([^)]+)\): recovery complete/.exec(l)?.[1] ?? []);
}

interface Boot {
  code: number | null;
  lines: Record<string, unknown>[];
}

function boot(
  job: Record<string, unknown>,
  onLine?: (l: Record<string, unknown>, child: ChildProcess) => void,
): Promise<Boot> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD], {
      env: {
        ...process.env,
        EE_VOLUME_JOB: JSON.stringify({
          listen: ENCLAVE_LISTEN,
          dial: `vsock:1:${VPORT}`,
          stateDir: STATE,
          ...job,
        }),
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines: Record<string, unknown>[] = [];
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const l = JSON.parse(buf.slice(0, i)) as Record<string, unknown>;
        buf = buf.slice(i + 1);
        lines.push(l);
        process.stderr.write(
          `volumes vm: +${((Date.now() - t0) / 1000).toFixed(1)}s ${JSON.stringify(l)}\n`,
        );
        onLine?.(l, child);
      }
    });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, lines }));
  });
}

/** Everything one step of a boot said, merged (mounted, wrote/read/synced, unmounted or error). */
const at = (b: Boot, step: number) =>
  Object.assign({}, ...b.lines.filter((l) => l.step === step)) as Record<string, unknown>;
const noSteps = (b: Boot) => b.lines.filter((l) => l.step === undefined);

describe.skipIf(!inVm)(
  'volumes over real vsock, kernel NFS, loop, ext4 and fscrypt (vsock-vm)',
  () => {
    let parentRoute: Route;
    let kms: LocalKms;
    let keyId: string;
    let nsmState: string;
    let endpoint: string;
    const kmsJob = (pcr0: string) => ({ endpoint, keyId, credentials: CREDS, nsmState, pcr0 });
    const plain = {
      name: 'plain',
      mountPoint: '/mnt/ee-plain',
      createMountPoint: true,
      server: SERVER,
    };
    const vault = (image = 'vault.img', mountPoint = '/mnt/ee-vault') => ({
      name: 'vault',
      mountPoint,
      createMountPoint: true,
      server: SERVER,
      encryption: { size: '64MiB', keyId, image },
    });

    // LUKS2: the suite loads dm_crypt, so `kind: auto` must pick it (asserted through `report`)
    const luks = (image = 'luks.img') => ({
      name: 'lvault',
      mountPoint: '/mnt/ee-lvault',
      createMountPoint: true,
      server: SERVER,
      encryption: { kind: 'auto', size: '64MiB', keyId, image },
    });
    const luksText = `${MARKER}\n`.repeat(100); // the job travels in an env variable (128 KiB max)
    const luksBin = content('luks-big', 1024 * 1024 + 5);

    beforeAll(async () => {
      // the parent: a kernel NFS server exporting a 512 MiB tmpfs to 127.0.0.1 only
      execFileSync(
        'bash',
        [
          '-ec',
          `mkdir -p /proc/fs/nfsd ${EXPORT} /var/lib/nfs/v4recovery
         mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd
         mount -t tmpfs -o size=512m tmpfs ${EXPORT}
         echo 10 > /proc/fs/nfsd/nfsv4leasetime; echo 10 > /proc/fs/nfsd/nfsv4gracetime
         echo "${EXPORT} 127.0.0.1(rw,sync,insecure,no_root_squash,no_subtree_check,fsid=0)" > /etc/exports
         exportfs -ra
         rpc.mountd -N 3 --no-udp
         rpc.nfsd -N 3 --no-udp 4`,
        ],
        { stdio: 'inherit' },
      );
      parentRoute = createRoute({
        name: 'nfs-parent',
        listen: `vsock:any:${VPORT}`,
        dial: 'tcp:127.0.0.1:2049',
      });
      await parentRoute.start();
      nsmState = mkdtempSync('/tmp/ee-volumes-nsm-');
      const sim = new NsmSimulator({ stateDir: nsmState });
      kms = await createLocalKms({
        dataDir: mkdtempSync('/tmp/ee-volumes-kms-'),
        credentials: [CREDS],
        roots: [(await sim.devRoot()).pem],
      });
      endpoint = await kms.listen();
      const admin = new KMSClient({ endpoint, region: 'us-east-1', credentials: CREDS });
      const policy = recipientAttestationPolicy({
        accountId: '111122223333',
        pcrs: { 0: GOOD_PCR0 },
      });
      const { KeyMetadata } = await admin.send(
        new CreateKeyCommand({ Policy: JSON.stringify(policy) }),
      );
      keyId = KeyMetadata?.KeyId ?? '';
    });

    afterAll(async () => {
      await parentRoute?.close({ drain: false });
      await kms?.close();
    });

    const big = content('plain-big', 3 * 1024 * 1024 + 17);
    const vaultText = `${MARKER}\n`.repeat(2000);
    const vaultBig = content('vault-big', 2 * 1024 * 1024);

    it('first boot: a plain, an fscrypt and a LUKS2 volume written (kind auto picks LUKS2 with dm_crypt); the parent holds the plain files and only ciphertext of the encrypted ones (contents and names)', async () => {
      const first = await boot({
        steps: [
          {
            volume: plain,
            action: {
              kind: 'write',
              files: [
                { name: 'big.bin', seed: 'plain-big', size: big.length },
                { name: 'marker.txt', text: MARKER },
              ],
            },
          },
          {
            volume: vault(),
            kms: kmsJob(GOOD_PCR0),
            action: {
              kind: 'write',
              files: [
                { name: SECRET_NAME, text: vaultText },
                { name: 'big.bin', seed: 'vault-big', size: vaultBig.length },
              ],
            },
          },
          {
            volume: luks(),
            kms: kmsJob(GOOD_PCR0),
            report: true,
            action: {
              kind: 'write',
              files: [
                { name: SECRET_NAME, text: luksText },
                { name: 'big.bin', seed: 'luks-big', size: luksBin.length },
              ],
            },
          },
        ],
      });
      expect(noSteps(first)).toEqual([]);
      expect(at(first, 0)).toEqual({
        step: 0,
        mounted: '/mnt/ee-plain',
        wrote: 2,
        unmounted: true,
      });
      expect(at(first, 1)).toEqual({
        step: 1,
        mounted: '/mnt/ee-vault',
        wrote: 2,
        unmounted: true,
      });
      expect(first.code).toBe(0);
      expect(leftovers()).toEqual([]);
      // plain: the parent holds the plaintext (so the marker search below can find what is there)
      expect(readFileSync(join(EXPORT, 'marker.txt'), 'utf8')).toBe(MARKER);
      expect(sha(readFileSync(join(EXPORT, 'big.bin')))).toBe(sha(big));
      // encrypted: an image and a key blob beside it, neither contents nor names readable
      const image = readFileSync(join(EXPORT, 'vault.img'));
      expect(image.length).toBe(64 * 1024 * 1024);
      expect(image.indexOf(MARKER)).toBe(-1);
      expect(image.indexOf(SECRET_NAME)).toBe(-1);
      expect(image.indexOf(vaultBig.subarray(0, 64))).toBe(-1);
      expect(statSync(join(EXPORT, 'vault.img.key')).size).toBeGreaterThan(64);
      // LUKS2: a container (header magic + version 2) beside its key blob, ciphertext only
      expect(at(first, 2)).toEqual({
        step: 2,
        mounted: '/mnt/ee-lvault',
        encryption: 'luks2',
        wrote: 2,
        unmounted: true,
      });
      const container = readFileSync(join(EXPORT, 'luks.img'));
      expect(container.length).toBe(64 * 1024 * 1024);
      expect(container.subarray(0, 8).toString('latin1')).toBe('LUKS\xba\xbe\x00\x02');
      expect(container.indexOf(MARKER)).toBe(-1);
      expect(container.indexOf(SECRET_NAME)).toBe(-1);
      expect(container.indexOf(luksBin.subarray(0, 64))).toBe(-1);
      expect(statSync(join(EXPORT, 'luks.img.key')).size).toBeGreaterThan(64);
      expect(existsSync(join(EXPORT, 'luks.img.partial'))).toBe(false);

      expect(leftovers()).toEqual([]);
    }, 300_000);

    // filled by the next test: the last file the killed enclave had fsynced, per volume
    let killedAfter = -1;
    let lkilledAfter = -1;
    const size = 256 * 1024;

    it('restart round trip (second boot reads the plain, fscrypt and LUKS2 volumes back byte for byte); then the enclave is killed while writing to its fscrypt and LUKS2 volumes', async () => {
      // The enclave-side route runs in its own process here. A real enclave dies with its kernel;
      // in this VM the kernel survives, and a SIGKILLed writer can be stuck in uninterruptible
      // I/O (fsync) waiting for NFS: if the route were in that process, its sockets would stay
      // open (never serviced) until the I/O completes, which it never would. So the route is
      // killed first (the enclave's link to the parent is cut), then the writer; the parent's
      // files are copied as they are at that moment, and only then does a new route let the
      // stuck I/O finish so the dead enclave's mounts can be taken down.
      const enclaveRoute = spawn(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { createRoute } from '@enclave-extras/proxy';
          const r = createRoute({ name: 'nfs-enclave', listen: ${JSON.stringify(ENCLAVE_LISTEN)}, dial: 'vsock:1:${VPORT}', dialRetries: { attempts: 3, delayMs: 50 } });
          await r.start();
          process.stdout.write('ready\\n');`,
        ],
        { cwd: new URL('../..', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const routeGone = new Promise((resolve) => enclaveRoute.on('exit', resolve));
      await new Promise<void>((resolve, reject) => {
        enclaveRoute.stdout?.on('data', (d: Buffer) => {
          if (d.toString().includes('ready')) resolve();
        });
        enclaveRoute.on('exit', (code) => reject(new Error(`enclave route exited (${code})`)));
      });
      let killed!: () => void;
      const crashed = new Promise<void>((resolve) => {
        killed = resolve;
      });
      const synced = { 3: -1, 4: -1 };
      const secondRun = boot(
        {
          listen: null,
          steps: [
            { volume: plain, action: { kind: 'read', names: ['big.bin', 'marker.txt'] } },
            {
              volume: vault(),
              kms: kmsJob(GOOD_PCR0),
              action: { kind: 'read', names: [SECRET_NAME, 'big.bin'] },
            },
            {
              volume: luks(),
              kms: kmsJob(GOOD_PCR0),
              report: true,
              action: { kind: 'read', names: [SECRET_NAME, 'big.bin'] },
            },
            // two apps writing at once: fscrypt in the background, then LUKS2
            {
              volume: vault(),
              kms: kmsJob(GOOD_PCR0),
              background: true,
              action: { kind: 'writeLoop', size },
            },
            { volume: luks(), kms: kmsJob(GOOD_PCR0), action: { kind: 'writeLoop', size } },
          ],
        },
        (l, child) => {
          if ((l.step !== 3 && l.step !== 4) || typeof l.synced !== 'number') return;
          synced[l.step] = l.synced;
          if (synced[3] >= 4 && synced[4] >= 4 && killedAfter < 0) {
            killedAfter = synced[3];
            lkilledAfter = synced[4];
            // the enclave dies: its proxy first, so nothing more reaches the parent, then the app
            enclaveRoute.kill('SIGKILL');
            child.kill('SIGKILL');
            killed();
          }
        },
      );
      await Promise.race([crashed, secondRun]);
      if (killedAfter < 0) {
        enclaveRoute.kill('SIGKILL');
        throw new Error(
          `the second boot ended before the kill: ${JSON.stringify(noSteps(await secondRun))} ${JSON.stringify((await secondRun).lines.filter((l) => l.error))}`,
        );
      }
      await routeGone;
      // what the parent holds at the moment of the crash
      execFileSync('cp', ['--sparse=always', join(EXPORT, 'vault.img'), join(EXPORT, 'crash.img')]);
      copyFileSync(join(EXPORT, 'vault.img.key'), join(EXPORT, 'crash.img.key'));
      execFileSync('cp', ['--sparse=always', join(EXPORT, 'luks.img'), join(EXPORT, 'lcrash.img')]);
      copyFileSync(join(EXPORT, 'luks.img.key'), join(EXPORT, 'lcrash.img.key'));
      // the dead enclave's mounts: let its NFS client reconnect (the killed writer's I/O ends),
      // then take them down
      const revive = createRoute({
        name: 'revive',
        listen: ENCLAVE_LISTEN,
        dial: `vsock:1:${VPORT}`,
      });
      await revive.start();
      let second: Boot;
      try {
        second = await secondRun;
        for (const m of ['/mnt/ee-vault', `${STATE}/vault/fs`, `${STATE}/vault/nfs`])
          await execFileAsync('umount', [m]);
        // LUKS2: the file system, the mapping, the loop device, the share
        await execFileAsync('umount', ['/mnt/ee-lvault']);
        await execFileAsync('cryptsetup', ['close', 'ee-lvault']);
        const loops = loopsOf(`${STATE}/lvault/nfs/luks.img`);
        expect(loops).toHaveLength(1);
        for (const d of loops) await execFileAsync('losetup', ['-d', d]);
        await execFileAsync('umount', [`${STATE}/lvault/nfs`]);
      } finally {
        await revive.close({ drain: false });
      }
      expect(at(second, 0).read).toEqual({
        'big.bin': sha(big),
        'marker.txt': sha(Buffer.from(MARKER)),
      });
      expect(at(second, 0).unmounted).toBe(true);
      expect(at(second, 1).read).toEqual({
        [SECRET_NAME]: sha(Buffer.from(vaultText)),
        'big.bin': sha(vaultBig),
      });
      expect(at(second, 1).unmounted).toBe(true);
      expect(at(second, 2)).toEqual({
        step: 2,
        mounted: '/mnt/ee-lvault',
        encryption: 'luks2',
        read: { [SECRET_NAME]: sha(Buffer.from(luksText)), 'big.bin': sha(luksBin) },
        unmounted: true,
      });
      expect(at(second, 3).mounted).toBe('/mnt/ee-vault');
      expect(at(second, 4).mounted).toBe('/mnt/ee-lvault');
      expect(second.code).toBe(null);
      expect(killedAfter).toBeGreaterThanOrEqual(4);
      expect(lkilledAfter).toBeGreaterThanOrEqual(4);
      expect(leftovers()).toEqual([]);
    }, 300_000);

    it('refused before the app starts, touching nothing and leaving nothing open (another PCR0 refused by KMS, wrong key, corrupt header: fscrypt and LUKS2; full disk, already mounted); the crashed fscrypt image and LUKS2 container mount with journal replay and every fsynced file intact', async () => {
      expect(killedAfter).toBeGreaterThanOrEqual(4);
      expect(lkilledAfter).toBeGreaterThanOrEqual(4);
      const vaultFiles = () => [
        sha(readFileSync(join(EXPORT, 'vault.img'))),
        sha(readFileSync(join(EXPORT, 'vault.img.key'))),
        statSync(join(EXPORT, 'vault.img')).mtimeMs,
        statSync(join(EXPORT, 'vault.img.key')).mtimeMs,
      ];
      // wrong key: a valid blob of another data key under the same KMS key, beside a copy of the image
      const admin = new KMSClient({ endpoint, region: 'us-east-1', credentials: CREDS });
      const other = await admin.send(
        new GenerateDataKeyWithoutPlaintextCommand({
          KeyId: keyId,
          NumberOfBytes: 64,
          EncryptionContext: { 'enclave-extras:volume': 'vault' },
        }),
      );
      copyFileSync(join(EXPORT, 'vault.img'), join(EXPORT, 'wrong.img'));
      writeFileSync(join(EXPORT, 'wrong.img.key'), other.CiphertextBlob ?? new Uint8Array());
      // corrupt header: the superblock magic of a copy zeroed
      const img = readFileSync(join(EXPORT, 'vault.img'));
      img.writeUInt16LE(0, 1024 + 56);
      writeFileSync(join(EXPORT, 'corrupt.img'), img);
      copyFileSync(join(EXPORT, 'vault.img.key'), join(EXPORT, 'corrupt.img.key'));
      // the same three for LUKS2: another PCR0, a valid blob of another data key, a zeroed header
      const luksFiles = () => [
        sha(readFileSync(join(EXPORT, 'luks.img'))),
        sha(readFileSync(join(EXPORT, 'luks.img.key'))),
        statSync(join(EXPORT, 'luks.img')).mtimeMs,
        statSync(join(EXPORT, 'luks.img.key')).mtimeMs,
      ];
      const otherLuks = await admin.send(
        new GenerateDataKeyWithoutPlaintextCommand({
          KeyId: keyId,
          NumberOfBytes: 64,
          EncryptionContext: { 'enclave-extras:volume': 'lvault' },
        }),
      );
      execFileSync('cp', ['--sparse=always', join(EXPORT, 'luks.img'), join(EXPORT, 'lwrong.img')]);
      writeFileSync(join(EXPORT, 'lwrong.img.key'), otherLuks.CiphertextBlob ?? new Uint8Array());
      const lbad = readFileSync(join(EXPORT, 'luks.img'));
      lbad.fill(0, 0, 4096); // the primary binary header (magic, checksum) zeroed
      writeFileSync(join(EXPORT, 'lcorrupt.img'), lbad);
      copyFileSync(join(EXPORT, 'luks.img.key'), join(EXPORT, 'lcorrupt.img.key'));
      const luksBefore = luksFiles();
      const lwrongBefore = sha(readFileSync(join(EXPORT, 'lwrong.img')));
      // already mounted: something else holds the mount point
      execFileSync('mkdir', ['-p', '/mnt/ee-busy']);
      execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', '/mnt/ee-busy']);
      const before = vaultFiles();
      const names = Array.from({ length: killedAfter + 1 }, (_, i) => `f${i}`);
      const lnames = Array.from({ length: lkilledAfter + 1 }, (_, i) => `f${i}`);
      const replayedBefore = journalReplays().length;
      let b: Boot;
      try {
        const k = kmsJob(GOOD_PCR0);
        b = await boot({
          steps: [
            {
              volume: vault(),
              kms: kmsJob(BAD_PCR0),
              action: { kind: 'read', names: [SECRET_NAME] },
            },
            { volume: vault('wrong.img'), kms: k, action: { kind: 'read', names: [] } },
            { volume: vault('corrupt.img'), kms: k, action: { kind: 'read', names: [] } },
            {
              volume: {
                ...vault('huge.img'),
                encryption: { size: '4GiB', keyId, image: 'huge.img' },
              },
              kms: k,
              action: { kind: 'read', names: [] },
            },
            {
              volume: vault('vault.img', '/mnt/ee-busy'),
              kms: k,
              action: { kind: 'read', names: [] },
            },
            {
              volume: vault('crash.img', '/mnt/ee-crash'),
              kms: k,
              action: { kind: 'read', names },
            },
            { volume: luks(), kms: kmsJob(BAD_PCR0), action: { kind: 'read', names: [] } },
            { volume: luks('lwrong.img'), kms: k, action: { kind: 'read', names: [] } },
            { volume: luks('lcorrupt.img'), kms: k, action: { kind: 'read', names: [] } },
            { volume: luks('lcrash.img'), kms: k, action: { kind: 'read', names: lnames } },
          ],
        });
      } finally {
        execFileSync('umount', ['/mnt/ee-busy']);
      }
      expect(b.code).toBe(1);
      expect(at(b, 0)).toMatchObject({ error: 'ERR_VOLUME_KEY_REFUSED' });
      expect(String(at(b, 0).message)).toMatch(/PCR0 does not satisfy the key policy/);
      expect(at(b, 1)).toMatchObject({ error: 'ERR_VOLUME_WRONG_KEY' });
      expect(at(b, 2)).toMatchObject({ error: 'ERR_VOLUME_CORRUPT' });
      expect(sha(readFileSync(join(EXPORT, 'corrupt.img')))).toBe(sha(img));
      expect(at(b, 3)).toMatchObject({ error: 'ERR_VOLUME_NO_SPACE' });
      expect(existsSync(join(EXPORT, 'huge.img'))).toBe(false);
      expect(existsSync(join(EXPORT, 'huge.img.key'))).toBe(false);
      expect(at(b, 4)).toMatchObject({ error: 'ERR_VOLUME_ALREADY_MOUNTED' });
      expect(at(b, 6)).toMatchObject({ error: 'ERR_VOLUME_KEY_REFUSED' });
      expect(at(b, 7)).toMatchObject({ error: 'ERR_VOLUME_WRONG_KEY' });
      expect(String(at(b, 7).message)).toMatch(/No key available/);
      expect(at(b, 8)).toMatchObject({ error: 'ERR_VOLUME_CORRUPT' });
      for (const i of [0, 1, 2, 3, 4, 6, 7, 8]) expect(at(b, i).mounted).toBeUndefined();
      expect(luksFiles()).toEqual(luksBefore);
      expect(sha(readFileSync(join(EXPORT, 'lwrong.img')))).toBe(lwrongBefore);
      expect(sha(readFileSync(join(EXPORT, 'lcorrupt.img')))).toBe(sha(lbad));
      // the refused enclave (and the other refusals) changed nothing of the real volume
      expect(vaultFiles()).toEqual(before);
      // the crash image: journal replayed at mount, every file fsynced before the kill intact
      expect(at(b, 5)).toMatchObject({ mounted: '/mnt/ee-crash', unmounted: true });
      expect(at(b, 5).read).toEqual(
        Object.fromEntries(names.map((n, i) => [n, sha(content(`loop-${i}`, size))])),
      );
      // the same for the LUKS2 container killed mid-write
      expect(at(b, 9)).toMatchObject({ mounted: '/mnt/ee-lvault', unmounted: true });
      expect(at(b, 9).read).toEqual(
        Object.fromEntries(lnames.map((n, i) => [n, sha(content(`loop-${i}`, size))])),
      );
      // both replayed their journal (ext4 on the loop device, ext4 on the dm-crypt mapping); the
      // refusals never mounted a dirty file system
      expect(
        journalReplays()
          .slice(replayedBefore)
          .map((d) => d.replace(/\d+$/, ''))
          .sort(),
      ).toEqual(['dm-', 'loop']);
      expect(leftovers()).toEqual([]);
    }, 300_000);

    it('one enclave at a time: a second mount of the fscrypt volume through another NFS mount (where the loop-device check cannot see it) is refused with ERR_VOLUME_LOCKED while the first holds it, and a waiting one gets it once the first unmounts', async () => {
      const other = (lockWaitMs: number) => ({
        ...vault('vault.img', '/mnt/ee-vault-2'),
        encryption: { size: '64MiB', keyId, image: 'vault.img', lockWaitMs },
      });
      const k = kmsJob(GOOD_PCR0);
      const b = await boot({
        steps: [
          // the first enclave: holds the volume open for 8 s
          { volume: vault(), kms: k, background: true, action: { kind: 'hold', ms: 8000 } },
          // the second: its own NFS mount of the export (another state dir), gives up after 1.5 s
          {
            volume: other(1500),
            kms: k,
            stateDir: `${STATE}-second`,
            action: { kind: 'read', names: [] },
          },
          // the third: waits, and mounts once the first has unmounted
          {
            volume: other(60_000),
            kms: k,
            stateDir: `${STATE}-third`,
            action: { kind: 'read', names: [SECRET_NAME] },
          },
        ],
      });
      expect(at(b, 0)).toMatchObject({ mounted: '/mnt/ee-vault', held: 8000, unmounted: true });
      expect(at(b, 1)).toMatchObject({ error: 'ERR_VOLUME_LOCKED' });
      expect(String(at(b, 1).message)).toMatch(/vault\.img\.lock is locked by another NFS client/);
      expect(at(b, 1).mounted).toBeUndefined();
      expect(at(b, 2)).toMatchObject({
        mounted: '/mnt/ee-vault-2',
        read: { [SECRET_NAME]: sha(Buffer.from(vaultText)) },
        unmounted: true,
      });
      // the third mounted only after the first let go
      const order = b.lines.map(
        (l) => `${l.step}:${Object.keys(l).filter((x) => x !== 'step')[0]}`,
      );
      expect(order.indexOf('2:mounted')).toBeGreaterThan(order.indexOf('0:unmounted'));
      expect(readFileSync(join(EXPORT, 'vault.img.lock')).length).toBe(0);
      expect(leftovers()).toEqual([]);
    }, 300_000);
    it("the stock 4.14 kernel's key path on this kernel: with the key as a logon key in the session keyring (no filesystem keyring), the fscrypt volume opens, the app (a child process) reads it, and the key is gone after unmount", async () => {
      const b = await boot({
        steps: [
          {
            volume: vault(),
            kms: kmsJob(GOOD_PCR0),
            fscryptKeyring: 'session',
            action: { kind: 'readInChild', names: [SECRET_NAME, 'big.bin'] },
          },
        ],
      });
      expect(b.code).toBe(0);
      expect(at(b, 0)).toEqual({
        step: 0,
        mounted: '/mnt/ee-vault',
        readInChild: { [SECRET_NAME]: sha(Buffer.from(vaultText)), 'big.bin': sha(vaultBig) },
        sessionKey: 1,
        unmounted: true,
        sessionKeyAfter: 0,
      });
      expect(leftovers()).toEqual([]);
    }, 300_000);

    it('ee-enclave run: mounts a plain, an fscrypt and a LUKS2 volume (its own routes, KMS config) before the app; on SIGTERM while the app runs, the app finishes with its volumes mounted, then all is synced and unmounted with nothing left attached, exit 128+15; a second run (the app exits by itself) reads back what the first fsynced, exit 0, all unmounted', async () => {
      const cli = new URL('../../../../apps/enclave/dist/cli.js', import.meta.url).pathname;
      const dir = mkdtempSync('/tmp/ee-volumes-run-');
      // a key whose policy pins the PCRs of the simulator ee-enclave will use (its default PCRs)
      const simDir = mkdtempSync('/tmp/ee-volumes-run-nsm-');
      execFileSync('cp', ['-a', `${nsmState}/.`, simDir]); // same development CA as the KMS trusts
      const nsm = await NsmClient.open({ transport: new NsmSimulator({ stateDir: simDir }) });
      const admin = new KMSClient({ endpoint, region: 'us-east-1', credentials: CREDS });
      const policy = recipientAttestationPolicy({
        accountId: '111122223333',
        document: await nsm.getAttestationDocument({}),
      });
      const { KeyMetadata } = await admin.send(
        new CreateKeyCommand({ Policy: JSON.stringify(policy) }),
      );
      const kmsLine = `      kms: { region: us-east-1, endpoint: "${endpoint}", credentials: env, nsm: "simulator:${simDir}" }`;
      const config = join(dir, 'enclave.yaml');
      writeFileSync(
        config,
        [
          'network: { setup: false }',
          // the unmount is bounded by the drain timeout: generous, so a slow TCG guest cannot
          // turn this into a timing test (a cut-short unmount shows up as a leftover mount)
          'drainTimeoutMs: 60000',
          'volumes:',
          '  - name: app',
          '    mountPoint: /mnt/ee-app',
          '    createMountPoint: true',
          '    server: { host: 127.0.0.1, port: 12050 }',
          `    route: { cid: 1, port: ${VPORT} }`,
          '  - name: appvault',
          '    mountPoint: /mnt/ee-appvault',
          '    createMountPoint: true',
          '    server: { host: 127.0.0.1, port: 12051 }',
          `    route: { cid: 1, port: ${VPORT} }`,
          '    encryption:',
          '      kind: fscrypt',
          '      size: 64MiB',
          `      keyId: ${KeyMetadata?.KeyId}`,
          '      image: appvault.img',
          kmsLine,
          '  - name: applvault',
          '    mountPoint: /mnt/ee-applvault',
          '    createMountPoint: true',
          '    server: { host: 127.0.0.1, port: 12052 }',
          `    route: { cid: 1, port: ${VPORT} }`,
          '    encryption:',
          '      kind: luks2',
          '      size: 64MiB',
          `      keyId: ${KeyMetadata?.KeyId}`,
          '      image: applvault.img',
          kmsLine,
          '',
        ].join('\n'),
      );
      const vols = ['/mnt/ee-app', '/mnt/ee-appvault', '/mnt/ee-applvault'];
      // the app: sees the volumes mounted, prints what an earlier run left, writes its own line
      // (fsynced). With SERVE=1 it then runs until SIGTERM, on which it writes term.txt (fsynced)
      // on each volume, which are still mounted, and dies of the signal as an app without
      // cleanup would.
      const app = `const fs = require('node:fs');
      const vols = ${JSON.stringify(vols)};
      const m = fs.readFileSync('/proc/self/mountinfo', 'utf8');
      for (const p of vols) if (!m.includes(' ' + p + ' ')) { console.log('NOT MOUNTED ' + p); process.exit(3); }
      const put = (p, text) => { const fd = fs.openSync(p, 'w'); fs.writeSync(fd, text); fs.fsyncSync(fd); fs.closeSync(fd); };
      for (const p of vols) for (const f of ['run.txt', 'term.txt']) {
        const file = p + '/' + f;
        console.log('BEFORE ' + file + ' ' + (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '-'));
      }
      for (const p of vols) put(p + '/run.txt', process.env.RUN_ID);
      if (process.env.SERVE === '1') {
        process.once('SIGTERM', () => {
          for (const p of vols) put(p + '/term.txt', 'term-' + process.env.RUN_ID);
          process.kill(process.pid, 'SIGTERM');
        });
        setInterval(() => {}, 60000);
        console.log('SERVING');
      }`;
      const runOnce = (id: string, serve = false) =>
        new Promise<{ code: number | null; out: string; termed: boolean }>((resolve) => {
          const c = spawn(
            process.execPath,
            [
              cli,
              'run',
              '--config',
              config,
              '--log-level',
              'warn',
              '--',
              process.execPath,
              '-e',
              app,
            ],
            {
              env: {
                ...process.env,
                RUN_ID: id,
                SERVE: serve ? '1' : '0',
                AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
                AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
              },
              stdio: ['ignore', 'pipe', 'inherit'],
            },
          );
          let out = '';
          let termed = false;
          c.stdout?.on('data', (d: Buffer) => {
            out += d.toString();
            // the app is up with its files fsynced: stop ee-enclave as an orchestrator would
            if (serve && !termed && out.includes('SERVING\n')) {
              termed = true;
              c.kill('SIGTERM');
            }
          });
          c.on('exit', (code) => resolve({ code, out, termed }));
        });
      const before = (run: string, term: string) =>
        vols.flatMap((p) => [`BEFORE ${p}/run.txt ${run}\n`, `BEFORE ${p}/term.txt ${term}\n`]);
      // SIGTERM to ee-enclave while the app runs (the first run: it also creates both images)
      const one = await runOnce('run-1', true);
      expect(one.termed).toBe(true);
      for (const l of before('-', '-')) expect(one.out).toContain(l);
      expect(one.code).toBe(128 + 15); // the app's status: it died of SIGTERM (apps/enclave README)
      // synced and unmounted: no mount (volumes, ee-enclave's NFS mounts), loop device or mapping
      expect(leftovers()).toEqual([]);
      expect(existsSync('/dev/mapper/ee-applvault')).toBe(false);
      // plain: the parent holds what the app fsynced, also in its SIGTERM handler
      expect(readFileSync(join(EXPORT, 'run.txt'), 'utf8')).toBe('run-1');
      expect(readFileSync(join(EXPORT, 'term.txt'), 'utf8')).toBe('term-run-1');
      // encrypted: the parent does not read it
      expect(readFileSync(join(EXPORT, 'appvault.img')).indexOf('run-1')).toBe(-1);
      const lcontainer = readFileSync(join(EXPORT, 'applvault.img'));
      expect(lcontainer.subarray(0, 8).toString('latin1')).toBe('LUKS\xba\xbe\x00\x02');
      expect(lcontainer.indexOf('run-1')).toBe(-1);

      // remounted: every volume has both files; this app exits by itself (status 0)
      const two = await runOnce('run-2');
      for (const l of before('run-1', 'term-run-1')) expect(two.out).toContain(l);
      expect(two.code).toBe(0);
      expect(leftovers()).toEqual([]);
    }, 300_000);
  },
);
