export {
  decryptCiphertextForRecipient,
  type EncryptForRecipientOptions,
  encryptForRecipient,
  type RecipientPrivateKey,
  type RecipientPublicKey,
  recipientKeyIdentifier,
} from './cms.js';
export { KMS_ERROR_CODES, KmsError, type KmsErrorCode, type KmsErrorOptions } from './errors.js';
