// describe-eif / pcr / sign-eif / verify, shaped like nitro-cli's JSON so scripts keep working.
import { createHash, X509Certificate } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { EifError } from '../errors.js';
import { certificateInfo, type SigningCertificateInfo } from './certificate.js';
import type { JsonValue } from './metadata.js';
import { extendZero, type Measurements } from './pcr.js';
import { type EifImage, type ReadEifOptions, readEif } from './reader.js';
import { checkSignature, type EifSigningKey, type SigningInput } from './signature.js';
import { type WriteEifResult, writeEif } from './writer.js';

/** `nitro-cli describe-eif`'s "Metadata" object (CustomMetadata's keys are flattened into it). */
export interface DescribeMetadata {
  BuildTime: string;
  BuildTool: string;
  BuildToolVersion: string;
  OperatingSystem: string;
  KernelVersion: string;
  DockerInfo: JsonValue;
  [custom: string]: JsonValue;
}

/** The JSON `nitro-cli describe-eif` prints, key for key. */
export interface EifDescription {
  EifVersion: number;
  Measurements: Measurements;
  IsSigned: boolean;
  SigningCertificate?: SigningCertificateInfo;
  CheckCRC: boolean;
  SignatureCheck?: boolean;
  ImageName?: string;
  ImageVersion?: string;
  Metadata?: DescribeMetadata;
}

export interface DescribeEifOptions extends Pick<ReadEifOptions, 'signal'> {
  /** Report a CRC mismatch as `CheckCRC: false` instead of throwing ERR_EIF_BAD_CRC. */
  allowBadCrc?: boolean;
}

/** The describe-eif view of an image already read with {@link readEif}. */
export function describeImage(image: EifImage): EifDescription {
  const d: EifDescription = {
    EifVersion: image.version,
    Measurements: image.measurements,
    IsSigned: false,
    CheckCRC: image.crc.ok,
  };
  if (image.signature) {
    d.IsSigned = true;
    d.SigningCertificate = certificateInfo(image.signature.certificateDer);
    d.SignatureCheck = checkSignature(
      image.signature,
      Buffer.from(image.measurements.PCR0, 'hex'),
    ).ok;
  }
  // Key order as nitro-cli's struct: EifVersion, Measurements, IsSigned, SigningCertificate,
  // CheckCRC, SignatureCheck, ImageName, ImageVersion, Metadata.
  const ordered: EifDescription = {
    EifVersion: d.EifVersion,
    Measurements: d.Measurements,
    IsSigned: d.IsSigned,
    ...(d.SigningCertificate ? { SigningCertificate: d.SigningCertificate } : {}),
    CheckCRC: d.CheckCRC,
    ...(d.SignatureCheck !== undefined ? { SignatureCheck: d.SignatureCheck } : {}),
  };
  const m = image.metadata;
  if (m) {
    ordered.ImageName = m.ImageName;
    ordered.ImageVersion = m.ImageVersion;
    const meta: DescribeMetadata = {
      BuildTime: m.BuildMetadata.BuildTime,
      BuildTool: m.BuildMetadata.BuildTool,
      BuildToolVersion: m.BuildMetadata.BuildToolVersion,
      OperatingSystem: m.BuildMetadata.OperatingSystem,
      KernelVersion: m.BuildMetadata.KernelVersion,
      DockerInfo: m.DockerInfo,
    };
    const custom = m.CustomMetadata;
    if (custom !== null && typeof custom === 'object' && !Array.isArray(custom)) {
      for (const [k, v] of Object.entries(custom)) meta[k] = v;
    }
    ordered.Metadata = meta;
  }
  return ordered;
}

/** Reads and validates an EIF and returns what `nitro-cli describe-eif` prints. */
export async function describeEif(
  path: string,
  options: DescribeEifOptions = {},
): Promise<EifDescription> {
  const image = await readEif(path, {
    verifyCrc: !options.allowBadCrc,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return describeImage(image);
}

export interface PcrOptions {
  /** Treat the file as a PEM signing certificate and return PCR8 (like `--signing-certificate`). */
  signingCertificate?: boolean;
}

/**
 * `nitro-cli pcr --input FILE` ({"PCR": hex} of the file's bytes) or, with `signingCertificate`,
 * `nitro-cli pcr --signing-certificate FILE` ({"PCR8": hex} of the certificate's DER).
 */
export async function pcr(
  path: string,
  options: PcrOptions = {},
): Promise<{ PCR?: string; PCR8?: string }> {
  const h = createHash('sha384');
  try {
    for await (const c of createReadStream(path, { highWaterMark: 1024 * 1024 }))
      h.update(c as Buffer);
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new EifError(
      'ERR_EIF_READ',
      `${path}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}.`,
      { path, cause: err },
    );
  }
  if (!options.signingCertificate) return { PCR: extendZero(h.digest()).toString('hex') };
  const { readFile } = await import('node:fs/promises');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(await readFile(path));
  } catch (err) {
    throw new EifError('ERR_EIF_SIGNING_KEY', `${path}: not a PEM certificate.`, {
      path,
      cause: err,
    });
  }
  return { PCR8: extendZero(createHash('sha384').update(cert.raw).digest()).toString('hex') };
}

export interface SignEifOptions {
  /** Where to write the signed image. Default: replace `input` (atomically). */
  output?: string;
  signing: SigningInput | EifSigningKey;
  signal?: AbortSignal;
}

/**
 * Signs an existing EIF (adding or replacing its signature section) like `nitro-cli sign-eif`:
 * the sections are copied as they are and a new signature over PCR0 is appended.
 */
export async function signEif(input: string, options: SignEifOptions): Promise<WriteEifResult> {
  const image = await readEif(input, options.signal ? { signal: options.signal } : {});
  const range = (i: number) => ({
    path: input,
    offset: image.sections[i]!.dataOffset,
    length: image.sections[i]!.size,
  });
  const kernel = image.sections.find((s) => s.kind === 'kernel')!;
  const ramdisks = image.sections.filter((s) => s.kind === 'ramdisk').map((s) => range(s.index));
  return writeEif({
    output: options.output ?? input,
    kernel: range(kernel.index),
    cmdline: Buffer.from(image.cmdline, 'utf8'),
    metadata: image.metadataBytes ?? Buffer.alloc(0),
    ramdisks,
    signing: options.signing,
    arch: image.arch,
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

export interface VerifyEifOptions {
  /** Pin the signer: the certificate (PEM or DER) the image must be signed with. */
  certificate?: string | Uint8Array;
  /** Pin PCR8 (hex) instead of a certificate. */
  pcr8?: string;
  /** Check the certificate's validity period at this time (default now; `false` to skip). */
  at?: Date | false;
  signal?: AbortSignal;
}

export interface VerifyEifResult {
  measurements: Measurements;
  certificate: SigningCertificateInfo;
}

/**
 * Verifies a signed EIF: structure and CRC, the COSE signature with the embedded certificate, that
 * it signs this image's PCR0, the certificate's validity at `at`, and optionally the signer.
 * Throws ERR_EIF_NOT_SIGNED or ERR_EIF_SIGNATURE_INVALID.
 */
export async function verifyEif(
  path: string,
  options: VerifyEifOptions = {},
): Promise<VerifyEifResult> {
  const image = await readEif(path, options.signal ? { signal: options.signal } : {});
  if (!image.signature) {
    throw new EifError(
      'ERR_EIF_NOT_SIGNED',
      `${path}: the image is not signed (no signature section).`,
      {
        path,
      },
    );
  }
  const at = options.at === false ? undefined : (options.at ?? new Date());
  const check = checkSignature(image.signature, Buffer.from(image.measurements.PCR0, 'hex'), at);
  if (!check.ok) {
    throw new EifError(
      'ERR_EIF_SIGNATURE_INVALID',
      `${path}: signature check failed: ${check.reason}.`,
      {
        path,
        field: 'signature',
      },
    );
  }
  if (options.certificate !== undefined) {
    let want: Buffer;
    try {
      want = Buffer.from(
        new X509Certificate(Buffer.from(options.certificate as string | Uint8Array)).raw,
      );
    } catch (err) {
      throw new EifError('ERR_EIF_INVALID_ARGUMENT', 'certificate: not a PEM or DER certificate.', {
        field: 'certificate',
        cause: err,
      });
    }
    if (!want.equals(image.signature.certificateDer)) {
      throw new EifError(
        'ERR_EIF_SIGNATURE_INVALID',
        `${path}: signed with a different certificate (PCR8 ${image.measurements.PCR8}) than the one required.`,
        { path, field: 'signature' },
      );
    }
  }
  if (options.pcr8 !== undefined && options.pcr8.toLowerCase() !== image.measurements.PCR8) {
    throw new EifError(
      'ERR_EIF_SIGNATURE_INVALID',
      `${path}: PCR8 is ${image.measurements.PCR8}, not the required ${options.pcr8}.`,
      { path, field: 'PCR8' },
    );
  }
  return {
    measurements: image.measurements,
    certificate: certificateInfo(image.signature.certificateDer),
  };
}
