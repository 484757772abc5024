import { isAbsolute, normalize } from 'node:path';

export interface NfsExportOptions {
  /** The directory the parent exports to the enclave. */
  dir: string;
  /** The address the parent-side proxy connects to the NFS server from. Default `127.0.0.1`. */
  proxyAddress?: string;
  /** `fsid=0` makes `dir` the NFSv4 pseudo-root, so the enclave mounts `/` (default true). */
  pseudoRoot?: boolean;
}

/**
 * The exact /etc/exports line for an enclave volume: only the proxy's address, read-write,
 * `sync` (an fsync in the enclave reaches the parent's disk), `insecure` (the proxy connects from
 * an unprivileged port), `no_root_squash` (the enclave's root owns its files), no subtree check.
 */
export function nfsExportLine(o: NfsExportOptions): string {
  const dir = o.dir.includes(' ') ? `"${o.dir}"` : o.dir;
  const opts = [
    'rw',
    'sync',
    'insecure',
    'no_root_squash',
    'no_subtree_check',
    ...((o.pseudoRoot ?? true) ? ['fsid=0'] : []),
  ];
  return `${dir} ${o.proxyAddress ?? '127.0.0.1'}(${opts.join(',')})`;
}

export interface ExportClient {
  host: string;
  options: string[];
}

export interface ExportEntry {
  dir: string;
  clients: ExportClient[];
  line: number;
}

/** Parses exports(5) text: comments, continuation lines, quoted paths, `host(opts)` clients. */
export function parseExports(text: string): ExportEntry[] {
  const out: ExportEntry[] = [];
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  lines.forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) return;
    const m = /^("([^"]+)"|(\S+))\s*(.*)$/.exec(line);
    if (!m) return;
    const dir = m[2] ?? m[3] ?? '';
    const clients: ExportClient[] = [];
    const rest = m[4] ?? '';
    let defaults: string[] = [];
    for (const tok of rest.split(/\s+/).filter(Boolean)) {
      if (tok.startsWith('-')) {
        defaults = tok.slice(1).split(',');
        continue;
      }
      const c = /^([^(]*)(?:\(([^)]*)\))?$/.exec(tok);
      if (!c) continue;
      clients.push({ host: c[1] || '*', options: c[2] !== undefined ? c[2].split(',') : defaults });
    }
    if (rest.trim() === '') clients.push({ host: '*', options: [] });
    out.push({ dir, clients, line: i + 1 });
  });
  return out;
}

export interface ExportFinding {
  level: 'error' | 'warn';
  message: string;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/**
 * Checks exports(5) text for `dir`: an error when it is not exported to the proxy at all or is
 * exported to more than the proxy's address; warnings for options that break the volume.
 */
export function checkExports(text: string, o: NfsExportOptions): ExportFinding[] {
  const dir = normalize(o.dir);
  const proxy = o.proxyAddress ?? '127.0.0.1';
  const findings: ExportFinding[] = [];
  if (!isAbsolute(dir)) return [{ level: 'error', message: `${o.dir}: not an absolute path` }];
  const entries = parseExports(text);
  const mine = entries.filter((e) => normalize(e.dir) === dir);
  const related = entries.filter(
    (e) =>
      normalize(e.dir) !== dir &&
      (dir.startsWith(`${normalize(e.dir)}/`) || normalize(e.dir).startsWith(`${dir}/`)),
  );
  if (mine.length === 0)
    findings.push({
      level: 'error',
      message: `${dir} is not in the exports file: add the line ee-parent nfs-exports prints, then run exportfs -ra`,
    });
  for (const e of mine) {
    for (const c of e.clients) {
      if (c.host !== proxy && !(LOOPBACK.has(c.host) && LOOPBACK.has(proxy)))
        findings.push({
          level: 'error',
          message: `line ${e.line}: ${dir} is exported to "${c.host}" as well as to the proxy (${proxy}): anything matching "${c.host}" can mount the enclave's volume. Export it to ${proxy} only.`,
        });
      else {
        if (!c.options.includes('sync'))
          findings.push({
            level: 'warn',
            message: `line ${e.line}: no "sync": an fsync in the enclave may not reach the parent's disk`,
          });
        if (!c.options.includes('insecure'))
          findings.push({
            level: 'warn',
            message: `line ${e.line}: no "insecure": the proxy connects from an unprivileged port and the server will refuse it`,
          });
        if (c.options.includes('ro'))
          findings.push({
            level: 'warn',
            message: `line ${e.line}: "ro": the enclave cannot write`,
          });
      }
    }
  }
  for (const e of related) {
    const wide = e.clients.filter(
      (c) => c.host !== proxy && !(LOOPBACK.has(c.host) && LOOPBACK.has(proxy)),
    );
    if (wide.length > 0 && dir.startsWith(`${normalize(e.dir)}/`))
      findings.push({
        level: 'error',
        message: `line ${e.line}: ${e.dir} (which contains ${dir}) is exported to ${wide.map((c) => c.host).join(', ')}: the volume's files are reachable from there. Move the volume out of it.`,
      });
  }
  return findings;
}

function hexAddress(hex: string): string {
  if (hex.length === 8) {
    const b = Buffer.from(hex, 'hex');
    return `${b[3]}.${b[2]}.${b[1]}.${b[0]}`;
  }
  // IPv6 in /proc: four little-endian 32-bit words
  const words = hex.match(/.{8}/g) ?? [];
  const bytes = Buffer.concat(words.map((w) => Buffer.from(w, 'hex').reverse()));
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return groups.join(':');
}

/**
 * The addresses a TCP server listens on for `port`, from the text of /proc/net/tcp and
 * /proc/net/tcp6 (local_address column, state 0A = LISTEN).
 */
export function listeningAddresses(procNetTcp: string, port = 2049): string[] {
  const out: string[] = [];
  for (const line of procNetTcp.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    const [addr, p] = (f[1] ?? '').split(':');
    if (!addr || !p || f[3] !== '0A' || Number.parseInt(p, 16) !== port) continue;
    out.push(hexAddress(addr));
  }
  return out;
}

const LOOPBACK_LISTEN = /^(127\.|0:0:0:0:0:0:0:1$)/;

/** A warning when the NFS server listens beyond loopback (the exports decide who mounts; a firewall who connects). */
export function checkNfsListeners(addresses: readonly string[], port = 2049): ExportFinding[] {
  const wide = addresses.filter((a) => !LOOPBACK_LISTEN.test(a));
  if (wide.length === 0) return [];
  return [
    {
      level: 'warn',
      message: `the NFS server listens on ${[...new Set(wide)].join(', ')} port ${port}, not only on loopback: the exports file alone decides who may mount. Block ${port} from other hosts (security group / firewall); the proxy only needs 127.0.0.1.`,
    },
  ];
}
