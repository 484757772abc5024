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
    .filter((m) => m.startsWith('/mnt/ee-') || m.startsWith(STATE));
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

    // filled by the next test: the last file the killed enclave had fsynced
    let killedAfter = -1;
    const size = 256 * 1024;

    it('restart round trip (second boot reads the plain, fscrypt and LUKS2 volumes back byte for byte); then the enclave is killed mid-write', async () => {
      const second = await boot(
        {
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
            { volume: vault(), kms: kmsJob(GOOD_PCR0), action: { kind: 'writeLoop', size } },
          ],
        },
        (l, child) => {
          if (l.step === 3 && typeof l.synced === 'number' && l.synced >= 4 && killedAfter < 0) {
            killedAfter = l.synced;
            child.kill('SIGKILL'); // the enclave dies: its proxy too, so nothing more reaches the parent
          }
        },
      );
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
      expect(second.code).toBe(null);
      expect(killedAfter).toBeGreaterThanOrEqual(4);
      // what the parent holds at the moment of the crash
      execFileSync('cp', ['--sparse=always', join(EXPORT, 'vault.img'), join(EXPORT, 'crash.img')]);
      copyFileSync(join(EXPORT, 'vault.img.key'), join(EXPORT, 'crash.img.key'));
      // the dead enclave's mounts: let its NFS client reconnect, then take them down
      const revive = createRoute({
        name: 'revive',
        listen: ENCLAVE_LISTEN,
        dial: `vsock:1:${VPORT}`,
      });
      await revive.start();
      try {
        for (const m of ['/mnt/ee-vault', `${STATE}/vault/fs`, `${STATE}/vault/nfs`])
          await execFileAsync('umount', [m]);
      } finally {
        await revive.close({ drain: false });
      }
      expect(leftovers()).toEqual([]);
    }, 300_000);

    it('refused before the app starts, touching nothing and leaving nothing open (another PCR0 refused by KMS, wrong key, corrupt header: fscrypt and LUKS2; full disk, already mounted); the crashed image mounts with journal replay and every fsynced file intact', async () => {
      expect(killedAfter).toBeGreaterThanOrEqual(4);
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
      expect(leftovers()).toEqual([]);
    }, 300_000);
    it('ee-enclave run: mounts a plain and an encrypted volume (its own routes, KMS config) before the app, unmounts after it; a second run reads back', async () => {
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
      const config = join(dir, 'enclave.yaml');
      writeFileSync(
        config,
        [
          'network: { setup: false }',
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
          '      size: 64MiB',
          `      keyId: ${KeyMetadata?.KeyId}`,
          '      image: appvault.img',
          `      kms: { region: us-east-1, endpoint: "${endpoint}", credentials: env, nsm: "simulator:${simDir}" }`,
          '',
        ].join('\n'),
      );
      // the app: sees both volumes mounted, prints what an earlier run left, writes its own line
      const app = `const fs = require('node:fs');
      const m = fs.readFileSync('/proc/self/mountinfo', 'utf8');
      for (const p of ['/mnt/ee-app', '/mnt/ee-appvault']) if (!m.includes(' ' + p + ' ')) { console.log('NOT MOUNTED ' + p); process.exit(3); }
      for (const p of ['/mnt/ee-app/run.txt', '/mnt/ee-appvault/run.txt']) {
        console.log('BEFORE ' + p + ' ' + (fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : '-'));
        const fd = fs.openSync(p, 'w'); fs.writeSync(fd, process.env.RUN_ID); fs.fsyncSync(fd); fs.closeSync(fd);
      }`;
      const runOnce = (id: string) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
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
                AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
                AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
              },
              stdio: ['ignore', 'pipe', 'inherit'],
            },
          );
          let out = '';
          c.stdout?.on('data', (d: Buffer) => {
            out += d.toString();
          });
          c.on('exit', (code) => resolve({ code, out }));
        });
      const one = await runOnce('run-1');
      expect(one.out).toContain('BEFORE /mnt/ee-app/run.txt -');
      expect(one.out).toContain('BEFORE /mnt/ee-appvault/run.txt -');
      expect(one.code).toBe(0);
      expect(leftovers()).toEqual([]);
      expect(readFileSync(join(EXPORT, 'run.txt'), 'utf8')).toBe('run-1'); // plain: the parent reads it
      expect(readFileSync(join(EXPORT, 'appvault.img')).indexOf('run-1')).toBe(-1); // encrypted: it does not
      const two = await runOnce('run-2');
      expect(two.out).toContain('BEFORE /mnt/ee-app/run.txt run-1');
      expect(two.out).toContain('BEFORE /mnt/ee-appvault/run.txt run-1');
      expect(two.code).toBe(0);
      expect(leftovers()).toEqual([]);
    }, 300_000);
  },
);
