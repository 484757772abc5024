// Prometheus text exposition (0.0.4) helpers shared by the clock and log services.

/** One metric family: HELP, TYPE and its sample rows, newline-terminated. */
export function family(
  name: string,
  type: 'counter' | 'gauge',
  help: string,
  rows: ReadonlyArray<string>,
): string {
  return `${[`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...rows].join('\n')}\n`;
}

/** A label value escaped for the text format. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE =
  /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:\s*[a-zA-Z_][a-zA-Z0-9_]*\s*=\s*"(?:[^"\\\n]|\\.)*"\s*,?)*)\s*\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"/g;
const VALUE = /^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?Inf|NaN)$/;

interface Family {
  help?: string;
  type?: string;
  samples: string[];
}

export interface PrometheusSource {
  text: string;
  /** Labels added to every sample of this source (e.g. `{ cid: '16' }`). */
  labels?: Readonly<Record<string, string>>;
}

function familyOf(
  sample: string,
  families: Map<string, Family>,
  current: string | undefined,
): string {
  if (current && (sample === current || sample.startsWith(`${current}_`))) return current;
  for (const suffix of ['_bucket', '_sum', '_count', '_total', '_created']) {
    if (sample.endsWith(suffix)) {
      const base = sample.slice(0, -suffix.length);
      if (families.has(base)) return base;
    }
  }
  return sample;
}

/**
 * Merges several Prometheus texts into one valid exposition: each family once (HELP and TYPE
 * from the first source that has them), its samples from every source, each source's `labels`
 * added to its samples. Lines that are not a well-formed comment or sample are dropped, so a
 * text from an untrusted peer (an enclave) cannot break the page.
 */
export function mergePrometheus(sources: ReadonlyArray<PrometheusSource>): string {
  const families = new Map<string, Family>();
  const get = (name: string): Family => {
    let f = families.get(name);
    if (!f) {
      f = { samples: [] };
      families.set(name, f);
    }
    return f;
  };
  for (const src of sources) {
    const added = Object.entries(src.labels ?? {}).filter(
      ([k]) => NAME.test(k) && !k.includes(':'),
    );
    const addedNames = new Set(added.map(([k]) => k));
    const extra = added.map(([k, v]) => `${k}="${escapeLabel(v)}"`);
    let current: string | undefined;
    for (const raw of src.text.split('\n')) {
      const line = raw.trimEnd();
      if (line === '') continue;
      if (line.startsWith('#')) {
        const m = /^#\s+(HELP|TYPE)\s+([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\s+(.*))?$/.exec(line);
        if (!m) continue;
        const [, kind, name, rest = ''] = m as unknown as [string, string, string, string?];
        const f = get(name);
        current = name;
        if (kind === 'HELP') f.help ??= rest.replace(/\n/g, ' ');
        else if (/^(counter|gauge|histogram|summary|untyped)$/.test(rest)) f.type ??= rest;
        continue;
      }
      const m = SAMPLE.exec(line);
      if (!m) continue;
      const [, name, labels, value] = m as unknown as [string, string, string | undefined, string];
      if (!VALUE.test(value)) continue;
      const fam = familyOf(name, families, current);
      // the source's own labels, minus duplicates and the ones `labels` sets (a peer cannot
      // claim another cid)
      const seen = new Set(addedNames);
      const own: string[] = [];
      for (const p of (labels ?? '').matchAll(LABEL)) {
        const [, k, v] = p as unknown as [string, string, string];
        if (seen.has(k)) continue;
        seen.add(k);
        own.push(`${k}="${v}"`);
      }
      const all = [...extra, ...own].join(',');
      get(fam).samples.push(`${name}${all ? `{${all}}` : ''} ${value}`);
    }
  }
  const out: string[] = [];
  for (const [name, f] of families) {
    if (f.samples.length === 0) continue;
    if (f.help !== undefined) out.push(`# HELP ${name} ${f.help}`);
    if (f.type !== undefined) out.push(`# TYPE ${name} ${f.type}`);
    out.push(...f.samples);
  }
  return out.length ? `${out.join('\n')}\n` : '';
}
