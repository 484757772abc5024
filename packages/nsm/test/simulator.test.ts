import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AWS_NITRO_ROOT_PEM, parseDocument, verifyDocument } from '@enclave-extras/attestation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  getDevRoot,
  NsmClient,
  NsmError,
  NsmSimulator,
  type SimulatorServer,
  serveSimulator,
  socketTransport,
} from '../src/index.js';
import { expectResponse } from '../src/protocol.js';
import { describeBehaviour } from './behaviour.js';
import { cbor, documentParts, hex, rejectsWith, sha384 } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'nsm-sim-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// The shared suite, in process ...
describeBehaviour('simulator in process', async () => {
  const sim = new NsmSimulator();
  return NsmClient.open({ transport: sim });
});

// ... and through the daemon, each client a separate socket connection to one simulator.
let server: SimulatorServer | undefined;
describeBehaviour('simulator daemon over a Unix socket', async () => {
  server ??= await serveSimulator({
    socketPath: join(tmp, 'daemon.sock'),
    simulatorOptions: { stateDir: join(tmp, 'daemon-state') },
  });
  return NsmClient.open({ transport: await socketTransport(join(tmp, 'daemon.sock')) });
});
afterAll(async () => server?.close());

describe('simulator-specific behaviour', () => {
  let sim: NsmSimulator;
  let nsm: NsmClient;
  beforeAll(async () => {
    sim = new NsmSimulator({ stateDir: join(tmp, 'state') });
    nsm = await NsmClient.open({ transport: sim });
  });

  it('starts like a real enclave: PCRs 0-15 locked, 0/1/2/4 image-like, the rest zero', async () => {
    expect((await nsm.describeNsm()).lockedPcrs).toEqual(Array.from({ length: 16 }, (_, i) => i));
    const zero = hex(new Uint8Array(48));
    for (const i of [0, 1, 2, 4]) expect(hex((await nsm.describePcr(i)).data)).not.toBe(zero);
    for (const i of [3, 5, 8, 16, 31]) expect(hex((await nsm.describePcr(i)).data)).toBe(zero);
    expect((await nsm.describePcr(16)).lock).toBe(false);
  });

  it('takes PCR values, locked set and module id from options', async () => {
    const pcr0 = 'ab'.repeat(48);
    const s = new NsmSimulator({
      pcrs: { 0: pcr0, 20: new Uint8Array(48).fill(1) },
      lockedPcrs: [0, 20],
      moduleId: 'i-1234-enc5678',
    });
    const c = await NsmClient.open({ transport: s });
    expect(hex((await c.describePcr(0)).data)).toBe(pcr0);
    expect((await c.describePcr(20)).lock).toBe(true);
    expect((await c.describePcr(1)).lock).toBe(false);
    expect(await c.describeNsm()).toMatchObject({
      moduleId: 'i-1234-enc5678',
      lockedPcrs: [0, 20],
    });
    const doc = parseDocument(await c.getAttestationDocument());
    expect(doc.moduleId).toBe('i-1234-enc5678');
    expect([...doc.pcrs.keys()]).toEqual([0, 20]);
  });

  it('rejects bad options with ERR_NSM_SIMULATOR naming the field', () => {
    const bad = [
      () => new NsmSimulator({ pcrs: { 0: 'abc' } }),
      () => new NsmSimulator({ pcrs: { 0: 'ab'.repeat(32) } }),
      () => new NsmSimulator({ pcrs: { 40: 'ab'.repeat(48) } }),
      () => new NsmSimulator({ lockedPcrs: [32] }),
      () => new NsmSimulator({ moduleId: '' }),
    ];
    for (const make of bad) {
      expect(make).toThrowError(expect.objectContaining({ code: 'ERR_NSM_SIMULATOR' }));
    }
  });

  it('index 65535 answers InvalidIndex (a u16; QEMU answers InvalidOperation for >= 256)', async () => {
    await rejectsWith(nsm.describePcr(65535), 'ERR_NSM_INVALID_INDEX', 'InvalidIndex');
    await rejectsWith(nsm.describePcr(256), 'ERR_NSM_INVALID_INDEX', 'InvalidIndex');
  });

  it('answers InputTooLarge for attestation fields over 1024 bytes sent raw', async () => {
    const raw = cbor({
      Attestation: { user_data: new Uint8Array(1025), nonce: null, public_key: null },
    });
    const res = await nsm.transport.request(raw);
    await rejectsWith(
      Promise.resolve().then(() => expectResponse(res, 'Attestation', 'raw')),
      'ERR_NSM_INPUT_TOO_LARGE',
      'InputTooLarge',
    );
  });

  it('signs documents that verify with the dev root and never with the AWS root', async () => {
    const nonce = Uint8Array.of(1, 2, 3);
    const doc = await nsm.getAttestationDocument({ nonce, userData: Uint8Array.of(9) });
    const root = await sim.devRoot();
    const verified = verifyDocument(doc, { roots: [root.pem], policy: { nonce } });
    expect(verified.alg).toBe('ES384');
    expect(verified.moduleId).toBe(sim.moduleId);
    expect(verified.cabundle.length).toBe(2); // root, intermediate
    expect(hex(verified.pcrs.get(0)!)).toBe(hex((await nsm.describePcr(0)).data));
    expect(verifyDocument(doc, { roots: [root.der] }).moduleId).toBe(sim.moduleId);
    expect(() => verifyDocument(doc)).toThrowError(
      expect.objectContaining({ code: 'ERR_ATTESTATION_UNTRUSTED_ROOT' }),
    );
    expect(() => verifyDocument(doc, { roots: [AWS_NITRO_ROOT_PEM] })).toThrowError(
      expect.objectContaining({ code: 'ERR_ATTESTATION_UNTRUSTED_ROOT' }),
    );
    const { protectedHeader, signature } = documentParts(doc);
    expect(protectedHeader.get(1)).toBe(-35);
    expect(signature.length).toBe(96);
  });

  it('persists the dev CA in stateDir (keys 0600) and reuses it across simulators', async () => {
    const dir = join(tmp, 'state', 'dev-ca');
    for (const f of ['root.pem', 'intermediate.pem', 'leaf.pem']) {
      expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600);
    }
    expect(statSync(join(tmp, 'state')).mode & 0o777).toBe(0o700);
    const rootPem = readFileSync(join(dir, 'root.crt'), 'utf8');
    expect(rootPem).toBe((await sim.devRoot()).pem);
    const again = new NsmSimulator({ stateDir: join(tmp, 'state') });
    expect((await again.devRoot()).pem).toBe(rootPem);
    expect((await getDevRoot(join(tmp, 'state'))).pem).toBe(rootPem);
    const doc = await (await NsmClient.open({ transport: again })).getAttestationDocument();
    expect(verifyDocument(doc, { roots: [rootPem] }).moduleId).toBe(again.moduleId);
  });

  it('creates one CA when several simulators start on an empty stateDir at once', async () => {
    const dir = join(tmp, 'race');
    const roots = await Promise.all(
      Array.from({ length: 4 }, () => new NsmSimulator({ stateDir: dir }).devRoot()),
    );
    expect(new Set(roots.map((r) => r.pem)).size).toBe(1);
    expect((await getDevRoot(dir)).pem).toBe(roots[0]!.pem);
  });

  it('re-issues the leaf when it is near expiry and keeps the root', async () => {
    const dir = join(tmp, 'renew');
    let now = Date.now();
    const s = new NsmSimulator({ stateDir: dir, now: () => now });
    const c = await NsmClient.open({ transport: s });
    const first = parseDocument(await c.getAttestationDocument());
    const leafFile = () => readFileSync(join(dir, 'dev-ca', 'leaf.pem'), 'utf8');
    const firstLeaf = leafFile();
    now += 2 * 3_600_000; // 1 h left: still used
    expect(hex(parseDocument(await c.getAttestationDocument()).certificate)).toBe(
      hex(first.certificate),
    );
    now += 45 * 60_000; // 15 min left: re-issued
    const renewed = await c.getAttestationDocument();
    const second = parseDocument(renewed);
    expect(hex(second.certificate)).not.toBe(hex(first.certificate));
    expect(leafFile()).not.toBe(firstLeaf);
    expect(statSync(join(dir, 'dev-ca', 'leaf.pem')).mode & 0o777).toBe(0o600);
    const leaf = new X509Certificate(second.certificate);
    expect(Date.parse(leaf.validTo)).toBeGreaterThan(now + 2 * 3_600_000);
    const root = await s.devRoot();
    expect(verifyDocument(renewed, { roots: [root.pem], at: 'document' }).moduleId).toBe(
      s.moduleId,
    );
    // a new simulator on the same dir picks up the renewed leaf
    const s2 = new NsmSimulator({ stateDir: dir, now: () => now });
    const doc2 = parseDocument(
      await (await NsmClient.open({ transport: s2 })).getAttestationDocument(),
    );
    expect(hex(doc2.certificate)).toBe(hex(second.certificate));
  });

  it('reports a broken stateDir as ERR_NSM_SIMULATOR and a document request as InternalError', async () => {
    const file = join(tmp, 'not-a-dir');
    writeFileSync(file, 'x');
    await expect(new NsmSimulator({ stateDir: file }).devRoot()).rejects.toMatchObject({
      code: 'ERR_NSM_SIMULATOR',
    });
    const c = await NsmClient.open({ transport: new NsmSimulator({ stateDir: file }) });
    await rejectsWith(c.getAttestationDocument(), 'ERR_NSM_INTERNAL_ERROR', 'InternalError');
    // everything else still works
    expect((await c.getRandom(10)).length).toBe(10);
  });

  it('extend results follow SHA-384 from the configured start value', async () => {
    const start = new Uint8Array(48).fill(5);
    const c = await NsmClient.open({ transport: new NsmSimulator({ pcrs: { 16: start } }) });
    expect(hex(await c.extendPcr(16, Uint8Array.of(1)))).toBe(hex(sha384(start, Uint8Array.of(1))));
  });

  it('NsmClient.open rejects a transport that is not one (e.g. a forgotten await)', async () => {
    const pending = socketTransport(join(tmp, 'none.sock'));
    pending.catch(() => {}); // nobody listens there; only the Promise object matters
    const e = await rejectsWith(
      NsmClient.open({ transport: pending as never }),
      'ERR_NSM_INVALID_ARGUMENT',
    );
    expect(e.message).toContain('forget `await socketTransport');
    await rejectsWith(NsmClient.open({ transport: {} as never }), 'ERR_NSM_INVALID_ARGUMENT');
  });

  it('NsmError keeps cause-free codes stable', () => {
    const e = new NsmError('ERR_NSM_CLOSED', 'x');
    expect(e.name).toBe('NsmError');
    expect(e).toBeInstanceOf(Error);
  });
});
