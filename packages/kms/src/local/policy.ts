// Key-policy evaluation, the subset that matters for attested keys: Allow/Deny statements,
// Principal ("*", account root, ARNs), Action with wildcards, and Conditions with
// String(Not)Equals(IgnoreCase), StringLike, Bool and Null (plus ...IfExists). Condition
// keys: kms:RecipientAttestation:ImageSha384 / PCR<N>, kms:EncryptionContext:<k>,
// kms:CallerAccount, aws:PrincipalArn. An explicit Deny wins, otherwise an Allow is needed.
import { wire } from './wire-error.js';

export interface PolicyStatement {
  Sid?: string;
  Effect: 'Allow' | 'Deny';
  Principal?: unknown;
  Action?: string | string[];
  NotAction?: string | string[];
  Resource?: string | string[];
  Condition?: Record<string, Record<string, string | string[] | boolean>>;
}

export interface ParsedPolicy {
  Version?: string;
  Statement: PolicyStatement[];
}

const OPERATORS = new Set([
  'stringequals',
  'stringnotequals',
  'stringequalsignorecase',
  'stringnotequalsignorecase',
  'stringlike',
  'stringnotlike',
  'bool',
  'null',
]);

function asList(v: unknown): unknown[] {
  return Array.isArray(v) ? v : v === undefined ? [] : [v];
}

function malformed(msg: string): never {
  throw wire('MalformedPolicyDocumentException', `The key policy is malformed: ${msg}`);
}

/** Parses and validates a key policy document (MalformedPolicyDocumentException on error). */
export function parsePolicy(text: string): ParsedPolicy {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw wire('MalformedPolicyDocumentException', 'The key policy is not valid JSON.', err);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    malformed('it must be a JSON object');
  const stmts = asList((doc as { Statement?: unknown }).Statement);
  if (stmts.length === 0) malformed('Statement must be a non-empty list');
  stmts.forEach((s, i) => {
    if (typeof s !== 'object' || s === null) malformed(`Statement[${i}] must be an object`);
    const st = s as Record<string, unknown>;
    if (st.Effect !== 'Allow' && st.Effect !== 'Deny')
      malformed(`Statement[${i}].Effect must be Allow or Deny`);
    if (st.Principal === undefined)
      malformed(`Statement[${i}].Principal is required in a key policy`);
    if (st.Action === undefined && st.NotAction === undefined)
      malformed(`Statement[${i}].Action is required`);
    for (const a of [...asList(st.Action), ...asList(st.NotAction)]) {
      if (typeof a !== 'string') malformed(`Statement[${i}].Action entries must be strings`);
    }
    if (st.Condition !== undefined) {
      if (typeof st.Condition !== 'object' || st.Condition === null)
        malformed(`Statement[${i}].Condition must be an object`);
      for (const [op, block] of Object.entries(st.Condition as Record<string, unknown>)) {
        const base = op.toLowerCase().replace(/ifexists$/, '');
        if (!OPERATORS.has(base))
          malformed(`Statement[${i}].Condition operator ${op} is not supported by the local KMS`);
        if (typeof block !== 'object' || block === null)
          malformed(`Statement[${i}].Condition.${op} must be an object`);
      }
    }
  });
  return { ...(doc as object), Statement: stmts as PolicyStatement[] };
}

export function defaultPolicy(accountId: string): string {
  return JSON.stringify(
    {
      Version: '2012-10-17',
      Id: 'key-default-1',
      Statement: [
        {
          Sid: 'Enable IAM User Permissions',
          Effect: 'Allow',
          Principal: { AWS: `arn:aws:iam::${accountId}:root` },
          Action: 'kms:*',
          Resource: '*',
        },
      ],
    },
    null,
    2,
  );
}

export interface RequestContext {
  action: string;
  principalArn: string;
  accountId: string;
  /** Condition key (lower-cased prefix) -> value. */
  keys: Map<string, string>;
}

const STAR = 0x2a;
const QUESTION = 0x3f;

/**
 * IAM wildcard match (`*` any run, `?` one character, everything else literal) with the
 * two-pointer greedy algorithm: on a mismatch it only retries from the last `*`, so the cost is
 * at most pattern length x value length (a regex backtracks exponentially on `a*a*a*...b`).
 * @internal exported for tests
 */
export function glob(pattern: string, value: string, ignoreCase: boolean): boolean {
  const p = ignoreCase ? pattern.toLowerCase() : pattern;
  const v = ignoreCase ? value.toLowerCase() : value;
  let pi = 0;
  let vi = 0;
  let star = -1; // index of the last `*` seen in p
  let resume = 0; // where in v that `*` currently stops matching
  while (vi < v.length) {
    const c = p.charCodeAt(pi);
    if (pi < p.length && c === STAR) {
      star = pi++;
      resume = vi;
    } else if (pi < p.length && (c === QUESTION || c === v.charCodeAt(vi))) {
      pi++;
      vi++;
    } else if (star >= 0) {
      pi = star + 1; // let the last `*` take one more character
      vi = ++resume;
    } else {
      return false;
    }
  }
  while (pi < p.length && p.charCodeAt(pi) === STAR) pi++;
  return pi === p.length;
}

function principalMatches(p: unknown, ctx: RequestContext): boolean {
  if (p === '*') return true;
  if (typeof p !== 'object' || p === null) return false;
  for (const a of asList((p as { AWS?: unknown }).AWS)) {
    if (typeof a !== 'string') continue;
    if (a === '*' || a === ctx.principalArn) return true;
    // The account root (or bare account id) delegates to IAM; the local KMS has no IAM, so
    // it stands for every principal of that account.
    const caller = /^arn:aws:(?:iam|sts)::(\d{12}):/.exec(ctx.principalArn)?.[1];
    if (caller !== undefined && (a === caller || a === `arn:aws:iam::${caller}:root`)) return true;
  }
  return false;
}

function actionMatches(st: PolicyStatement, action: string): boolean {
  if (st.Action !== undefined) return asList(st.Action).some((a) => glob(String(a), action, true));
  return !asList(st.NotAction).some((a) => glob(String(a), action, true));
}

function lookup(ctx: RequestContext, key: string): string | undefined {
  const lower = key.toLowerCase();
  const ecPrefix = 'kms:encryptioncontext:';
  if (lower.startsWith(ecPrefix)) return ctx.keys.get(ecPrefix + key.slice(ecPrefix.length));
  return ctx.keys.get(lower);
}

/** Why a condition failed, for a message that tells the caller what to fix. */
export interface ConditionFailure {
  key: string;
  operator: string;
  present: boolean;
}

function evalConditions(st: PolicyStatement, ctx: RequestContext): ConditionFailure | undefined {
  for (const [opRaw, block] of Object.entries(st.Condition ?? {})) {
    const ifExists = /ifexists$/i.test(opRaw);
    const op = opRaw.toLowerCase().replace(/ifexists$/, '');
    for (const [key, expectedRaw] of Object.entries(block)) {
      const expected = asList(expectedRaw).map((e) => String(e));
      const actual = lookup(ctx, key);
      const fail = { key, operator: opRaw, present: actual !== undefined };
      if (op === 'null') {
        const wantNull = expected.some((e) => e.toLowerCase() === 'true');
        if ((actual === undefined) !== wantNull) return fail;
        continue;
      }
      if (actual === undefined) {
        if (ifExists) continue;
        if (op.includes('not')) continue;
        return fail;
      }
      let ok: boolean;
      switch (op) {
        case 'stringequals':
          ok = expected.includes(actual);
          break;
        case 'stringnotequals':
          ok = !expected.includes(actual);
          break;
        case 'stringequalsignorecase':
          ok = expected.some((e) => e.toLowerCase() === actual.toLowerCase());
          break;
        case 'stringnotequalsignorecase':
          ok = !expected.some((e) => e.toLowerCase() === actual.toLowerCase());
          break;
        case 'stringlike':
          ok = expected.some((e) => glob(e, actual, false));
          break;
        case 'stringnotlike':
          ok = !expected.some((e) => glob(e, actual, false));
          break;
        case 'bool':
          ok = expected.some((e) => e.toLowerCase() === actual.toLowerCase());
          break;
        default:
          ok = false;
      }
      if (!ok) return fail;
    }
  }
  return undefined;
}

/** Whether any statement of the policy conditions this action on RecipientAttestation keys. */
export function requiresAttestation(policy: ParsedPolicy, action: string): boolean {
  return policy.Statement.some(
    (st) =>
      actionMatches(st, action) &&
      Object.values(st.Condition ?? {}).some((b) =>
        Object.keys(b).some((k) => k.toLowerCase().startsWith('kms:recipientattestation:')),
      ),
  );
}

/** Throws AccessDeniedException unless the policy allows the request. */
export function authorize(policy: ParsedPolicy, ctx: RequestContext, keyArn: string): void {
  const failures: ConditionFailure[] = [];
  let allowed = false;
  for (const st of policy.Statement) {
    if (!principalMatches(st.Principal, ctx) || !actionMatches(st, ctx.action)) continue;
    const failure = evalConditions(st, ctx);
    if (st.Effect === 'Deny') {
      if (!failure) {
        throw wire(
          'AccessDeniedException',
          `User: ${ctx.principalArn} is not authorized to perform: ${ctx.action} on resource: ${keyArn} with an explicit deny in the key policy${st.Sid ? ` (statement ${st.Sid})` : ''}.`,
        );
      }
      continue;
    }
    if (failure) failures.push(failure);
    else allowed = true;
  }
  if (allowed) return;
  const att = failures.find((f) => f.key.toLowerCase().startsWith('kms:recipientattestation:'));
  let why = 'because no key policy statement allows it';
  if (att && !att.present) {
    why = `because the key policy requires ${att.key} and the request has no Recipient attestation document; call it from an attested enclave with Recipient set`;
  } else if (att) {
    why = `because the attestation document's ${att.key.split(':').pop()} does not satisfy the key policy condition ${att.operator} on ${att.key}`;
  } else if (failures[0]) {
    why = `because the key policy condition ${failures[0].operator} on ${failures[0].key} is not satisfied`;
  }
  throw wire(
    'AccessDeniedException',
    `User: ${ctx.principalArn} is not authorized to perform: ${ctx.action} on resource: ${keyArn} ${why}.`,
  );
}
