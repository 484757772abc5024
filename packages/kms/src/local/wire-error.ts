// KMS-shaped errors sent over the wire: `{"__type": "<Name>Exception", "message": "..."}`.
// These are answers to clients, not exceptions of this package's API (those are KmsError).

export type KmsWireErrorType =
  | 'AccessDeniedException'
  | 'DisabledException'
  | 'IncorrectKeyException'
  | 'InvalidCiphertextException'
  | 'InvalidKeyUsageException'
  | 'InvalidSignatureException'
  | 'KMSInternalException'
  | 'KMSInvalidStateException'
  | 'MalformedPolicyDocumentException'
  | 'MissingAuthenticationTokenException'
  | 'NotFoundException'
  | 'SerializationException'
  | 'UnknownOperationException'
  | 'UnrecognizedClientException'
  | 'UnsupportedOperationException'
  | 'ValidationException';

const STATUS: Record<KmsWireErrorType, number> = {
  AccessDeniedException: 400,
  DisabledException: 400,
  IncorrectKeyException: 400,
  InvalidCiphertextException: 400,
  InvalidKeyUsageException: 400,
  InvalidSignatureException: 400,
  KMSInternalException: 500,
  KMSInvalidStateException: 400,
  MalformedPolicyDocumentException: 400,
  MissingAuthenticationTokenException: 400,
  NotFoundException: 400,
  SerializationException: 400,
  UnknownOperationException: 400,
  UnrecognizedClientException: 400,
  UnsupportedOperationException: 400,
  ValidationException: 400,
};

/** An error answered to the client in the KMS JSON 1.1 shape. */
export class KmsWireError extends Error {
  readonly type: KmsWireErrorType;
  readonly status: number;

  constructor(type: KmsWireErrorType, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KmsWireError';
    this.type = type;
    this.status = STATUS[type];
  }

  toJSON(): { __type: string; message: string } {
    return { __type: this.type, message: this.message };
  }
}

export function wire(type: KmsWireErrorType, message: string, cause?: unknown): KmsWireError {
  return new KmsWireError(type, message, cause === undefined ? undefined : { cause });
}
