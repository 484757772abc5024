// Verifies a real AWS Nitro attestation document at its own timestamp, then shows that the same
// document is rejected at today's time (its leaf certificate lived about three hours).
// Run from packages/attestation after `pnpm build`: node examples/verify-fixture.mjs [file.cbor]
import { readFileSync } from 'node:fs';
import { AttestationError, toHex, verifyDocument } from '@enclave-extras/attestation';

const file =
  process.argv[2] ??
  new URL('../../../../shared/fixtures/attestation/marlin-2024-08-07.cbor', import.meta.url);
const bytes = readFileSync(file);

const doc = verifyDocument(bytes, { at: 'document' });
console.log(`module ${doc.moduleId}, signed ${doc.date.toISOString()} (${doc.alg})`);
console.log(`PCR0 ${toHex(doc.pcrs.get(0))}`);
console.log(`chain ends in root ${doc.rootSha256}`);

// Pin PCR0 like a production policy would:
verifyDocument(bytes, { at: 'document', policy: { pcrs: { 0: toHex(doc.pcrs.get(0)) } } });

try {
  verifyDocument(bytes); // default: certificates must be valid now
} catch (err) {
  if (!(err instanceof AttestationError)) throw err;
  console.log(`at today's time: ${err.code} (${err.field})`);
}
