export type {
  BlobOptions,
  BuildEifOptions,
  BuildEifResult,
  BuildProgress,
  EifLogger,
  ResolvedBlobs,
} from './build.js';
export { BUILD_TOOL, BUILD_TOOL_VERSION, buildEif, kernelIdentity, resolveBlobs } from './build.js';

export { trimCmdline } from './cmdline.js';
export type { EifErrorCode, EifErrorDetails } from './errors.js';
export { EifError, isEifError } from './errors.js';
export type { SigningCertificateInfo } from './format/certificate.js';
export type { EifComparison, SectionDifference } from './format/compare.js';
export { compareEifs, compareImages, explainComparison } from './format/compare.js';
export type { SectionKind } from './format/constants.js';
export {
  EIF_HEADER_SIZE,
  EIF_VERSION,
  SECTION_HEADER_SIZE,
  SectionType,
} from './format/constants.js';
export type {
  DescribeEifOptions,
  DescribeMetadata,
  EifDescription,
  PcrOptions,
  SignEifOptions,
  VerifyEifOptions,
  VerifyEifResult,
} from './format/describe.js';
export { describeEif, describeImage, pcr, signEif, verifyEif } from './format/describe.js';
export type { EifBuildMetadata, EifMetadata, JsonValue } from './format/metadata.js';
export type { Measurements } from './format/pcr.js';
export { HASH_ALGORITHM, PcrHasher, pcrOfBytes } from './format/pcr.js';
export type { EifImage, EifReadSection, ReadEifOptions } from './format/reader.js';
export { readEif } from './format/reader.js';
export type {
  EifSigningKey,
  ParsedSignature,
  SignatureCheck,
  SigningInput,
} from './format/signature.js';
export { loadSigningKey } from './format/signature.js';
export type { FileRange, SectionSource } from './format/source.js';
export type {
  EifArch,
  EifSectionInfo,
  Pcrs,
  WriteEifOptions,
  WriteEifResult,
  WriteProgress,
} from './format/writer.js';
export { writeEif } from './format/writer.js';
export type { EifKeyPolicy, EifKeyPolicyOptions } from './policy.js';
export { eifKeyPolicy } from './policy.js';
export type { ImageConfig, Rootfs, RootfsSource } from './ramdisk/index.js';
export {
  bootstrapRamdisk,
  commandAndEnv,
  customerRamdisk,
  openRootfs,
} from './ramdisk/index.js';
