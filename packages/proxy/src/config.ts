import { readFile } from 'node:fs/promises';
import { type Document, isMap, isPair, isScalar, LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { type Endpoint, parseEndpoint } from './endpoint.js';
import { errorMessage, ProxyError } from './errors.js';
import { Policy, type PolicyConfig } from './policy.js';

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
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
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
  const data: unknown = doc.toJS({ maxAliasCount: 100 }) ?? {};
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

/** AWS vsock-proxy's allowlist file: `allowlist: [{address, port}]`. */
export const awsAllowlistSchema = z.object({
  allowlist: z
    .array(z.object({ address: z.string().min(1), port: z.number().int().min(1).max(65535) }))
    .nullable()
    .default([]),
});

const routeLimits = {
  connectTimeoutMs: ms.optional(),
  idleTimeoutMs: ms.optional(),
  maxConnections: z.number().int().min(1).optional(),
};

/** One forwarding route. */
export const routeSchema = z.strictObject({
  name: z.string().min(1),
  listen: endpointSchema,
  dial: endpointSchema,
  ...routeLimits,
  dialRetries: dialRetriesSchema.optional(),
  policy: policySchema.optional(),
  /** Listen backlog (kernel accept queue); raise it for bursts of new connections. Default 511. */
  backlog: z.number().int().min(1).max(65535).optional(),
});

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
});

export type RouteConfig = z.output<typeof routeSchema>;
export type EgressGatewayConfig = z.output<typeof egressGatewaySchema>;
export type EgressGatewayServerConfig = z.output<typeof egressGatewayServerSchema>;
