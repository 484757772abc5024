// Key store: one JSON file per key in <dataDir>/keys, written atomically (temp file,
// fsync, rename) with mode 0600, cached in memory.
import { randomBytes, randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';

export type KeyState = 'Enabled' | 'Disabled' | 'PendingDeletion';

export interface StoredKey {
  keyId: string;
  arn: string;
  description: string;
  creationDate: number;
  keyState: KeyState;
  deletionDate?: number;
  policy: string;
  /** Base64 AES-256 key material. Never leaves the server. */
  material: string;
  format: 1;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class KeyStore {
  private readonly keys = new Map<string, StoredKey>();
  private readonly dir: string;

  private constructor(dataDir: string) {
    this.dir = join(dataDir, 'keys');
  }

  static async open(dataDir: string): Promise<KeyStore> {
    const store = new KeyStore(dataDir);
    await fs.mkdir(store.dir, { recursive: true, mode: 0o700 });
    for (const name of await fs.readdir(store.dir)) {
      if (!name.endsWith('.json')) continue;
      const text = await fs.readFile(join(store.dir, name), 'utf8');
      const key = JSON.parse(text) as StoredKey;
      if (key.format !== 1 || !UUID_RE.test(key.keyId) || `${key.keyId}.json` !== name) {
        throw new Error(`key file ${join(store.dir, name)} is not a local KMS key (format 1)`);
      }
      store.keys.set(key.keyId, key);
    }
    return store;
  }

  get(keyId: string): StoredKey | undefined {
    return this.keys.get(keyId);
  }

  list(): StoredKey[] {
    return [...this.keys.values()].sort((a, b) => a.creationDate - b.creationDate);
  }

  async create(init: {
    arnPrefix: string;
    description: string;
    policy: string;
  }): Promise<StoredKey> {
    const keyId = randomUUID();
    const key: StoredKey = {
      keyId,
      arn: `${init.arnPrefix}key/${keyId}`,
      description: init.description,
      creationDate: Date.now(),
      keyState: 'Enabled',
      policy: init.policy,
      material: randomBytes(32).toString('base64'),
      format: 1,
    };
    await this.save(key);
    return key;
  }

  async save(key: StoredKey): Promise<void> {
    const file = join(this.dir, `${key.keyId}.json`);
    const tmp = join(
      this.dir,
      `.${key.keyId}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
    );
    const fh = await fs.open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(`${JSON.stringify(key, null, 2)}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
    this.keys.set(key.keyId, key);
  }
}
