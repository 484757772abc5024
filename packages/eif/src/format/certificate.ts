// The signing-certificate facts `nitro-cli describe-eif` prints (IssuerName, Algorithm,
// NotBefore, NotAfter, Signature), read from the DER with a minimal TLV walker.
import { X509Certificate } from 'node:crypto';

export interface SigningCertificateInfo {
  /** Issuer attributes by OpenSSL long name (commonName, organizationName, ...). */
  IssuerName: Record<string, string>;
  /** Signature algorithm long name, e.g. `ecdsa-with-SHA384`. */
  Algorithm: string;
  /** OpenSSL's time format, e.g. `Dec  1 15:00:00 2026 GMT`. */
  NotBefore: string;
  NotAfter: string;
  /** The certificate's signature bytes as upper-case hex pairs joined by `:`. */
  Signature: string;
}

interface Tlv {
  tag: number;
  start: number;
  end: number;
  header: number;
}

function tlv(b: Buffer, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw new Error('DER truncated');
  const tag = b[pos]!;
  let len = b[pos + 1]!;
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || pos + 2 + n > limit) throw new Error('DER length invalid');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[pos + 2 + i]!;
    hdr += n;
  }
  const end = pos + hdr + len;
  if (end > limit) throw new Error('DER truncated');
  return { tag, start: pos, end, header: hdr };
}

function kids(b: Buffer, t: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let p = t.start + t.header;
  while (p < t.end) {
    const c = tlv(b, p, t.end);
    out.push(c);
    p = c.end;
  }
  return out;
}

function oid(bytes: Buffer): string {
  const parts: number[] = [];
  let v = 0;
  for (const x of bytes) {
    v = v * 128 + (x & 0x7f);
    if (!(x & 0x80)) {
      if (parts.length === 0) parts.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

const NAMES: Record<string, string> = {
  '2.5.4.3': 'commonName',
  '2.5.4.4': 'surname',
  '2.5.4.5': 'serialNumber',
  '2.5.4.6': 'countryName',
  '2.5.4.7': 'localityName',
  '2.5.4.8': 'stateOrProvinceName',
  '2.5.4.9': 'streetAddress',
  '2.5.4.10': 'organizationName',
  '2.5.4.11': 'organizationalUnitName',
  '2.5.4.12': 'title',
  '2.5.4.42': 'givenName',
  '1.2.840.113549.1.9.1': 'emailAddress',
  '0.9.2342.19200300.100.1.25': 'domainComponent',
  '1.2.840.10045.4.3.2': 'ecdsa-with-SHA256',
  '1.2.840.10045.4.3.3': 'ecdsa-with-SHA384',
  '1.2.840.10045.4.3.4': 'ecdsa-with-SHA512',
  '1.2.840.113549.1.1.11': 'sha256WithRSAEncryption',
  '1.2.840.113549.1.1.12': 'sha384WithRSAEncryption',
  '1.2.840.113549.1.1.13': 'sha512WithRSAEncryption',
  '1.3.101.112': 'ED25519',
};

function text(b: Buffer, t: Tlv): string {
  const body = b.subarray(t.start + t.header, t.end);
  if (t.tag === 0x1e) {
    // BMPString: UTF-16BE
    const swapped = Buffer.from(body);
    swapped.swap16();
    return swapped.toString('utf16le');
  }
  return body.toString(t.tag === 0x0c ? 'utf8' : 'latin1');
}

/** The describe-eif view of a certificate (DER or PEM). */
export function certificateInfo(certificate: Uint8Array): SigningCertificateInfo {
  const x = new X509Certificate(certificate);
  const der = x.raw;
  const top = tlv(der, 0, der.length);
  const [tbs, alg, sig] = kids(der, top);
  if (!tbs || !alg || !sig) throw new Error('certificate: not a SEQUENCE of 3 elements');
  const algOidTlv = kids(der, alg)[0];
  if (!algOidTlv) throw new Error('certificate: empty signatureAlgorithm');
  const algOid = oid(der.subarray(algOidTlv.start + algOidTlv.header, algOidTlv.end));
  // tbsCertificate: [0] version?, serial, signature, issuer, validity, subject, ...
  const t = kids(der, tbs);
  const off = t[0]?.tag === 0xa0 ? 1 : 0;
  const issuer = t[off + 2];
  const issuerName: Record<string, string> = {};
  if (issuer) {
    for (const rdn of kids(der, issuer)) {
      for (const atv of kids(der, rdn)) {
        const [typ, val] = kids(der, atv);
        if (!typ || !val) continue;
        const o = oid(der.subarray(typ.start + typ.header, typ.end));
        issuerName[NAMES[o] ?? o] = text(der, val);
      }
    }
  }
  const sigBytes = der.subarray(sig.start + sig.header + 1, sig.end);
  return {
    IssuerName: Object.fromEntries(
      Object.entries(issuerName).sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b))),
    ),
    Algorithm: NAMES[algOid] ?? algOid,
    NotBefore: x.validFrom,
    NotAfter: x.validTo,
    Signature: Array.from(sigBytes, (v) => v.toString(16).toUpperCase().padStart(2, '0')).join(':'),
  };
}
