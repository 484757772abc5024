import { isAbsolute, normalize } from 'node:path';
import { z } from 'zod';

const MiB = 1024 * 1024;

/** A size: a number of MiB, or a string like `512MiB`, `2GiB`. */
export const sizeSchema = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v * MiB;
  const m = /^(\d+)\s*(MiB|GiB|TiB)$/.exec(v.trim());
  if (!m) {
    ctx.addIssue({
      code: 'custom',
      message: `size "${v}": give a number of MiB or "<n>MiB" / "<n>GiB" / "<n>TiB"`,
    });
    return z.NEVER;
  }
  const unit = m[2] === 'MiB' ? MiB : m[2] === 'GiB' ? 1024 * MiB : 1024 * 1024 * MiB;
  return Number(m[1]) * unit;
});

const absolutePath = z.string().refine((p) => isAbsolute(p) && normalize(p) === p && p !== '/', {
  message: 'an absolute, normalised path other than / (e.g. /data)',
});

const relativeFile = z
  .string()
  .refine(
    (p) => !isAbsolute(p) && !p.split('/').includes('..') && p.length > 0 && !p.endsWith('/'),
    {
      message: 'a file name relative to the export (no "..", no leading or trailing /)',
    },
  );

export const nfsOptionsSchema = z
  .object({
    /** NFS minor version. 4.2 by default; 4.1/4.0 for older servers. */
    vers: z.enum(['4.0', '4.1', '4.2']).default('4.2'),
    /** RPC timeout in deciseconds before a retransmission (Linux's TCP default: 600). */
    timeo: z.number().int().min(10).max(6000).default(600),
    /** Retransmissions before "server not responding" is logged (the mount stays hard). */
    retrans: z.number().int().min(1).max(10).default(2),
    /** Extra mount options appended verbatim (e.g. `noatime`, `rsize=1048576`). */
    options: z
      .array(
        z
          .string()
          .regex(
            /^[a-z0-9_]+(=[A-Za-z0-9_.:/-]+)?$/,
            'one mount option like noatime or rsize=1048576',
          ),
      )
      .default([]),
  })
  .strict();

/** How ee-enclave reaches KMS: region, endpoint, credentials, the egress proxy, the NSM. */
export const kmsAccessSchema = z
  .object({
    region: z.string().min(1),
    /** Default: the region's public endpoint. */
    endpoint: z.url().optional(),
    /** `parent:PORT` (ee-parent credentials-relay over vsock) or `env` (the SDK's default chain). */
    credentials: z
      .string()
      .regex(/^(env|parent:\d+)$/, 'env or parent:PORT')
      .default('env'),
    /** HTTP CONNECT proxy to KMS (the egress gateway, e.g. http://127.0.0.1:3128); TLS stays end to end. */
    proxy: z.url().optional(),
    /** `device` (/dev/nsm, default) or `simulator:STATE_DIR` (development and tests). */
    nsm: z
      .string()
      .regex(/^(device|simulator:.+)$/, 'device or simulator:STATE_DIR')
      .default('device'),
  })
  .strict();

export const encryptionSchema = z
  .object({
    /**
     * `fscrypt` (default; ext4 image, loop-mounted, works on the stock 4.14 enclave kernel),
     * `luks2` (LUKS2 container through dm-crypt; needs a kernel with dm_crypt) or `auto`
     * (LUKS2 when /sys/module/dm_crypt exists, else fscrypt). An existing image keeps the kind
     * its header says; a mismatch with `fscrypt`/`luks2` is an error, never a conversion.
     */
    kind: z.enum(['fscrypt', 'luks2', 'auto']).default('fscrypt'),
    /** The ext4 image or LUKS2 container on the export (created on first boot). Default `<name>.img`. */
    image: relativeFile.optional(),
    /** The KMS-encrypted data key, beside the image. Default `<image>.key`. */
    keyBlob: relativeFile.optional(),
    /** Image size on first boot (sparse file). */
    size: sizeSchema,
    /**
     * How long to wait (ms) while another enclave holds the volume's lock (`<image>.lock`, an
     * NFSv4 lock) before refusing with ERR_VOLUME_LOCKED. The default outlasts the Linux NFS
     * server's 90 s lease, after which the lock of an enclave that died without unmounting ends.
     */
    lockWaitMs: z.number().int().min(0).max(3_600_000).default(120_000),
    /** The KMS key whose policy pins the enclave's PCRs (id, ARN or alias). */
    keyId: z.string().min(1),
    /** Encryption context bound to the data key. Default `{ "enclave-extras:volume": <name> }`. */
    encryptionContext: z.record(z.string(), z.string()).optional(),
    /** How `ee-enclave run` reaches KMS for this volume (library users pass `dataKeys` instead). */
    kms: kmsAccessSchema.optional(),
  })
  .strict();

export const volumeSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, 'letters, digits, - and _ (max 63)'),
    /** Where the app sees the volume. Must exist (or set createMountPoint). */
    mountPoint: absolutePath,
    createMountPoint: z.boolean().default(false),
    /** The NFS server as the enclave reaches it: the local end of the volume's route. */
    server: z
      .object({
        host: z.ipv4().or(z.ipv6()).default('127.0.0.1'),
        port: z.number().int().min(1).max(65535).default(2049),
        /** The exported path (NFSv4 pseudo-filesystem path, `/` with `fsid=0` on the parent). */
        export: z.string().startsWith('/').default('/'),
      })
      .strict()
      .default({ host: '127.0.0.1', port: 2049, export: '/' }),
    /**
     * The route ee-enclave creates for this volume: `server.host:server.port` -> vsock
     * `cid:port` (the parent's `ee-parent` route to its NFS server). Omit when you set it up
     * yourself in `routes:`.
     */
    route: z
      .object({
        cid: z.number().int().min(0).default(3),
        port: z.number().int().min(1).max(0xffffffff).default(2049),
      })
      .strict()
      .optional(),
    nfs: nfsOptionsSchema.default({ vers: '4.2', timeo: 600, retrans: 2, options: [] }),
    /** How long to wait for the NFS server to answer before giving up (ms). */
    readyTimeoutMs: z.number().int().min(0).max(3_600_000).default(60_000),
    /** Refuse to start when less than this is free on the volume (MiB; 0 = no check). */
    minFreeMiB: z.number().int().min(0).default(0),
    /** Present: an encrypted volume (ext4 image + fscrypt, or LUKS2; key from KMS) on the export. */
    encryption: encryptionSchema.optional(),
  })
  .strict();

/** The `volumes:` list of enclave.yaml. */
export const volumesSchema = z.array(volumeSchema).superRefine((list, ctx) => {
  const seen = (key: (v: (typeof list)[number]) => string, what: string) => {
    const at = new Map<string, number>();
    list.forEach((v, i) => {
      const k = key(v);
      if (at.has(k))
        ctx.addIssue({
          code: 'custom',
          path: [i],
          message: `${what} ${k} is also used by volume #${at.get(k)}`,
        });
      else at.set(k, i);
    });
  };
  seen((v) => v.name, 'name');
  seen((v) => v.mountPoint, 'mountPoint');
  for (const [i, a] of list.entries())
    for (const [j, b] of list.entries())
      if (i !== j && b.mountPoint.startsWith(`${a.mountPoint}/`))
        ctx.addIssue({
          code: 'custom',
          path: [j, 'mountPoint'],
          message: `${b.mountPoint} is inside volume ${a.name}'s mount point`,
        });
});

export type VolumeConfigInput = z.input<typeof volumeSchema>;
export type VolumeConfig = z.output<typeof volumeSchema>;

/** Route specs (proxy endpoint strings) for the volumes that name a `route`. */
export function volumeRoutes(
  volumes: readonly VolumeConfig[],
): { name: string; listen: string; dial: string }[] {
  return volumes
    .filter((v) => v.route)
    .map((v) => ({
      name: `volume:${v.name}`,
      listen: `tcp:${v.server.host.includes(':') ? `[${v.server.host}]` : v.server.host}:${v.server.port}`,
      dial: `vsock:${v.route?.cid}:${v.route?.port}`,
    }));
}
