// Spawns the built `ee-enclave attest create|verify` with the NSM simulator.
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const simulatorBin = new URL('../../../packages/nsm/dist/bin.js', import.meta.url).pathname;
const PCR0 = 'cd'.repeat(48);
let dir: string;
let nsm: string;
let root: string;

function ee(args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ee-attest-cli-'));
  nsm = `simulator:${join(dir, 'state')}`;
  root = join(dir, 'root.pem');
  const r = spawnSync(
    process.execPath,
    [simulatorBin, '--state-dir', join(dir, 'state'), '--print-root'],
    { encoding: 'utf8' },
  );
  writeFileSync(root, r.stdout);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ee-enclave attest', () => {
  it('create writes a CBOR document carrying nonce, user data and public key', () => {
    const pub = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({
      format: 'der',
      type: 'spki',
    });
    writeFileSync(join(dir, 'pub.der'), pub);
    const out = join(dir, 'doc.cbor');
    const r = ee([
      'attest',
      'create',
      '--nsm',
      nsm,
      '--nonce',
      'hex:00112233',
      '--user-data',
      'hello',
      '--public-key',
      `file:${join(dir, 'pub.der')}`,
      '--out',
      out,
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(out)[0]).toBe(0x84); // untagged COSE_Sign1
    const v = ee([
      'attest',
      'verify',
      out,
      '--root',
      root,
      '--nonce',
      'hex:00112233',
      '--user-data',
      'hello',
      '--public-key',
      `file:${join(dir, 'pub.der')}`,
      '--max-age',
      '300',
      '--json',
    ]);
    expect(v.status, v.stderr).toBe(0);
    const s = JSON.parse(v.stdout);
    expect(s.verified).toBe(true);
    expect(s.nonce).toBe('00112233');
    expect(s.userData).toBe(Buffer.from('hello').toString('hex'));
  });

  it('verify reads base64 text from stdin-like files and checks --pcr and --live-pcrs', () => {
    const b64 = ee(['attest', 'create', '--nsm', nsm]);
    expect(b64.status, b64.stderr).toBe(0);
    const file = join(dir, 'doc.b64');
    writeFileSync(file, b64.stdout);
    const live = ee(['attest', 'verify', file, '--root', root, '--live-pcrs', '--nsm', nsm]);
    expect(live.status, live.stderr).toBe(0);
    expect(live.stdout).toContain('verified');
    const wrong = ee(['attest', 'verify', file, '--root', root, '--pcr', `0=${PCR0}`, '--json']);
    expect(wrong.status).toBe(1);
    expect(JSON.parse(wrong.stdout)).toMatchObject({
      verified: false,
      code: 'ERR_ATTESTATION_PCR_MISMATCH',
      field: 'payload.pcrs[0]',
    });
  });

  it('verify refuses an untrusted root, a tampered document and a wrong nonce (exit 1, code named)', () => {
    const out = join(dir, 'doc2.cbor');
    expect(ee(['attest', 'create', '--nsm', nsm, '--nonce', 'abc', '--out', out]).status).toBe(0);
    const untrusted = ee(['attest', 'verify', out]);
    expect(untrusted.status).toBe(1);
    expect(untrusted.stderr).toContain('ERR_ATTESTATION_UNTRUSTED_ROOT');
    const bytes = readFileSync(out);
    bytes[bytes.length - 3]! ^= 0xff;
    writeFileSync(join(dir, 'tampered.cbor'), bytes);
    const tampered = ee(['attest', 'verify', join(dir, 'tampered.cbor'), '--root', root]);
    expect(tampered.status).toBe(1);
    expect(tampered.stderr).toContain('ERR_ATTESTATION_BAD_SIGNATURE');
    const nonce = ee(['attest', 'verify', out, '--root', root, '--nonce', 'abd']);
    expect(nonce.status).toBe(1);
    expect(nonce.stderr).toContain('ERR_ATTESTATION_NONCE_MISMATCH');
    const atDoc = ee(['attest', 'verify', out, '--root', root, '--at', 'document']);
    expect(atDoc.status, atDoc.stderr).toBe(0);
  });

  it('usage errors exit 2', () => {
    expect(ee(['attest', 'verify', join(dir, 'missing.cbor')]).status).toBe(2);
    const pcr = ee(['attest', 'verify', join(dir, 'doc.cbor'), '--pcr', '40=00']);
    expect(pcr.status).toBe(2);
    expect(pcr.stderr).toContain('--pcr');
    expect(ee(['attest', 'verify', join(dir, 'doc.cbor'), '--at', 'yesterday']).status).toBe(2);
  });
});
