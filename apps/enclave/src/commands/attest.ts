// ee-enclave attest create|verify: attestation documents from the NSM (device, simulator or
// simulator daemon) and their verification with @enclave-extras/attestation.
import { readFileSync, writeFileSync } from 'node:fs';
import {
  AttestationError,
  type AttestationPolicy,
  decodeDocumentInput,
  parseDocument,
  toHex,
  type VerifiedAttestationDocument,
  verifyDocument,
} from '@enclave-extras/attestation';
import type { Command } from 'commander';
import { collect, nsmOption, openNsm, parseBytes, usage, writeOut } from './nsm.js';

interface CreateFlags {
  userData?: string;
  nonce?: string;
  publicKey?: string;
  out?: string;
  nsm: string;
  json: boolean;
}

interface VerifyFlags {
  pcr: string[];
  at: string;
  livePcrs: boolean;
  root: string[];
  allowDebug: boolean;
  maxAge?: string;
  nonce?: string;
  userData?: string;
  publicKey?: string;
  nsm: string;
  json: boolean;
}

function readDocument(cmd: Command, file: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = file === '-' ? readFileSync(0) : readFileSync(file);
  } catch (err) {
    return usage(cmd, `attest verify: cannot read ${file}: ${(err as Error).message}`);
  }
  // A CBOR COSE_Sign1 starts with 0x84 (array of 4) or 0xd2 (tag 18); otherwise it is text.
  if (raw[0] === 0x84 || raw[0] === 0xd2) return new Uint8Array(raw);
  try {
    return decodeDocumentInput(raw.toString('utf8').trim());
  } catch (err) {
    return usage(
      cmd,
      `attest verify: ${file} is neither CBOR nor base64/hex text: ${(err as Error).message}`,
    );
  }
}

function parsePcrFlags(cmd: Command, flags: string[]): Map<number, string> {
  const pcrs = new Map<number, string>();
  for (const f of flags) {
    const m = /^(\d{1,2})=([0-9a-fA-F]+)$/.exec(f);
    if (!m || Number(m[1]) > 31 || m[2]!.length % 2 !== 0) {
      usage(
        cmd,
        `attest verify: --pcr ${f} must be N=HEX with N in 0..31 and an even number of hex digits`,
      );
    }
    pcrs.set(Number(m![1]), m![2]!.toLowerCase());
  }
  return pcrs;
}

function summary(doc: VerifiedAttestationDocument): Record<string, unknown> {
  return {
    moduleId: doc.moduleId,
    timestamp: doc.date.toISOString(),
    digest: doc.digest,
    pcrs: Object.fromEntries([...doc.pcrs].map(([i, v]) => [i, toHex(v)])),
    publicKey: doc.publicKey ? toHex(doc.publicKey) : null,
    userData: doc.userData ? toHex(doc.userData) : null,
    nonce: doc.nonce ? toHex(doc.nonce) : null,
    verifiedAt: doc.verifiedAt.toISOString(),
    rootSha256: doc.rootSha256,
    debug: doc.debug,
  };
}

export function register(program: Command): void {
  const attest = program
    .command('attest')
    .description('Create and verify Nitro attestation documents.');

  attest
    .command('create')
    .description(
      'Ask the NSM for an attestation document (raw CBOR to --out, else base64 on stdout).',
    )
    .option('--user-data <bytes>', 'user_data (hex:, base64:, file: prefix or UTF-8 text)')
    .option('--nonce <bytes>', 'nonce (same forms)')
    .option('--public-key <bytes>', 'public_key, e.g. file:pub.der (same forms)')
    .option('--out <file>', 'write the raw CBOR document to this file')
    .addOption(nsmOption())
    .option('--json', 'print a JSON summary', false)
    .action(async (flags: CreateFlags, cmd: Command) => {
      const fields = {
        ...(flags.userData !== undefined
          ? { userData: parseBytes(cmd, '--user-data', flags.userData) }
          : {}),
        ...(flags.nonce !== undefined ? { nonce: parseBytes(cmd, '--nonce', flags.nonce) } : {}),
        ...(flags.publicKey !== undefined
          ? { publicKey: parseBytes(cmd, '--public-key', flags.publicKey) }
          : {}),
      };
      const nsm = await openNsm(cmd, flags.nsm);
      let doc: Uint8Array;
      try {
        doc = await nsm.getAttestationDocument(fields);
      } finally {
        await nsm.close();
      }
      if (flags.out) writeFileSync(flags.out, doc);
      if (flags.json) {
        writeOut(
          {
            bytes: doc.length,
            ...(flags.out ? { out: flags.out } : { document: Buffer.from(doc).toString('base64') }),
          },
          true,
        );
      } else if (!flags.out) {
        process.stdout.write(`${Buffer.from(doc).toString('base64')}\n`);
      } else {
        process.stdout.write(`wrote ${doc.length} bytes to ${flags.out}\n`);
      }
    });

  attest
    .command('verify <file>')
    .description(
      'Verify a document (raw CBOR, base64 or hex; - for stdin): COSE signature, certificate chain to the root(s), then the expectations given.',
    )
    .option('--pcr <N=HEX>', 'expected PCR value, repeatable', collect, [])
    .option('--at <when>', "validity time: 'now', 'document' or an ISO date", 'now')
    .option('--live-pcrs', 'expect the PCRs of this enclave (read from --nsm)', false)
    .option(
      '--root <pem>',
      'trusted root certificate PEM file, repeatable (default: the AWS Nitro root)',
      collect,
      [],
    )
    .option('--allow-debug', 'accept debug-mode enclaves (PCR0-2 zero)', false)
    .option('--max-age <seconds>', 'refuse documents older than this')
    .option('--nonce <bytes>', 'expected nonce (hex:, base64:, file: or text)')
    .option('--user-data <bytes>', 'expected user_data')
    .option('--public-key <bytes>', 'expected public_key')
    .addOption(nsmOption())
    .option('--json', 'print the verified document as JSON', false)
    .addHelpText('after', '\nExit codes: 0 verified, 1 refused (the code says why), 2 usage error.')
    .action(async (file: string, flags: VerifyFlags, cmd: Command) => {
      const bytes = readDocument(cmd, file);
      const pcrs = parsePcrFlags(cmd, flags.pcr);
      let at: 'now' | 'document' | Date;
      if (flags.at === 'now' || flags.at === 'document') at = flags.at;
      else {
        at = new Date(flags.at);
        if (Number.isNaN(at.getTime()))
          usage(cmd, `attest verify: --at ${flags.at} must be now, document or an ISO date`);
      }
      const roots = flags.root.map((f) => {
        try {
          return readFileSync(f, 'utf8');
        } catch (err) {
          return usage(cmd, `attest verify: --root ${f}: ${(err as Error).message}`);
        }
      });
      const policy: AttestationPolicy = {
        pcrs,
        allowDebug: flags.allowDebug,
        ...(flags.maxAge !== undefined ? { maxAgeMs: Number(flags.maxAge) * 1000 } : {}),
        ...(flags.nonce !== undefined ? { nonce: parseBytes(cmd, '--nonce', flags.nonce) } : {}),
        ...(flags.userData !== undefined
          ? { userData: parseBytes(cmd, '--user-data', flags.userData) }
          : {}),
        ...(flags.publicKey !== undefined
          ? { publicKey: parseBytes(cmd, '--public-key', flags.publicKey) }
          : {}),
      };
      if (flags.maxAge !== undefined && !(Number(flags.maxAge) > 0)) {
        usage(cmd, `attest verify: --max-age ${flags.maxAge} must be a positive number of seconds`);
      }
      // every flag is checked above: only now is the NSM opened (policy.pcrs is this same Map)
      if (flags.livePcrs) {
        const nsm = await openNsm(cmd, flags.nsm);
        try {
          for (const i of pcrIndexes(bytes)) {
            if (pcrs.has(i)) continue;
            const live = await nsm.describePcr(i);
            pcrs.set(i, toHex(live.data));
          }
        } finally {
          await nsm.close();
        }
      }
      let verified: VerifiedAttestationDocument;
      try {
        verified = verifyDocument(bytes, { at, policy, ...(roots.length > 0 ? { roots } : {}) });
      } catch (err) {
        if (err instanceof AttestationError) {
          if (flags.json)
            writeOut(
              { verified: false, code: err.code, field: err.field ?? null, message: err.message },
              true,
            );
          else
            process.stderr.write(`ee-enclave attest verify: REFUSED ${err.code}: ${err.message}\n`);
          process.exitCode = 1;
          return;
        }
        throw err;
      }
      if (flags.json) writeOut({ verified: true, ...summary(verified) }, true);
      else {
        const s = summary(verified);
        process.stdout.write(
          `verified: module ${s.moduleId}, timestamp ${s.timestamp}, root sha256 ${s.rootSha256}${verified.debug ? ' (DEBUG enclave)' : ''}\n` +
            [...verified.pcrs]
              .filter(([, v]) => v.some((b) => b !== 0))
              .map(([i, v]) => `  PCR${i} ${toHex(v)}\n`)
              .join(''),
        );
      }
    });
}

/** The PCR indexes a document lists (parsed, not verified: only to know which to read live). */
function pcrIndexes(bytes: Uint8Array): number[] {
  try {
    return [...parseDocument(bytes).pcrs.keys()];
  } catch {
    return []; // verifyDocument below reports the malformed document with its code
  }
}
