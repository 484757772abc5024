// CMS EnvelopedData (RFC 5652) as AWS KMS returns it in CiphertextForRecipient:
// KeyTransRecipientInfo with RSAES-OAEP (SHA-256, MGF1-SHA-256) + AES-256-CBC content.
import {
  constants,
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import {
  type BerNode,
  content,
  indefinite,
  isContext,
  isUniversal,
  malformed,
  octets,
  oid,
  oidToString,
  parseBer,
  smallInteger,
  tlv,
} from './ber.js';
import { KmsError } from './errors.js';

const OID_ENVELOPED_DATA = '1.2.840.113549.1.7.3';
const OID_DATA = '1.2.840.113549.1.7.1';
const OID_RSA_ENCRYPTION = '1.2.840.113549.1.1.1';
const OID_RSAES_OAEP = '1.2.840.113549.1.1.7';
const OID_MGF1 = '1.2.840.113549.1.1.8';
const OID_P_SPECIFIED = '1.2.840.113549.1.1.9';
const OID_SHA1 = '1.3.14.3.2.26';
const OID_SHA256 = '2.16.840.1.101.3.4.2.1';
const OID_AES256_CBC = '2.16.840.1.101.3.4.1.42';

const OID_NAMES: Record<string, string> = {
  [OID_RSA_ENCRYPTION]: 'rsaEncryption (PKCS#1 v1.5)',
  [OID_RSAES_OAEP]: 'RSAES-OAEP',
  [OID_SHA1]: 'SHA-1',
  [OID_SHA256]: 'SHA-256',
  '2.16.840.1.101.3.4.2.2': 'SHA-384',
  '2.16.840.1.101.3.4.2.3': 'SHA-512',
  [OID_AES256_CBC]: 'AES-256-CBC',
  '2.16.840.1.101.3.4.1.2': 'AES-128-CBC',
  '2.16.840.1.101.3.4.1.22': 'AES-192-CBC',
  '2.16.840.1.101.3.4.1.46': 'AES-256-GCM',
  '1.2.840.113549.3.7': 'DES-EDE3-CBC',
  '1.2.840.113549.1.7.2': 'signedData',
  [OID_ENVELOPED_DATA]: 'envelopedData',
  '1.2.840.113549.1.9.16.1.23': 'authEnvelopedData',
};

const nameOf = (o: string): string => (OID_NAMES[o] ? `${OID_NAMES[o]} (${o})` : o);

/** An RSA private key: a KeyObject, PEM (string or bytes) or DER PKCS#8 bytes. */
export type RecipientPrivateKey = KeyObject | string | Uint8Array;

/** The recipient's RSA public key: a KeyObject or DER SubjectPublicKeyInfo bytes. */
export type RecipientPublicKey = KeyObject | Uint8Array;

export interface EncryptForRecipientOptions {
  /** Size of the OCTET STRING chunks inside the constructed `[0]` content (default 1024). */
  chunkSize?: number;
  /**
   * `'constructed'` (default, as AWS KMS): `[0]` constructed with indefinite length holding
   * chunked OCTET STRINGs; `'primitive'`: one primitive `[0]`.
   */
  contentForm?: 'constructed' | 'primitive';
}

interface KeyTrans {
  index: number;
  ski: Buffer | undefined;
  algorithm: string;
  /** why the algorithm is unsupported, or undefined when it is RSAES-OAEP-SHA-256 */
  unsupported: string | undefined;
  encryptedKey: Buffer;
}

interface Envelope {
  recipients: KeyTrans[];
  otherRecipientKinds: string[];
  iv: Buffer;
  encryptedContent: Buffer;
}

function unsupported(message: string): KmsError {
  return new KmsError(
    'ERR_KMS_CMS_UNSUPPORTED_ALGORITHM',
    `${message}; only RSAES-OAEP with SHA-256/MGF1-SHA-256 key transport and AES-256-CBC content (what AWS KMS uses for Recipient) are supported.`,
  );
}

function child(node: BerNode, i: number, what: string): BerNode {
  const c = node.children[i];
  if (!c) throw malformed(`${what} is missing`);
  return c;
}

function expectSequence(node: BerNode | undefined, what: string): BerNode {
  if (!isUniversal(node, 16) || !node.constructed) throw malformed(`${what} is not a SEQUENCE`);
  return node;
}

function isNull(node: BerNode | undefined): boolean {
  return isUniversal(node, 5) && node.end === node.start;
}

/** AlgorithmIdentifier { OID, params? } with a hash OID and absent or NULL parameters. */
function hashAlgorithm(node: BerNode, what: string): string {
  const seq = expectSequence(node, what);
  const o = oidToString(child(seq, 0, `${what} algorithm`), `${what} algorithm`);
  const params = seq.children[1];
  if (params !== undefined && !isNull(params)) throw malformed(`${what} has non-NULL parameters`);
  return o;
}

function checkOaepParams(params: BerNode | undefined): string | undefined {
  // RSAES-OAEP-params ::= SEQUENCE { [0] hash DEFAULT sha1, [1] mgf DEFAULT mgf1SHA1, [2] pSource DEFAULT empty }
  if (params === undefined || isNull(params)) return 'RSAES-OAEP with default (SHA-1) parameters';
  const seq = expectSequence(params, 'RSAES-OAEP parameters');
  let hash = OID_SHA1;
  let mgfHash = OID_SHA1;
  for (const p of seq.children) {
    if (isContext(p, 0) && p.constructed) {
      hash = hashAlgorithm(child(p, 0, 'OAEP hashAlgorithm'), 'OAEP hashAlgorithm');
    } else if (isContext(p, 1) && p.constructed) {
      const mgf = expectSequence(p.children[0], 'OAEP maskGenAlgorithm');
      const mgfOid = oidToString(
        child(mgf, 0, 'OAEP mask generation OID'),
        'OAEP mask generation OID',
      );
      if (mgfOid !== OID_MGF1) return `RSAES-OAEP with mask generation ${nameOf(mgfOid)}`;
      mgfHash = hashAlgorithm(child(mgf, 1, 'MGF1 hash'), 'MGF1 hash');
    } else if (isContext(p, 2) && p.constructed) {
      const src = expectSequence(p.children[0], 'OAEP pSourceAlgorithm');
      const srcOid = oidToString(child(src, 0, 'OAEP pSource OID'), 'OAEP pSource OID');
      const label = src.children[1];
      if (srcOid !== OID_P_SPECIFIED) return `RSAES-OAEP with pSource ${nameOf(srcOid)}`;
      if (
        label !== undefined &&
        (!isUniversal(label, 4) || octets(label, 'OAEP label').length > 0)
      ) {
        return 'RSAES-OAEP with a non-empty label';
      }
    } else {
      throw malformed('RSAES-OAEP parameters hold an unexpected element');
    }
  }
  if (hash !== OID_SHA256) return `RSAES-OAEP with hash ${nameOf(hash)}`;
  if (mgfHash !== OID_SHA256) return `RSAES-OAEP with MGF1 hash ${nameOf(mgfHash)}`;
  return undefined;
}

function parseKeyTrans(node: BerNode, index: number): KeyTrans {
  const what = `recipientInfos[${index}]`;
  const version = smallInteger(child(node, 0, `${what}.version`), `${what}.version`);
  if (version !== 0 && version !== 2)
    throw malformed(`${what}.version is ${version}, expected 0 or 2`);
  const rid = child(node, 1, `${what}.rid`);
  let ski: Buffer | undefined;
  if (isContext(rid, 0)) ski = octets(rid, `${what}.rid subjectKeyIdentifier`);
  else if (!isUniversal(rid, 16))
    throw malformed(`${what}.rid is neither issuerAndSerialNumber nor [0] subjectKeyIdentifier`);
  const alg = expectSequence(node.children[2], `${what}.keyEncryptionAlgorithm`);
  const algOid = oidToString(
    child(alg, 0, `${what} key encryption OID`),
    `${what} key encryption OID`,
  );
  const ek = child(node, 3, `${what}.encryptedKey`);
  if (!isUniversal(ek, 4)) throw malformed(`${what}.encryptedKey is not an OCTET STRING`);
  let why: string | undefined;
  if (algOid === OID_RSAES_OAEP) why = checkOaepParams(alg.children[1]);
  else why = `key transport ${nameOf(algOid)}`;
  return {
    index,
    ski,
    algorithm: algOid,
    unsupported: why,
    encryptedKey: octets(ek, `${what}.encryptedKey`),
  };
}

function parseEnvelope(ber: Uint8Array): Envelope {
  const root = expectSequence(parseBer(ber), 'ContentInfo');
  const type = oidToString(child(root, 0, 'ContentInfo.contentType'), 'ContentInfo.contentType');
  if (type !== OID_ENVELOPED_DATA) {
    throw unsupported(`ContentInfo.contentType is ${nameOf(type)}, not envelopedData`);
  }
  const wrapper = child(root, 1, 'ContentInfo.content');
  if (!isContext(wrapper, 0) || !wrapper.constructed)
    throw malformed('ContentInfo.content is not [0] EXPLICIT');
  const ed = expectSequence(wrapper.children[0], 'EnvelopedData');
  const version = smallInteger(child(ed, 0, 'EnvelopedData.version'), 'EnvelopedData.version');
  if (version < 0 || version > 4) throw malformed(`EnvelopedData.version is ${version}`);
  let i = 1;
  if (isContext(ed.children[i], 0)) i++; // originatorInfo
  const ris = child(ed, i++, 'EnvelopedData.recipientInfos');
  if (!isUniversal(ris, 17) || !ris.constructed)
    throw malformed('EnvelopedData.recipientInfos is not a SET');
  const recipients: KeyTrans[] = [];
  const otherRecipientKinds: string[] = [];
  ris.children.forEach((ri, idx) => {
    if (isUniversal(ri, 16) && ri.constructed) recipients.push(parseKeyTrans(ri, idx));
    else if (ri.cls === 2) {
      otherRecipientKinds.push(
        [
          'KeyAgreeRecipientInfo',
          'KEKRecipientInfo',
          'PasswordRecipientInfo',
          'OtherRecipientInfo',
        ][ri.tag - 1] ?? `[${ri.tag}]`,
      );
    } else throw malformed(`recipientInfos[${idx}] is not a RecipientInfo`);
  });
  const eci = expectSequence(ed.children[i], 'EnvelopedData.encryptedContentInfo');
  oidToString(
    child(eci, 0, 'encryptedContentInfo.contentType'),
    'encryptedContentInfo.contentType',
  );
  const calg = expectSequence(eci.children[1], 'contentEncryptionAlgorithm');
  const calgOid = oidToString(
    child(calg, 0, 'contentEncryptionAlgorithm OID'),
    'contentEncryptionAlgorithm OID',
  );
  if (calgOid !== OID_AES256_CBC) throw unsupported(`content encryption is ${nameOf(calgOid)}`);
  const ivNode = calg.children[1];
  if (!isUniversal(ivNode, 4)) throw malformed('AES-256-CBC parameters are not an OCTET STRING IV');
  const iv = octets(ivNode, 'AES-256-CBC IV');
  if (iv.length !== 16) throw malformed(`AES-256-CBC IV is ${iv.length} bytes, expected 16`);
  const ec = eci.children[2];
  if (ec === undefined)
    throw malformed(
      'encryptedContentInfo has no encryptedContent (detached content is not supported)',
    );
  if (!isContext(ec, 0)) throw malformed('encryptedContent is not [0]');
  const encryptedContent = ec.constructed
    ? octets(ec, 'encryptedContent')
    : Buffer.from(content(ec));
  return { recipients, otherRecipientKinds, iv, encryptedContent };
}

function toPrivateKey(privateKey: RecipientPrivateKey): KeyObject {
  let key: KeyObject;
  try {
    if (typeof privateKey === 'string') key = createPrivateKey(privateKey);
    else if (privateKey instanceof Uint8Array) {
      const buf = Buffer.from(privateKey);
      key =
        buf.subarray(0, 11).toString('latin1') === '-----BEGIN '
          ? createPrivateKey(buf)
          : createPrivateKey({ key: buf, format: 'der', type: 'pkcs8' });
    } else key = privateKey;
  } catch (err) {
    throw new KmsError(
      'ERR_KMS_INVALID_ARGUMENT',
      'privateKey could not be read: pass an RSA private key as KeyObject, PEM or DER PKCS#8.',
      { cause: err },
    );
  }
  if (key.type !== 'private' || key.asymmetricKeyType !== 'rsa') {
    throw new KmsError(
      'ERR_KMS_INVALID_ARGUMENT',
      `privateKey is a ${key.type} ${key.asymmetricKeyType ?? 'symmetric'} key: pass the RSA private key whose public key was in the attestation document.`,
    );
  }
  return key;
}

/** SHA-256 of the DER SubjectPublicKeyInfo: the subjectKeyIdentifier AWS KMS puts in its answers. */
export function recipientKeyIdentifier(publicKey: RecipientPublicKey): Buffer {
  return createHash('sha256').update(rsaPublicKey(publicKey).spki).digest();
}

// Parsing a key costs about a millisecond with OpenSSL 3's decoders; the same recipient key is
// used for many answers (until the client rotates it), so keep a few parsed keys.
const publicKeyCache = new Map<string, KeyObject>();
const PUBLIC_KEY_CACHE_SIZE = 64;
const spkiCache = new WeakMap<KeyObject, Buffer>();

function publicKeyOf(publicKey: RecipientPublicKey): KeyObject {
  if (!(publicKey instanceof Uint8Array)) {
    return publicKey.type === 'public' ? publicKey : createPublicKey(publicKey);
  }
  const id = Buffer.from(publicKey).toString('base64');
  const hit = publicKeyCache.get(id);
  if (hit) return hit;
  const key = createPublicKey({ key: Buffer.from(publicKey), format: 'der', type: 'spki' });
  if (publicKeyCache.size >= PUBLIC_KEY_CACHE_SIZE) {
    publicKeyCache.delete(publicKeyCache.keys().next().value as string);
  }
  publicKeyCache.set(id, key);
  return key;
}

function rsaPublicKey(publicKey: RecipientPublicKey): { key: KeyObject; spki: Buffer } {
  try {
    const key = publicKeyOf(publicKey);
    if (key.asymmetricKeyType !== 'rsa') {
      throw new Error(`${key.asymmetricKeyType ?? 'unknown'} key`);
    }
    let spki: Buffer;
    if (publicKey instanceof Uint8Array) spki = Buffer.from(publicKey);
    else {
      spki = spkiCache.get(publicKey) ?? key.export({ format: 'der', type: 'spki' });
      spkiCache.set(publicKey, spki);
    }
    return { key, spki };
  } catch (err) {
    throw new KmsError(
      'ERR_KMS_INVALID_ARGUMENT',
      `recipient public key is not an RSA DER SubjectPublicKeyInfo (${(err as Error).message}): pass the SPKI of an RSA key (AWS uses RSA-2048).`,
      { cause: err },
    );
  }
}

/**
 * Decrypts CMS EnvelopedData (BER or DER; what AWS KMS returns in `CiphertextForRecipient`)
 * with the recipient's RSA private key. Throws `KmsError`: `ERR_KMS_CMS_MALFORMED`,
 * `ERR_KMS_CMS_TRUNCATED`, `ERR_KMS_CMS_UNSUPPORTED_ALGORITHM`, `ERR_KMS_CMS_WRONG_RECIPIENT`,
 * `ERR_KMS_CMS_BAD_PADDING`, `ERR_KMS_INVALID_ARGUMENT`.
 */
export function decryptCiphertextForRecipient(
  ciphertext: Uint8Array,
  privateKey: RecipientPrivateKey,
): Buffer {
  if (!(ciphertext instanceof Uint8Array)) {
    throw new KmsError(
      'ERR_KMS_INVALID_ARGUMENT',
      'ciphertext must be a Uint8Array/Buffer holding CMS EnvelopedData bytes.',
    );
  }
  const key = toPrivateKey(privateKey);
  const env = parseEnvelope(ciphertext);
  if (env.recipients.length === 0) {
    throw unsupported(
      env.otherRecipientKinds.length > 0
        ? `recipientInfos hold only ${env.otherRecipientKinds.join(', ')}`
        : 'recipientInfos is empty',
    );
  }
  const usable = env.recipients.filter((r) => r.unsupported === undefined);
  if (usable.length === 0)
    throw unsupported(`recipientInfos[0] uses ${env.recipients[0]?.unsupported}`);
  if (usable.length > 1) {
    const ski = recipientKeyIdentifier(key);
    usable.sort(
      (a, b) => Number(b.ski?.equals(ski) ?? false) - Number(a.ski?.equals(ski) ?? false),
    );
  }
  let cek: Buffer | undefined;
  let lastError: unknown;
  for (const r of usable) {
    try {
      cek = privateDecrypt(
        { key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
        r.encryptedKey,
      );
      break;
    } catch (err) {
      lastError = err;
    }
  }
  if (cek === undefined) {
    throw new KmsError(
      'ERR_KMS_CMS_WRONG_RECIPIENT',
      `no recipientInfo of the CMS EnvelopedData decrypts with this private key (tried ${usable.length}): use the key whose public key was in the Recipient attestation document.`,
      { cause: lastError },
    );
  }
  if (cek.length !== 32) {
    throw malformed(
      `the unwrapped content-encryption key is ${cek.length} bytes, AES-256 needs 32`,
    );
  }
  const data = env.encryptedContent;
  if (data.length === 0 || data.length % 16 !== 0) {
    throw new KmsError(
      data.length === 0 ? 'ERR_KMS_CMS_TRUNCATED' : 'ERR_KMS_CMS_MALFORMED',
      `encryptedContent is ${data.length} bytes, not a non-zero multiple of the AES block size (16): the ciphertext is damaged.`,
    );
  }
  const decipher = createDecipheriv('aes-256-cbc', cek, env.iv);
  decipher.setAutoPadding(false);
  const padded = Buffer.concat([decipher.update(data), decipher.final()]);
  const n = padded[padded.length - 1] as number;
  let bad = n < 1 || n > 16 ? 1 : 0;
  for (let i = 1; i <= 16; i++) {
    if (i <= n) bad |= (padded[padded.length - i] as number) ^ n;
  }
  if (bad !== 0) {
    throw new KmsError(
      'ERR_KMS_CMS_BAD_PADDING',
      'the decrypted content has invalid PKCS#7 padding: the ciphertext or its IV was altered, or the key is not the one it was encrypted for.',
    );
  }
  return padded.subarray(0, padded.length - n);
}

/**
 * Encrypts `plaintext` to the RSA public key `recipientSpkiDer` as BER CMS EnvelopedData shaped
 * like AWS KMS's `CiphertextForRecipient`: indefinite lengths, KeyTransRecipientInfo v2 with a
 * subjectKeyIdentifier (SHA-256 of the SPKI), RSAES-OAEP SHA-256/MGF1-SHA-256, AES-256-CBC with a
 * random IV and PKCS#7 padding, content as chunked constructed `[0]`.
 */
export function encryptForRecipient(
  plaintext: Uint8Array,
  recipientSpkiDer: RecipientPublicKey,
  options: EncryptForRecipientOptions = {},
): Buffer {
  if (!(plaintext instanceof Uint8Array)) {
    throw new KmsError('ERR_KMS_INVALID_ARGUMENT', 'plaintext must be a Uint8Array/Buffer.');
  }
  const chunkSize = options.chunkSize ?? 1024;
  if (!Number.isInteger(chunkSize) || chunkSize < 1) {
    throw new KmsError(
      'ERR_KMS_INVALID_ARGUMENT',
      `options.chunkSize is ${chunkSize}: pass a positive integer.`,
    );
  }
  const { key: recipientKey, spki } = rsaPublicKey(recipientSpkiDer);
  const cek = randomBytes(32);
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-cbc', cek, iv);
  const encrypted = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const encryptedKey = publicEncrypt(
    {
      key: recipientKey,
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: 'sha256',
    },
    cek,
  );
  const sha256 = tlv(0x30, oid(OID_SHA256), Buffer.from([0x05, 0x00]));
  const oaep = tlv(
    0x30,
    oid(OID_RSAES_OAEP),
    tlv(0x30, tlv(0xa0, sha256), tlv(0xa1, tlv(0x30, oid(OID_MGF1), sha256))),
  );
  const ktri = tlv(
    0x30,
    tlv(0x02, Buffer.from([2])),
    tlv(0x80, createHash('sha256').update(spki).digest()),
    oaep,
    tlv(0x04, encryptedKey),
  );
  let encryptedContent: Buffer;
  if (options.contentForm === 'primitive') encryptedContent = tlv(0x80, encrypted);
  else {
    const chunks: Buffer[] = [];
    for (let o = 0; o < encrypted.length; o += chunkSize)
      chunks.push(tlv(0x04, encrypted.subarray(o, o + chunkSize)));
    encryptedContent = indefinite(0xa0, ...chunks);
  }
  const eci = indefinite(
    0x30,
    oid(OID_DATA),
    tlv(0x30, oid(OID_AES256_CBC), tlv(0x04, iv)),
    encryptedContent,
  );
  const ed = indefinite(0x30, tlv(0x02, Buffer.from([2])), tlv(0x31, ktri), eci);
  return indefinite(0x30, oid(OID_ENVELOPED_DATA), indefinite(0xa0, ed));
}
