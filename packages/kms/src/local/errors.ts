// TEMP until KmsError lands in ../errors.ts
export class KmsErrorTemp extends Error {
  readonly code: string;
  syscall?: string;
  address?: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
export function localError(
  code: string,
  message: string,
  cause?: unknown,
  extra?: { syscall?: string; address?: string },
): KmsErrorTemp {
  const e = new KmsErrorTemp(code, message, cause === undefined ? undefined : { cause });
  if (extra?.syscall) e.syscall = extra.syscall;
  if (extra?.address) e.address = extra.address;
  return e;
}
