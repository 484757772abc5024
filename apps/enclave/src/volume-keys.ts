// The data-key source of encrypted volumes for ee-enclave run: one attested KMS client per
// `encryption.kms` block (Recipient attestation from the NSM), loaded only when a volume is
// encrypted (the AWS SDK and the NSM stay unloaded otherwise).
import type { DataKeySource, VolumeConfig } from '@enclave-extras/volumes';

type KmsAccess = NonNullable<NonNullable<VolumeConfig['encryption']>['kms']>;

export async function volumeDataKeys(
  volumes: readonly VolumeConfig[],
): Promise<((v: VolumeConfig) => DataKeySource | undefined) | undefined> {
  const encrypted = volumes.filter((v) => v.encryption?.kms);
  if (encrypted.length === 0) return undefined;
  const { AttestedKmsClient, fromParentInstance } = await import('@enclave-extras/kms');
  const { NsmClient, NsmSimulator } = await import('@enclave-extras/nsm');
  const { httpConnectDialer } = await import('@enclave-extras/proxy');
  const { kmsDataKeys } = await import('@enclave-extras/volumes');
  const clients = new Map<string, InstanceType<typeof AttestedKmsClient>>();
  let nsmDevice: ReturnType<typeof NsmClient.open> | undefined;
  const device = () => {
    nsmDevice ??= NsmClient.open();
    return nsmDevice;
  };
  const client = async (k: KmsAccess) => {
    const id = JSON.stringify(k);
    const have = clients.get(id);
    if (have) return have;
    const nsm = k.nsm.startsWith('simulator:')
      ? await NsmClient.open({
          transport: new NsmSimulator({ stateDir: k.nsm.slice('simulator:'.length) }),
        })
      : await device();
    const made = new AttestedKmsClient({
      region: k.region,
      maxAttempts: 2,
      ...(k.endpoint ? { endpoint: k.endpoint } : {}),
      ...(k.credentials.startsWith('parent:')
        ? {
            credentials: fromParentInstance({
              port: Number(k.credentials.slice('parent:'.length)),
            }),
          }
        : {}),
      ...(k.proxy ? { connect: httpConnectDialer(k.proxy) } : {}),
      attestation: { nsm },
    });
    clients.set(id, made);
    return made;
  };
  const sources = new Map<string, DataKeySource>();
  for (const v of encrypted) {
    const enc = v.encryption;
    if (!enc?.kms) continue;
    const kms = await client(enc.kms);
    sources.set(
      v.name,
      kmsDataKeys({
        kms,
        keyId: enc.keyId,
        encryptionContext: enc.encryptionContext ?? { 'enclave-extras:volume': v.name },
      }),
    );
  }
  return (v) => sources.get(v.name);
}
