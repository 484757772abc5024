// A counter that survives enclave restarts: /data/boots.txt (plain, the parent can read it) and
// /vault/secret-log.txt (encrypted: only an enclave with this image's PCRs can read it).
import { open, readFile } from 'node:fs/promises';

async function appendSynced(path, line) {
  const fh = await open(path, 'a');
  try {
    await fh.appendFile(`${line}\n`);
    await fh.sync(); // survives a crash of the enclave from here on
  } finally {
    await fh.close();
  }
}

const boots = (await readFile('/data/boots.txt', 'utf8').catch(() => ''))
  .split('\n')
  .filter(Boolean);
const now = new Date().toISOString();
await appendSynced('/data/boots.txt', now);
await appendSynced(
  '/vault/secret-log.txt',
  `boot ${boots.length + 1} at ${now}: only the enclave reads this`,
);
console.log(`boot ${boots.length + 1}; the vault holds:`);
console.log(await readFile('/vault/secret-log.txt', 'utf8'));
