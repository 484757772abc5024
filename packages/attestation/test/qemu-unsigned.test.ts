// Documents of QEMU's emulated NSM (nitro-enclave machine): COSE alg -1, zero signature, zero
// certificate and cabundle (hw/virtio/virtio-nsm.c). parseDocument / verifyDocument refuse them;
// only the explicitly insecure parseUnsignedQemuDocument reads them, and nothing else.
import { describe, expect, it } from 'vitest';
import { type CborValue, encodeCbor } from '../src/cbor.js';
import {
  AttestationError,
  createCertificateChain,
  parseDocument,
  parseUnsignedQemuDocument,
  verifyDocument,
} from '../src/index.js';

const zero64 = new Uint8Array(64);

/** The document exactly as QEMU 10's virtio-nsm builds it. */
function qemuDocument(
  edit: { protectedMap?: Map<CborValue, CborValue>; signature?: Uint8Array } = {},
): Uint8Array {
  const pcrs = new Map<CborValue, CborValue>();
  for (let i = 0; i < 16; i++) pcrs.set(i, new Uint8Array(48).fill(i));
  const payload = new Map<CborValue, CborValue>([
    ['module_id', 'i-local-enc0011223344556677'],
    ['digest', 'SHA384'],
    ['timestamp', 1_764_600_000_000],
    ['pcrs', pcrs],
    ['certificate', zero64],
    ['cabundle', [zero64]],
    ['public_key', new Uint8Array([1, 2, 3])],
    ['user_data', null],
    ['nonce', null],
  ]);
  return encodeCbor([
    encodeCbor(edit.protectedMap ?? new Map([[1, -1]])),
    new Map(),
    encodeCbor(payload),
    edit.signature ?? zero64,
  ]);
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    return (err as AttestationError).code;
  }
  return 'no error';
}

describe('unsigned QEMU documents', () => {
  it('parseDocument and verifyDocument refuse them (alg -1 is not a signature algorithm)', () => {
    const doc = qemuDocument();
    expect(codeOf(() => parseDocument(doc))).toBe('ERR_ATTESTATION_UNSUPPORTED_ALG');
    const roots = [createCertificateChain().root.pem];
    expect(codeOf(() => verifyDocument(doc, { roots }))).toBe('ERR_ATTESTATION_UNSUPPORTED_ALG');
  });

  it('parseUnsignedQemuDocument reads the payload with the usual checks', () => {
    const doc = parseUnsignedQemuDocument(qemuDocument());
    expect(doc.alg).toBe('unsigned-qemu');
    expect(doc.moduleId).toBe('i-local-enc0011223344556677');
    expect(doc.pcrs.size).toBe(16);
    expect(doc.pcrs.get(3)).toEqual(new Uint8Array(48).fill(3));
    expect(doc.publicKey).toEqual(new Uint8Array([1, 2, 3]));
    expect(doc.userData).toBeNull();
  });

  it('parseUnsignedQemuDocument refuses anything but that exact unsigned shape', () => {
    // a real algorithm: a signed document must go through verifyDocument
    expect(
      codeOf(() => parseUnsignedQemuDocument(qemuDocument({ protectedMap: new Map([[1, -35]]) }))),
    ).toBe('ERR_ATTESTATION_UNSUPPORTED_ALG');
    expect(
      codeOf(() =>
        parseUnsignedQemuDocument(
          qemuDocument({
            protectedMap: new Map<CborValue, CborValue>([
              [1, -1],
              [4, 'kid'],
            ]),
          }),
        ),
      ),
    ).toBe('ERR_ATTESTATION_UNSUPPORTED_ALG');
    const sig = new Uint8Array(64);
    sig[7] = 1;
    expect(codeOf(() => parseUnsignedQemuDocument(qemuDocument({ signature: sig })))).toBe(
      'ERR_ATTESTATION_BAD_STRUCTURE',
    );
  });
});
