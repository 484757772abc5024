import { readFile } from 'node:fs/promises';
import {
  type Document,
  isMap,
  isPair,
  isScalar,
  LineCounter,
  parseDocument,
  type Tags,
  visit,
} from 'yaml';
import { z } from 'zod';
import { type Endpoint, parseEndpoint } from './endpoint.js';
import { errorMessage, ProxyError } from './errors.js';
import { Policy, type PolicyConfig } from './policy.js';
import { strictPort } from './port.js';

export interface ConfigIssue {
  /** Key path like `routes[0].listen`. */
  path: string;
  line: number;
  col: number;
  message: string;
}

function pathText(path: ReadonlyArray<PropertyKey>): string {
  let s = '';
  for (const p of path) {
    if (typeof p === 'number') s += `[${p}]`;
    else s += s === '' ? String(p) : `.${String(p)}`;
  }
  return s === '' ? '(root)' : s;
}

function locate(
  doc: Document,
  lc: LineCounter,
  path: ReadonlyArray<PropertyKey>,
  key?: string,
): { line: number; col: number } {
  const keys = path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  for (let n = keys.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(keys.slice(0, n), true);
    if (!node || typeof node !== 'object' || !('range' in node)) continue;
    // For an unknown or missing key, point at the key itself when it exists.
    if (key !== undefined && n === keys.length && isMap(node)) {
      const pair = node.items.find((it) => isPair(it) && isScalar(it.key) && it.key.value === key);
      const k = pair && isScalar(pair.key) ? pair.key : undefined;
      if (k?.range) {
        const p = lc.linePos(k.range[0]);
        return { line: p.line, col: p.col };
      }
    }
    const range = (node as { range?: [number, number, number] | null }).range;
    if (range) {
      const p = lc.linePos(range[0]);
      return { line: p.line, col: p.col };
    }
  }
  return { line: 1, col: 1 };
}

/** Expanded alias nodes a config may contain; more is a resource-exhaustion attack (billion laughs). */
const MAX_ALIAS_COUNT = 100;

/**
 * YAML 1.2 core schema minus the number spellings nobody means in a config: `0x50`, `0o120`, `1e3`,
 * `.inf` and `.nan` stay strings, so a port or limit written that way is refused by the schema
 * (with its line and column) instead of silently read as 80 or 1000.
 */
function decimalNumbersOnly(tags: Tags): Tags {
  return tags.filter((t) => {
    if (typeof t === 'string') return true;
    if (t.tag === 'tag:yaml.org,2002:int') return t.format === undefined;
    if (t.tag === 'tag:yaml.org,2002:float') {
      return t.format === undefined && !('test' in t && /inf/.test(String(t.test)));
    }
    return true;
  });
}

/**
 * Parses YAML `text` and validates it with `schema`. Errors: ProxyError ERR_CONFIG_INVALID whose
 * message lists `file:line:col: key.path: problem` for every issue (also in `details.issues`).
 */
export function parseConfig<S extends z.ZodType>(
  text: string,
  schema: S,
  filename = '<config>',
): z.output<S> {
  const lc = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter: lc,
    prettyErrors: false,
    uniqueKeys: true,
    customTags: decimalNumbersOnly,
  });
  if (doc.errors.length > 0) {
    const issues: ConfigIssue[] = doc.errors.map((e) => {
      const p = lc.linePos(e.pos[0]);
      return {
        path: '(yaml)',
        line: p.line,
        col: p.col,
        message: e.message.split('\n')[0] ?? e.message,
      };
    });
    throw configError(filename, issues, doc.errors[0]);
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) ?? {};
  } catch (err) {
    // yaml refuses documents whose aliases expand too much (billion laughs): point at the first alias.
    let pos = { line: 1, col: 1 };
    visit(doc, {
      Alias(_key, node) {
        if (node.range) pos = lc.linePos(node.range[0]);
        return visit.BREAK;
      },
    });
    const message = `${errorMessage(err)}: the aliases (*name) expand to too many nodes; write the values out or use fewer aliases`;
    throw configError(filename, [{ path: '(yaml)', ...pos, message }], err);
  }
  const r = schema.safeParse(data);
  if (r.success) return r.data;
  const issues: ConfigIssue[] = r.error.issues.flatMap((issue) => {
    const path = issue.path as PropertyKey[];
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => ({
        path: pathText([...path, k]),
        ...locate(doc, lc, path, k),
        message: `unknown key "${k}" (check the spelling)`,
      }));
    }
    const last = path[path.length - 1];
    const parent = path.slice(0, -1);
    const missing =
      issue.code === 'invalid_type' && doc.getIn(path.map(String), true) === undefined;
    const pos =
      missing && typeof last === 'string' ? locate(doc, lc, parent, last) : locate(doc, lc, path);
    return [
      {
        path: pathText(path),
        ...pos,
        message: missing ? `required key is missing (${issue.message})` : issue.message,
      },
    ];
  });
  throw configError(filename, issues, r.error);
}

function configError(filename: string, issues: ConfigIssue[], cause: unknown): ProxyError {
  const lines = issues.map((i) => `${filename}:${i.line}:${i.col}: ${i.path}: ${i.message}`);
  return new ProxyError(
    'ERR_CONFIG_INVALID',
    `Config ${filename} is invalid; fix these and retry:\n  ${lines.join('\n  ')}`,
    { cause, address: filename, details: { issues } },
  );
}

/** Reads and validates a YAML config file. ERR_CONFIG_READ when it cannot be read, ERR_CONFIG_INVALID when invalid. */
export async function loadConfigFile<S extends z.ZodType>(
  path: string,
  schema: S,
): Promise<z.output<S>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ProxyError(
      'ERR_CONFIG_READ',
      `Cannot read config file ${path}: ${errorMessage(err)}. Check the path and its permissions.`,
      {
        cause: err,
        address: path,
      },
    );
  }
  return parseConfig(text, schema, path);
}

// ---- shared schemas -------------------------------------------------------------------------

/** An endpoint string (`tcp:host:port`, `vsock:cid:port`, `unix:/path`) parsed into an Endpoint. */
export const endpointSchema = z.string().transform((s, ctx): Endpoint => {
  try {
    return parseEndpoint(s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: errorMessage(err) });
    return z.NEVER;
  }
});

const ms = z.number().int().nonnegative();

export const dialRetriesSchema = z.strictObject({
  attempts: z.number().int().min(1).max(100),
  delayMs: ms.optional(),
  backoff: z.number().min(1).max(10).optional(),
  maxDelayMs: ms.optional(),
});

const portsSchema = z.union([
  z.number().int(),
  z.string(),
  z.array(z.union([z.number().int(), z.string()])),
]);

export const policyRuleSchema = z.union([
  z.string(),
  z.strictObject({
    address: z.string().optional(),
    host: z.string().optional(),
    cidr: z.string().optional(),
    port: portsSchema.optional(),
    ports: portsSchema.optional(),
  }),
]);

/** `{ allow: [rules], deny: [rules] }`; every rule is compiled while validating. */
export const policySchema = z
  .strictObject({
    allow: z.array(policyRuleSchema).default([]),
    deny: z.array(policyRuleSchema).default([]),
  })
  .superRefine((p, ctx) => {
    for (const list of ['allow', 'deny'] as const) {
      p[list].forEach((rule, i) => {
        try {
          new Policy({ [list]: [rule] } as PolicyConfig);
        } catch (err) {
          ctx.addIssue({ code: 'custom', path: [list, i], message: errorMessage(err) });
        }
      });
    }
  });

/** A TCP port 1-65535 written in decimal (see strictPort). */
export const portSchema = z.unknown().transform((v, ctx): number => {
  const n = strictPort(v, 65535, 1);
  if (n === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `port ${JSON.stringify(v)} is not a TCP port: write a decimal integer from 1 to 65535`,
    });
    return z.NEVER;
  }
  return n;
});

/**
 * AWS vsock-proxy's allowlist file: `allowlist: [{address, port}]`. Unknown keys are refused, and
 * every address must be a host name, IP address or CIDR (no port inside it).
 */
export const awsAllowlistSchema = z.strictObject({
  allowlist: z
    .array(
      z.strictObject({
        address: z
          .string()
          .min(1)
          .superRefine((address, ctx) => {
            try {
              new Policy({ allow: [{ address }] });
            } catch (err) {
              ctx.addIssue({ code: 'custom', message: errorMessage(err) });
            }
          }),
        port: portSchema,
      }),
    )
    .nullable()
    .default([]),
});

/**
 * Adds an issue at `[...path, 'name']` for every entry whose name an earlier entry already uses:
 * routes and gateways share one name space (metrics, logs, reloads). Pass a gateway without
 * `name` with its default name (`egress`).
 */
export function checkUniqueNames(
  ctx: z.RefinementCtx,
  entries: ReadonlyArray<{ path: ReadonlyArray<string | number>; name: string }>,
): void {
  const seen = new Map<string, string>();
  for (const e of entries) {
    const where = e.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('');
    const first = seen.get(e.name);
    if (first === undefined) {
      seen.set(e.name, where.replace(/^\./, ''));
      continue;
    }
    ctx.addIssue({
      code: 'custom',
      path: [...e.path, 'name'],
      message: `name "${e.name}" is already used by ${first}; every route and gateway needs a unique name (a gateway without "name" is called "egress")`,
    });
  }
}

/** Route and gateway names of a config, in file order, for checkUniqueNames. */
export function namedEntries(config: {
  routes?: ReadonlyArray<{ name: string }>;
  egressGateway?: { name: string } | undefined;
}): Array<{ path: Array<string | number>; name: string }> {
  return [
    ...(config.egressGateway ? [{ path: ['egressGateway'], name: config.egressGateway.name }] : []),
    ...(config.routes ?? []).map((r, i) => ({ path: ['routes', i], name: r.name })),
  ];
}

/** `dns:` of a route or gateway server: deadline of one resolution, resolutions one peer may have waiting. */
export const dnsLimitsSchema = z.strictObject({
  timeoutMs: z.number().int().min(1).optional(),
  maxLookupsPerPeer: z.number().int().nonnegative().optional(),
});

const routeLimits = {
  connectTimeoutMs: ms.optional(),
  /** Default 600 000 (10 min); 0 = never. */
  idleTimeoutMs: ms.optional(),
  maxConnections: z.number().int().min(1).optional(),
  /** Open connections per peer (CID / client IP); 0 = no cap. Default 1024 on vsock listeners. */
  maxConnectionsPerPeer: z.number().int().nonnegative().optional(),
  /** File descriptors kept free for the rest of the process; 0 = off. Default 128. */
  fdReserve: z.number().int().nonnegative().optional(),
};

/** A policy decides on host/IP and port, so only a `tcp:` dial can honour it: refuse it elsewhere. */
function policyNeedsTcpDial(r: { dial: Endpoint; policy?: unknown }, ctx: z.RefinementCtx): void {
  if (r.policy === undefined || r.dial.kind === 'tcp') return;
  ctx.addIssue({
    code: 'custom',
    path: ['policy'],
    message: `a policy applies to tcp: dial targets only, and this route dials ${r.dial.kind}:; remove "policy" or dial a tcp:HOST:PORT`,
  });
}

/** One forwarding route. */
export const routeSchema = z
  .strictObject({
    name: z.string().min(1),
    listen: endpointSchema,
    dial: endpointSchema,
    ...routeLimits,
    dialRetries: dialRetriesSchema.optional(),
    policy: policySchema.optional(),
    dns: dnsLimitsSchema.optional(),
    /** Listen backlog (kernel accept queue); raise it for bursts of new connections. Default 511 (TCP, Unix), 4096 (vsock: a full queue refuses, no SYN retry). */
    backlog: z.number().int().min(1).max(65535).optional(),
  })
  .superRefine(policyNeedsTcpDial);

/** The enclave half of the egress gateway: local HTTP CONNECT, plain-HTTP proxy and SOCKS5 listener, parent over vsock. */
export const egressGatewaySchema = z.strictObject({
  name: z.string().min(1).default('egress'),
  listen: endpointSchema,
  parent: endpointSchema,
  ...routeLimits,
  dialRetries: dialRetriesSchema.optional(),
});

/** The parent half of the egress gateway: vsock listener that enforces `policy` before dialling. */
export const egressGatewayServerSchema = z.strictObject({
  name: z.string().min(1).default('egress'),
  listen: endpointSchema,
  policy: policySchema,
  ...routeLimits,
  dialRetries: dialRetriesSchema.optional(),
  dns: dnsLimitsSchema.optional(),
});

/**
 * The parent DNS service (ee-parent `dns:`): answers the enclave DNS stub under the egress
 * gateway's policy (see createDnsService).
 */
export const dnsServiceSchema = z.strictObject({
  /** Normally vsock:any:8053 (the enclave's `dns.parent` is vsock:3:8053). */
  listen: endpointSchema,
  dns: dnsLimitsSchema.optional(),
  /** Open connections at most (one per question in flight). */
  maxConnections: z.number().int().positive().default(256),
});

export type RouteConfig = z.output<typeof routeSchema>;
export type EgressGatewayConfig = z.output<typeof egressGatewaySchema>;
export type EgressGatewayServerConfig = z.output<typeof egressGatewayServerSchema>;
export type DnsServiceConfig = z.output<typeof dnsServiceSchema>;
