// The KMS key policy that pins an image's predicted PCRs, via @enclave-extras/kms's
// recipientAttestationPolicy (loaded on demand: it pulls in the AWS SDK).
import { EifError } from './errors.js';
import type { Measurements } from './format/pcr.js';

export interface EifKeyPolicyOptions {
  /** 12-digit AWS account id of the key. */
  accountId: string;
  /** ARN allowed the attested actions (the parent instance's role). Default: the account root. */
  principal?: string;
  /** ARN of the key administrators. Default: the account root. */
  adminPrincipal?: string;
  /**
   * PCRs to pin besides PCR0 (which is always pinned, as ImageSha384). Any of 1, 2, 8; 8 only for
   * signed images. Default none.
   */
  pcrs?: (1 | 2 | 8)[];
  /** Attested actions (default Decrypt, GenerateDataKey, GenerateDataKeyPair, GenerateRandom). */
  actions?: (
    | 'kms:Decrypt'
    | 'kms:GenerateDataKey'
    | 'kms:GenerateDataKeyPair'
    | 'kms:GenerateRandom'
    | 'kms:DeriveSharedSecret'
  )[];
}

/** A key policy document (JSON.stringify it for CreateKey / PutKeyPolicy). */
export type EifKeyPolicy = Awaited<
  ReturnType<typeof import('@enclave-extras/kms')['recipientAttestationPolicy']>
>;

/** The key policy releasing a KMS key only to enclaves running this image. */
export async function eifKeyPolicy(
  measurements: Measurements,
  options: EifKeyPolicyOptions,
): Promise<EifKeyPolicy> {
  const pcrs: Record<number, string> = {};
  for (const i of options.pcrs ?? []) {
    const v =
      i === 1
        ? measurements.PCR1
        : i === 2
          ? measurements.PCR2
          : i === 8
            ? measurements.PCR8
            : undefined;
    if (v === undefined) {
      throw new EifError(
        'ERR_EIF_INVALID_ARGUMENT',
        i === 8
          ? 'policy: PCR8 exists only for signed images; sign the image or drop PCR8.'
          : `policy: PCR${i} cannot be pinned (use 1, 2 or 8).`,
        { field: 'pcrs' },
      );
    }
    pcrs[i] = v;
  }
  const kms = await import('@enclave-extras/kms');
  try {
    return kms.recipientAttestationPolicy({
      accountId: options.accountId,
      imageSha384: measurements.PCR0,
      pcrs,
      ...(options.principal ? { principal: options.principal } : {}),
      ...(options.adminPrincipal ? { adminPrincipal: options.adminPrincipal } : {}),
      ...(options.actions ? { actions: options.actions } : {}),
    });
  } catch (err) {
    throw new EifError('ERR_EIF_INVALID_ARGUMENT', `policy: ${(err as Error).message}`, {
      field: 'policy',
      cause: err,
    });
  }
}
