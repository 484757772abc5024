import {
  createPublicKey,
  verify as cryptoVerify,
  type KeyObject,
  hash as oneShotHash,
} from 'node:crypto';
import {
  children,
  content,
  DerError,
  decodeOid,
  decodeSmallUint,
  decodeTime,
  expectTag,
  readTlv,
  TAG,
  type Tlv,
  whole,
} from './der.js';

/** What the verifier needs to know about one X.509 certificate. Internal. */
export interface ParsedCertificate {
  der: Uint8Array;
  /** SHA-256 of the DER, lowercase hex. */
  sha256: string;
  tbs: Uint8Array;
  signatureAlgorithm: string;
  signature: Uint8Array;
  issuer: Uint8Array;
  subject: Uint8Array;
  subjectText: string;
  notBefore: number;
  notAfter: number;
  spki: Uint8Array;
  basicConstraints?: { ca: boolean; pathLen?: number };
  /** keyUsage bits as an integer, bit 0 (digitalSignature) = 1 << 0 ... */
  keyUsage?: number;
  unknownCritical: string[];
}

export const OID = {
  ecPublicKey: '1.2.840.10045.2.1',
  ecdsaSha256: '1.2.840.10045.4.3.2',
  ecdsaSha384: '1.2.840.10045.4.3.3',
  ecdsaSha512: '1.2.840.10045.4.3.4',
  rsaSha256: '1.2.840.113549.1.1.11',
  rsaSha384: '1.2.840.113549.1.1.12',
  rsaSha512: '1.2.840.113549.1.1.13',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  commonName: '2.5.4.3',
  country: '2.5.4.6',
  organization: '2.5.4.10',
  organizationalUnit: '2.5.4.11',
} as const;

export const KEY_USAGE = {
  digitalSignature: 1 << 0,
  keyCertSign: 1 << 5,
  cRLSign: 1 << 6,
} as const;

const HASH_OF_SIG_ALG: Record<string, string> = {
  [OID.ecdsaSha256]: 'sha256',
  [OID.ecdsaSha384]: 'sha384',
  [OID.ecdsaSha512]: 'sha512',
  [OID.rsaSha256]: 'sha256',
  [OID.rsaSha384]: 'sha384',
  [OID.rsaSha512]: 'sha512',
};

const NAME_ATTR: Record<string, string> = {
  [OID.commonName]: 'CN',
  [OID.country]: 'C',
  [OID.organization]: 'O',
  [OID.organizationalUnit]: 'OU',
};

// biome-ignore lint/suspicious/noControlCharactersInRegex: replaces control characters in names
const CONTROL_CHARS = /[\u0000-\u001f]/g;

export function sha256Hex(bytes: Uint8Array): string {
  // One-shot: no Hash object per call (the verifier hashes every cabundle entry of every document).
  return oneShotHash('sha256', bytes, 'hex');
}

function algorithmOid(buf: Uint8Array, t: Tlv | undefined): string {
  const parts = children(buf, expectTag(t, TAG.SEQUENCE, 'AlgorithmIdentifier'));
  return decodeOid(content(buf, expectTag(parts[0], TAG.OID, 'algorithm OID')));
}

function nameText(buf: Uint8Array, name: Tlv): string {
  const out: string[] = [];
  for (const rdn of children(buf, name)) {
    for (const atv of children(buf, expectTag(rdn, TAG.SET, 'RDN'))) {
      const [oid, value] = children(buf, expectTag(atv, TAG.SEQUENCE, 'AttributeTypeAndValue'));
      const key = decodeOid(content(buf, expectTag(oid, TAG.OID, 'attribute type')));
      if (!value) throw new DerError('attribute value is missing');
      out.push(
        `${NAME_ATTR[key] ?? key}=${new TextDecoder().decode(content(buf, value)).replace(CONTROL_CHARS, '?')}`,
      );
    }
  }
  return out.join(', ');
}

/** Parses a DER certificate. Throws DerError on anything that is not a well-formed X.509 v3 cert. */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  const top = readTlv(der, 0, der.length);
  if (top.end !== der.length) throw new DerError('trailing bytes after the certificate');
  const [tbsT, sigAlgT, sigT, extra] = children(der, expectTag(top, TAG.SEQUENCE, 'Certificate'));
  if (extra) throw new DerError('extra element in Certificate');
  const tbsSeq = expectTag(tbsT, TAG.SEQUENCE, 'TBSCertificate');
  const signatureAlgorithm = algorithmOid(der, sigAlgT);
  const sigBits = content(der, expectTag(sigT, TAG.BIT_STRING, 'signatureValue'));
  if (sigBits.length < 2 || sigBits[0] !== 0) throw new DerError('bad signatureValue BIT STRING');

  const f = children(der, tbsSeq);
  let i = 0;
  let version = 0;
  if (f[0]?.tag === 0xa0) {
    const [v] = children(der, f[0]);
    version = decodeSmallUint(der, expectTag(v, TAG.INTEGER, 'version'));
    i++;
  }
  if (version !== 2) throw new DerError(`certificate version ${version + 1} (only v3 is accepted)`);
  expectTag(f[i++], TAG.INTEGER, 'serialNumber');
  const tbsAlg = algorithmOid(der, f[i++]);
  if (tbsAlg !== signatureAlgorithm) {
    throw new DerError('TBSCertificate signature algorithm differs from the outer one');
  }
  const issuerT = expectTag(f[i++], TAG.SEQUENCE, 'issuer');
  const [nb, na, extraV] = children(der, expectTag(f[i++], TAG.SEQUENCE, 'validity'));
  if (!nb || !na || extraV) throw new DerError('validity must hold exactly two times');
  const subjectT = expectTag(f[i++], TAG.SEQUENCE, 'subject');
  const spkiT = expectTag(f[i++], TAG.SEQUENCE, 'subjectPublicKeyInfo');
  // optional issuerUniqueID [1] / subjectUniqueID [2]
  while (
    f[i] &&
    (f[i]!.tag === 0x81 || f[i]!.tag === 0xa1 || f[i]!.tag === 0x82 || f[i]!.tag === 0xa2)
  )
    i++;

  const cert: ParsedCertificate = {
    der,
    sha256: sha256Hex(der),
    tbs: whole(der, tbsSeq),
    signatureAlgorithm,
    signature: sigBits.subarray(1),
    issuer: whole(der, issuerT),
    subject: whole(der, subjectT),
    subjectText: nameText(der, subjectT),
    notBefore: decodeTime(der, nb),
    notAfter: decodeTime(der, na),
    spki: whole(der, spkiT),
    unknownCritical: [],
  };

  const extsWrap = f[i];
  if (extsWrap) {
    i++;
    const [extsSeq] = children(der, expectTag(extsWrap, 0xa3, 'extensions'));
    const seen = new Set<string>();
    for (const ext of children(der, expectTag(extsSeq, TAG.SEQUENCE, 'Extensions'))) {
      const parts = children(der, expectTag(ext, TAG.SEQUENCE, 'Extension'));
      const oid = decodeOid(content(der, expectTag(parts[0], TAG.OID, 'extnID')));
      if (seen.has(oid)) throw new DerError(`extension ${oid} appears twice`);
      seen.add(oid);
      let critical = false;
      let k = 1;
      if (parts[k]?.tag === TAG.BOOLEAN) {
        const b = content(der, parts[k]!);
        if (b.length !== 1) throw new DerError('bad BOOLEAN');
        critical = b[0] !== 0;
        k++;
      }
      const valueT = expectTag(parts[k], TAG.OCTET_STRING, 'extnValue');
      if (parts[k + 1]) throw new DerError('extra element in Extension');
      const v = content(der, valueT);
      if (oid === OID.basicConstraints) {
        const bcT = readTlv(v, 0, v.length);
        if (bcT.end !== v.length) throw new DerError('trailing bytes in basicConstraints');
        const bc = children(v, expectTag(bcT, TAG.SEQUENCE, 'basicConstraints'));
        let ca = false;
        let pathLen: number | undefined;
        let j = 0;
        if (bc[j]?.tag === TAG.BOOLEAN) {
          ca = content(v, bc[j]!)[0] !== 0;
          j++;
        }
        if (bc[j]) pathLen = decodeSmallUint(v, expectTag(bc[j], TAG.INTEGER, 'pathLenConstraint'));
        if (bc[j + 1]) throw new DerError('extra element in basicConstraints');
        cert.basicConstraints = pathLen === undefined ? { ca } : { ca, pathLen };
      } else if (oid === OID.keyUsage) {
        const kuT = readTlv(v, 0, v.length);
        if (kuT.end !== v.length) throw new DerError('trailing bytes in keyUsage');
        const bits = content(v, expectTag(kuT, TAG.BIT_STRING, 'keyUsage'));
        if (bits.length < 1 || bits[0]! > 7) throw new DerError('bad keyUsage BIT STRING');
        let usage = 0;
        for (let bit = 0; bit < (bits.length - 1) * 8 && bit < 16; bit++) {
          if (bits[1 + (bit >> 3)]! & (0x80 >> (bit & 7))) usage |= 1 << bit;
        }
        cert.keyUsage = usage;
      } else if (
        critical &&
        oid !== OID.subjectKeyIdentifier &&
        oid !== OID.authorityKeyIdentifier &&
        oid !== OID.extKeyUsage
      ) {
        cert.unknownCritical.push(oid);
      }
    }
  }
  if (f[i]) throw new DerError('extra element in TBSCertificate');
  return cert;
}

/** The hash of a certificate signature algorithm, or undefined when not supported. */
export function hashOfSignatureAlgorithm(oid: string): string | undefined {
  return HASH_OF_SIG_ALG[oid];
}

export function publicKeyOf(cert: ParsedCertificate): KeyObject {
  return createPublicKey({ key: Buffer.from(cert.spki), format: 'der', type: 'spki' });
}

/** Verifies `cert`'s signature with `issuerKey`. Returns false on any mismatch. */
export function verifyCertificateSignature(cert: ParsedCertificate, issuerKey: KeyObject): boolean {
  const hash = hashOfSignatureAlgorithm(cert.signatureAlgorithm);
  if (!hash) return false;
  return cryptoVerify(hash, cert.tbs, issuerKey, cert.signature);
}
