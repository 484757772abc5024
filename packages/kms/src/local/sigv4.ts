// SigV4 verification of a received request: the signature is recomputed with
// @smithy/signature-v4 (the same signer the AWS SDK uses) over exactly the headers the
// client says it signed, then compared in constant time.
import { createHash, createHmac, type Hash, type Hmac, timingSafeEqual } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Checksum, HttpRequest, SourceData } from '@smithy/types';
import { wire } from './wire-error.js';

/** One accepted credential pair; `principal` is the ARN policies see (aws:PrincipalArn). */
export interface LocalKmsCredential {
  accessKeyId: string;
  secretAccessKey: string;
  /** When set, requests must carry exactly this X-Amz-Security-Token. */
  sessionToken?: string;
  /** Principal ARN used for key-policy evaluation; default `arn:aws:iam::<account>:user/<accessKeyId>`. */
  principal?: string;
}

function toBuffer(data: SourceData): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(data);
}

/** SHA-256 / HMAC-SHA-256 over node:crypto, in the shape @smithy/signature-v4 expects. */
class NodeSha256 implements Checksum {
  private readonly secret: Buffer | undefined;
  private h: Hash | Hmac;

  constructor(secret?: SourceData) {
    this.secret = secret === undefined ? undefined : toBuffer(secret);
    this.h = this.fresh();
  }

  private fresh(): Hash | Hmac {
    return this.secret ? createHmac('sha256', this.secret) : createHash('sha256');
  }

  update(data: Uint8Array): void {
    this.h.update(data);
  }

  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.h.digest());
  }

  reset(): void {
    this.h = this.fresh();
  }
}

export interface ReceivedRequest {
  method: string;
  /** Path with query string as received (`/` for KMS). */
  url: string;
  /** Lower-cased header names (node's IncomingMessage.headers). */
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface VerifyOptions {
  region: string;
  credentials: ReadonlyMap<string, LocalKmsCredential>;
  maxSkewMs: number;
  now: Date;
}

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;_.-]+),\s*Signature=([0-9a-f]{64})$/;

/** Headers every KMS request must sign (lower-case name, name as AWS spells it in messages). */
const REQUIRED_SIGNED: ReadonlyArray<[string, string]> = [
  ['host', 'Host'],
  ['x-amz-date', 'X-Amz-Date'],
  ['x-amz-target', 'X-Amz-Target'],
];

function header(req: ReceivedRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

function parseAmzDate(s: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return undefined;
  const d = new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/**
 * Verifies the request's SigV4 signature; returns the matching credential or throws a
 * KMS-shaped error (MissingAuthenticationToken, UnrecognizedClient, InvalidSignature).
 */
export async function verifySigV4(
  req: ReceivedRequest,
  opts: VerifyOptions,
): Promise<LocalKmsCredential> {
  const auth = header(req, 'authorization');
  if (!auth) {
    throw wire(
      'MissingAuthenticationTokenException',
      'Missing Authentication Token: the request has no Authorization header; sign it with SigV4 (service "kms").',
    );
  }
  const m = AUTH_RE.exec(auth.trim());
  if (!m) {
    throw wire(
      'InvalidSignatureException',
      'Authorization header is not a SigV4 AWS4-HMAC-SHA256 header with Credential, SignedHeaders and Signature.',
    );
  }
  const [, accessKeyId, scopeDate, scopeRegion, scopeService, signedHeaderList, signature] =
    m as unknown as [string, string, string, string, string, string, string];
  const cred = opts.credentials.get(accessKeyId);
  if (!cred) {
    throw wire(
      'UnrecognizedClientException',
      `The security token included in the request is invalid: access key id ${accessKeyId} is not configured on this local KMS.`,
    );
  }
  if (scopeService !== 'kms') {
    throw wire(
      'InvalidSignatureException',
      `Credential should be scoped to correct service: 'kms' (got '${scopeService}').`,
    );
  }
  if (scopeRegion !== opts.region) {
    throw wire(
      'InvalidSignatureException',
      `Credential should be scoped to a valid region: this local KMS serves '${opts.region}' (got '${scopeRegion}').`,
    );
  }
  const amzDateRaw = header(req, 'x-amz-date');
  const amzDate = amzDateRaw ? parseAmzDate(amzDateRaw) : undefined;
  if (!amzDateRaw || !amzDate) {
    throw wire(
      'InvalidSignatureException',
      'X-Amz-Date header is missing or not in YYYYMMDDTHHMMSSZ form.',
    );
  }
  if (amzDateRaw.slice(0, 8) !== scopeDate) {
    throw wire(
      'InvalidSignatureException',
      `Credential scope date ${scopeDate} does not match X-Amz-Date ${amzDateRaw}.`,
    );
  }
  const skew = amzDate.getTime() - opts.now.getTime();
  if (Math.abs(skew) > opts.maxSkewMs) {
    throw wire(
      'InvalidSignatureException',
      `Signature expired: ${amzDateRaw} is ${skew < 0 ? 'earlier' : 'later'} than the server time ${opts.now.toISOString()} by more than ${Math.round(opts.maxSkewMs / 60000)} minutes; fix the client clock.`,
    );
  }
  const signed = signedHeaderList.split(';');
  // X-Amz-Target names the operation: unsigned, a captured request (DescribeKey) could be
  // replayed as another one (ScheduleKeyDeletion) with the same signature.
  for (const [name, shown] of REQUIRED_SIGNED) {
    if (!signed.includes(name)) {
      throw wire(
        'InvalidSignatureException',
        `'${shown}' must be a 'SignedHeader' in the AWS Authorization (SignedHeaders=${signedHeaderList}); sign it with the request.`,
      );
    }
  }
  const token = header(req, 'x-amz-security-token');
  if (cred.sessionToken !== undefined && token !== cred.sessionToken) {
    throw wire(
      'UnrecognizedClientException',
      'The security token included in the request is invalid: X-Amz-Security-Token does not match the configured session token.',
    );
  }
  const payloadHash = header(req, 'x-amz-content-sha256');
  if (payloadHash !== undefined) {
    const actual = createHash('sha256').update(req.body).digest('hex');
    if (payloadHash !== actual && payloadHash !== 'UNSIGNED-PAYLOAD') {
      throw wire(
        'InvalidSignatureException',
        'X-Amz-Content-Sha256 does not match the request body.',
      );
    }
    if (payloadHash === 'UNSIGNED-PAYLOAD') {
      throw wire(
        'InvalidSignatureException',
        'KMS requests must sign their payload (UNSIGNED-PAYLOAD refused).',
      );
    }
  }

  const headers: Record<string, string> = {};
  for (const name of signed) {
    const v = header(req, name);
    if (v === undefined) {
      throw wire('InvalidSignatureException', `Signed header ${name} is missing from the request.`);
    }
    headers[name] = v;
  }
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const query: Record<string, string | string[]> = {};
  if (q >= 0) {
    for (const [k, v] of new URLSearchParams(req.url.slice(q + 1))) {
      const prev = query[k];
      query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
  }
  const hostHeader = headers.host ?? '';
  const request: HttpRequest = {
    method: req.method,
    protocol: 'http:',
    hostname: hostHeader.replace(/:\d+$/, ''),
    path,
    query,
    headers,
    body: req.body,
  };
  const signer = new SignatureV4({
    service: 'kms',
    region: opts.region,
    credentials: {
      accessKeyId: cred.accessKeyId,
      secretAccessKey: cred.secretAccessKey,
      ...(token !== undefined ? { sessionToken: token } : {}),
    },
    sha256: NodeSha256,
    applyChecksum: false,
  });
  const out = await signer.sign(request, {
    signingDate: amzDate,
    signableHeaders: new Set(signed),
  });
  const expected = /Signature=([0-9a-f]{64})/.exec(String(out.headers.authorization ?? ''))?.[1];
  const recomputedList = /SignedHeaders=([^,]+)/.exec(String(out.headers.authorization ?? ''))?.[1];
  if (
    !expected ||
    recomputedList !== signedHeaderList ||
    !timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(signature, 'hex'))
  ) {
    throw wire(
      'InvalidSignatureException',
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
    );
  }
  return cred;
}
