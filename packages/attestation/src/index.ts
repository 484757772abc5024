export { CborTag, type CborValue, decodeCbor, encodeCbor } from './cbor.js';
export {
  type AttestationDocument,
  type CoseAlgorithm,
  MAX_DOCUMENT_BYTES,
  MAX_FIELD_BYTES,
  MAX_PAYLOAD_BYTES,
  type PcrDigest,
  parseDocument,
  parseUnsignedQemuDocument,
  type UnsignedQemuDocument,
} from './document.js';
export { decodeDocumentInput, derToPem, pemToDer, toHex } from './encoding.js';
export {
  ATTESTATION_ERROR_CODES,
  AttestationError,
  type AttestationErrorCode,
  type AttestationErrorOptions,
} from './errors.js';
export { AWS_NITRO_ROOT_PEM, AWS_NITRO_ROOT_SHA256 } from './root.js';
export {
  type CertificateChain,
  type CreateCertificateChainOptions,
  type CurveName,
  createCertificateChain,
  type DocumentFields,
  type IssueCertificateOptions,
  type IssuedCertificate,
  issueCertificate,
  type SignDocumentOptions,
  type SubjectName,
  signDocument,
  type Validity,
} from './signer.js';
export {
  type AttestationPolicy,
  AttestationVerifier,
  type RootCertificate,
  type VerifiedAttestationDocument,
  type VerifierOptions,
  type VerifierStats,
  type VerifyOptions,
  verifyDocument,
} from './verify.js';
