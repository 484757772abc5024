// PCR arithmetic of an EIF: PCRn = SHA-384(48 zero bytes || SHA-384(content)), the image-format
// crate's "without cache" hasher followed by one TPM-style extend of a zero register.
import { createHash, type Hash } from 'node:crypto';

export const PCR_SIZE = 48;
const ZERO = Buffer.alloc(PCR_SIZE);

/** What `nitro-cli` prints as the hash algorithm (sha2's Debug output for Sha384). */
export const HASH_ALGORITHM = 'Sha384 { ... }';

/** One extend of a zero register with a content digest. */
export function extendZero(contentDigest: Uint8Array): Buffer {
  return createHash('sha384').update(ZERO).update(contentDigest).digest();
}

/** The PCR value of a byte string measured as one EIF part. */
export function pcrOfBytes(content: Uint8Array): Buffer {
  return extendZero(createHash('sha384').update(content).digest());
}

/** Streaming measurement of a content, e.g. `new PcrHasher().update(a).update(b).pcr()`. */
export class PcrHasher {
  private readonly hash: Hash;
  constructor(from?: Hash) {
    this.hash = from ?? createHash('sha384');
  }
  update(chunk: Uint8Array): this {
    this.hash.update(chunk);
    return this;
  }
  /** A copy of the state so far (for a PCR whose content is a prefix of another's). */
  copy(): PcrHasher {
    return new PcrHasher(this.hash.copy());
  }
  /** Finishes the hash: the PCR value. The hasher cannot be used afterwards. */
  pcr(): Buffer {
    return extendZero(this.hash.digest());
  }
}

/**
 * Measurements exactly as `nitro-cli build-enclave` / `describe-eif` print them under
 * "Measurements": lower-case hex, PCR8 only for signed images.
 */
export interface Measurements {
  HashAlgorithm: string;
  /** Kernel, cmdline and every ramdisk. */
  PCR0: string;
  /** Kernel, cmdline and the first (bootstrap) ramdisk. */
  PCR1: string;
  /** The ramdisks after the first (the application). */
  PCR2: string;
  /** The signing certificate (DER), for signed images. */
  PCR8?: string;
}

export function measurementsOf(
  pcr0: Buffer,
  pcr1: Buffer,
  pcr2: Buffer,
  pcr8?: Buffer,
): Measurements {
  const m: Measurements = {
    HashAlgorithm: HASH_ALGORITHM,
    PCR0: pcr0.toString('hex'),
    PCR1: pcr1.toString('hex'),
    PCR2: pcr2.toString('hex'),
  };
  if (pcr8) m.PCR8 = pcr8.toString('hex');
  return m;
}

/**
 * Feeds section data into the three PCR hashers the way the image-format crate does: kernel and
 * cmdline into PCR0 and PCR1, the first ramdisk into PCR0 and PCR1, later ramdisks into PCR0 and
 * PCR2. PCR1 shares PCR0's prefix, so it is taken as a copy of PCR0's state after ramdisk 0.
 */
export class ImageMeasurer {
  private readonly image = new PcrHasher();
  private readonly app = new PcrHasher();
  private bootstrap: PcrHasher | undefined;
  private ramdisks = 0;
  private inRamdisk = false;

  kernelOrCmdline(chunk: Uint8Array): void {
    this.image.update(chunk);
  }
  beginRamdisk(): void {
    this.inRamdisk = true;
  }
  ramdisk(chunk: Uint8Array): void {
    this.image.update(chunk);
    if (this.ramdisks > 0) this.app.update(chunk);
  }
  endRamdisk(): void {
    if (!this.inRamdisk) return;
    if (this.ramdisks === 0) this.bootstrap = this.image.copy();
    this.ramdisks++;
    this.inRamdisk = false;
  }
  /** PCR0/1/2 (and PCR8 from the certificate DER when given). */
  finish(certificateDer?: Uint8Array): { pcr0: Buffer; pcr1: Buffer; pcr2: Buffer; pcr8?: Buffer } {
    const boot = this.bootstrap ?? this.image.copy();
    const out: { pcr0: Buffer; pcr1: Buffer; pcr2: Buffer; pcr8?: Buffer } = {
      pcr0: this.image.pcr(),
      pcr1: boot.pcr(),
      pcr2: this.app.pcr(),
    };
    if (certificateDer) out.pcr8 = pcrOfBytes(certificateDer);
    return out;
  }
}
