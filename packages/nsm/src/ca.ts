import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { derToPem, issueCertificate, pemToDer } from '@enclave-extras/attestation';
import { NsmError } from './errors.js';

/** A certificate and its private key. */
export interface CaEntity {
  certificate: Uint8Array;
  privateKey: KeyObject;
  notAfter: number;
}

export interface DevCa {
  root: CaEntity;
  intermediate: CaEntity;
  leaf: CaEntity;
}

/** Leaf lifetime: 3 h like the NSM's leaf certificates. */
export const LEAF_LIFETIME_MS = 3 * 3_600_000;
/** The leaf is re-issued when less than this is left. */
export const LEAF_RENEW_BEFORE_MS = 30 * 60_000;
const CA_LIFETIME_MS = 10 * 365 * 86_400_000;
const CA_DIR = 'dev-ca';
const NAME = 'enclave-extras NSM simulator DEVELOPMENT';

function simError(message: string, cause?: unknown, address?: string): NsmError {
  return new NsmError('ERR_NSM_SIMULATOR', message, { cause, address });
}

function entityPem(e: CaEntity): string {
  return derToPem(e.certificate) + e.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

function parseEntity(pem: string, file: string): CaEntity {
  try {
    const certificate = pemToDer(pem);
    const key = /-----BEGIN PRIVATE KEY-----[A-Za-z0-9+/=\s]+-----END PRIVATE KEY-----/.exec(pem);
    if (!key) throw new Error('no PRIVATE KEY block');
    const privateKey = createPrivateKey(key[0]);
    const x509 = new X509Certificate(certificate);
    if (!x509.checkPrivateKey(privateKey)) throw new Error('key does not match the certificate');
    return { certificate, privateKey, notAfter: Date.parse(x509.validTo) };
  } catch (err) {
    throw simError(
      `${file}: not a valid certificate + private key (${(err as Error).message}); delete the simulator's dev-ca directory to regenerate it`,
      err,
      file,
    );
  }
}

function issue(
  now: number,
  subject: string,
  issuer: CaEntity | undefined,
  ca: boolean,
  pathLen?: number,
): CaEntity {
  const notAfter = now + (ca ? CA_LIFETIME_MS : LEAF_LIFETIME_MS);
  const cert = issueCertificate({
    issuer: issuer ? { certificate: issuer.certificate, privateKey: issuer.privateKey } : undefined,
    subject: { CN: `${NAME} ${subject}`, O: 'enclave-extras', C: 'US' },
    ca,
    pathLen,
    curve: 'P-384',
    notBefore: now - (ca ? 3_600_000 : 60_000),
    notAfter,
  });
  // X.509 times have 1 s precision
  return {
    certificate: cert.certificate,
    privateKey: cert.privateKey,
    notAfter: Math.floor(notAfter / 1000) * 1000,
  };
}

/** Generates a fresh development chain: root -> intermediate -> leaf. */
export function createDevCa(now: number): DevCa {
  const root = issue(now, 'root', undefined, true, 1);
  const intermediate = issue(now, 'intermediate', root, true, 0);
  const leaf = issue(now, 'leaf', intermediate, false);
  return { root, intermediate, leaf };
}

/** Re-issues the leaf when it expires within LEAF_RENEW_BEFORE_MS of `now`. */
export function renewLeaf(ca: DevCa, now: number): boolean {
  if (ca.leaf.notAfter - now > LEAF_RENEW_BEFORE_MS) return false;
  ca.leaf = issue(now, 'leaf', ca.intermediate, false);
  return true;
}

async function writeSecret(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}

/**
 * Loads the development CA from `stateDir/dev-ca`, creating it atomically the first time (a
 * temporary directory renamed into place, so concurrent processes end up with one CA). Private
 * keys are written 0600; `root.crt` (the certificate only) is 0644 for sharing.
 */
export async function loadOrCreateDevCa(stateDir: string, now: number): Promise<DevCa> {
  const dir = join(stateDir, CA_DIR);
  try {
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw simError(
      `stateDir ${stateDir}: cannot create it (${(err as Error).message})`,
      err,
      stateDir,
    );
  }
  let ca = await readDevCa(dir);
  if (!ca) {
    const fresh = createDevCa(now);
    const tmp = join(stateDir, `.dev-ca-${process.pid}-${Math.random().toString(36).slice(2)}`);
    try {
      await mkdir(tmp, { mode: 0o700 });
      await writeFile(join(tmp, 'root.pem'), entityPem(fresh.root), { mode: 0o600 });
      await writeFile(join(tmp, 'intermediate.pem'), entityPem(fresh.intermediate), {
        mode: 0o600,
      });
      await writeFile(join(tmp, 'leaf.pem'), entityPem(fresh.leaf), { mode: 0o600 });
      await writeFile(join(tmp, 'root.crt'), derToPem(fresh.root.certificate), { mode: 0o644 });
      await rename(tmp, dir);
      ca = fresh;
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST' && code !== 'ENOTEMPTY') {
        throw simError(
          `stateDir ${stateDir}: cannot write the dev CA (${(err as Error).message})`,
          err,
          dir,
        );
      }
      ca = await readDevCa(dir); // another process won the race
      if (!ca) throw simError(`${dir}: dev CA vanished while loading it`, err, dir);
    }
  }
  if (renewLeaf(ca, now)) await persistLeaf(stateDir, ca);
  return ca;
}

/** Writes the (re-issued) leaf atomically. */
export async function persistLeaf(stateDir: string, ca: DevCa): Promise<void> {
  const file = join(stateDir, CA_DIR, 'leaf.pem');
  try {
    await writeSecret(file, entityPem(ca.leaf));
  } catch (err) {
    throw simError(
      `${file}: cannot write the re-issued leaf (${(err as Error).message})`,
      err,
      file,
    );
  }
}

async function readDevCa(dir: string): Promise<DevCa | undefined> {
  const read = async (name: string) => {
    const file = join(dir, name);
    try {
      return parseEntity(await readFile(file, 'utf8'), file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  };
  const root = await read('root.pem');
  if (!root) return undefined;
  const intermediate = await read('intermediate.pem');
  const leaf = await read('leaf.pem');
  if (!intermediate || !leaf) {
    throw simError(
      `${dir}: incomplete dev CA (root.pem, intermediate.pem, leaf.pem); delete it to regenerate`,
      undefined,
      dir,
    );
  }
  // the leaf must belong to this intermediate (a half-written state must not sign documents)
  const leafX509 = new X509Certificate(leaf.certificate);
  if (!leafX509.verify(createPublicKey(intermediate.privateKey))) {
    throw simError(
      `${dir}/leaf.pem: not issued by intermediate.pem; delete ${dir} to regenerate`,
      undefined,
      dir,
    );
  }
  return { root, intermediate, leaf };
}

/** The development root of a state directory (created on first use), as DER and PEM. */
export async function getDevRoot(stateDir: string): Promise<{ der: Uint8Array; pem: string }> {
  const ca = await loadOrCreateDevCa(stateDir, Date.now());
  return { der: ca.root.certificate, pem: derToPem(ca.root.certificate) };
}
