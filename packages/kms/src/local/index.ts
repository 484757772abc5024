// @enclave-extras/kms/local: a local attested KMS for development and tests.

export type { LocalKms, LocalKmsListenOptions, LocalKmsOptions } from './local-kms.js';
export { createLocalKms } from './local-kms.js';
export type { LocalKmsLogger } from './server.js';
export type { LocalKmsCredential } from './sigv4.js';
export type { KmsWireErrorType as LocalKmsErrorType } from './wire-error.js';
