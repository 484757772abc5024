// Shared set-up: the local attested KMS (over real HTTP) trusting an NSM simulator's dev root.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KMSClient } from '@aws-sdk/client-kms';
import { NsmClient, NsmSimulator } from '@enclave-extras/nsm';
import { createLocalKms, type LocalKms } from '../src/local/index.js';

export const CREDS = { accessKeyId: 'AKIDKMSHELPERTEST', secretAccessKey: 'kms-helper-secret' };
export const ACCOUNT = '111122223333';

export interface Env {
  dir: string;
  kms: LocalKms;
  endpoint: string;
  plain: KMSClient;
  sim: NsmSimulator;
  nsm: NsmClient;
  /** A second "enclave" (its own PCRs) whose documents chain to the same dev root. */
  enclave(pcrs: Record<number, string>): Promise<NsmClient>;
  close(): Promise<void>;
}

export async function startEnv(pcrs: Record<number, string>): Promise<Env> {
  const dir = mkdtempSync(join(tmpdir(), 'ee-kms-test-'));
  const stateDir = join(dir, 'nsm');
  const sim = new NsmSimulator({ pcrs, stateDir });
  const nsm = await NsmClient.open({ transport: sim });
  const kms = await createLocalKms({
    dataDir: join(dir, 'kms'),
    credentials: [CREDS],
    roots: [(await sim.devRoot()).pem],
  });
  const endpoint = await kms.listen();
  const plain = new KMSClient({
    endpoint,
    region: 'us-east-1',
    credentials: CREDS,
    maxAttempts: 1,
  });
  const others: NsmClient[] = [];
  return {
    dir,
    kms,
    endpoint,
    plain,
    sim,
    nsm,
    async enclave(p) {
      const c = await NsmClient.open({ transport: new NsmSimulator({ pcrs: p, stateDir }) });
      others.push(c);
      return c;
    },
    async close() {
      await kms.close();
      await nsm.close();
      for (const o of others) await o.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
