export {
  ATTESTED_OPERATIONS,
  type AttestationOptions,
  AttestationSession,
  type AttestationSource,
  AttestedKmsClient,
  type AttestedKmsClientConfig,
  type KmsLogger,
  type RecipientMaterial,
  withAttestation,
} from './attested.js';
export {
  decryptCiphertextForRecipient,
  type EncryptForRecipientOptions,
  encryptForRecipient,
  type RecipientPrivateKey,
  type RecipientPublicKey,
  recipientKeyIdentifier,
} from './cms.js';
export {
  type CredentialsRelay,
  type CredentialsRelayOptions,
  createCredentialsRelay,
  type FromParentInstanceOptions,
  fromParentInstance,
  type RelayedCredentials,
} from './credentials.js';
export {
  createDialingRequestHandler,
  type DialingRequestHandlerOptions,
  type DialTarget,
  type KmsDialer,
} from './dial.js';
export { KMS_ERROR_CODES, KmsError, type KmsErrorCode, type KmsErrorOptions } from './errors.js';
export {
  ATTESTED_ACTIONS,
  type AttestedAction,
  type KeyPolicyDocument,
  type KeyPolicyStatement,
  type PcrValue,
  type RecipientAttestationPolicyOptions,
  recipientAttestationPolicy,
} from './policy.js';
export {
  type PcrSource,
  SEALED_CONTEXT_KEY,
  type SealedEnvelope,
  type SealOptions,
  seal,
  type UnsealOptions,
  unseal,
} from './sealed.js';
