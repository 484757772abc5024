import { createHash } from 'node:crypto';
import { pemToDer } from './encoding.js';
import { AttestationError } from './errors.js';

/**
 * The AWS Nitro Enclaves root certificate (G1), public, as published by AWS
 * (https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip).
 * Valid 2019-10-28 to 2049-10-28, P-384.
 */
export const AWS_NITRO_ROOT_PEM = `-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
`;

/** SHA-256 of the DER of the AWS Nitro Enclaves root (lowercase hex). */
export const AWS_NITRO_ROOT_SHA256 =
  '641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b';

/** The root's DER, checked against the pinned fingerprint when the module loads. */
export const AWS_NITRO_ROOT_DER: Uint8Array = (() => {
  const der = pemToDer(AWS_NITRO_ROOT_PEM);
  const got = createHash('sha256').update(der).digest('hex');
  if (got !== AWS_NITRO_ROOT_SHA256) {
    throw new AttestationError(
      'ERR_ATTESTATION_UNTRUSTED_ROOT',
      `embedded AWS Nitro root has SHA-256 ${got}, expected ${AWS_NITRO_ROOT_SHA256}; the package is corrupted, reinstall it`,
      { field: 'AWS_NITRO_ROOT_PEM' },
    );
  }
  return der;
})();
