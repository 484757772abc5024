// Errors of the local KMS API (not wire answers): the package's one class, KmsError.
import { KmsError, type KmsErrorCode } from '../errors.js';

export function localError(
  code: KmsErrorCode | (string & {}),
  message: string,
  cause?: unknown,
  extra: { syscall?: string | undefined; address?: string | undefined } = {},
): KmsError {
  return new KmsError(code, message, {
    ...(cause !== undefined ? { cause } : {}),
    ...(extra.syscall !== undefined ? { syscall: extra.syscall } : {}),
    ...(extra.address !== undefined ? { address: extra.address } : {}),
  });
}
