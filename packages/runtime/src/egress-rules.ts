// The legacy-iptables nat rules of transparent egress: the app's outbound TCP is REDIRECTed to
// the local transparent listener. The stock enclave kernel (4.14) has IP_NF_NAT with the REDIRECT
// target and no nftables, so the rules use only the nat table, the core `-d`/`-p tcp --dport`
// matches and REDIRECT (no owner/mark/addrtype match modules, which that kernel may lack).
//
// Layout (one chain per family, named `chain`, default EE_EGRESS):
//   -t nat -I OUTPUT 1 -p tcp -j EE_EGRESS
//   -t nat -A EE_EGRESS -d 127.0.0.0/8 -j RETURN            (::1/128 for IPv6) loopback stays local
//   -t nat -A EE_EGRESS -d ADDR/32 -p tcp --dport P -j RETURN  each exempt TCP destination
//   -t nat -A EE_EGRESS -d CIDR -j RETURN                      each configured exclusion
//   -t nat -A EE_EGRESS -p tcp -j REDIRECT --to-ports PORT
// AF_VSOCK never passes through netfilter, so the routes and the gateway (vsock to the parent)
// are exempt by construction; routes that dial TCP dial loopback, or get an exact RETURN rule.
//
// An enclave has no route besides loopback, so connect() to a remote address would fail with
// ENETUNREACH before the nat hook runs: when no default route exists, one via `lo` is added
// (`default dev lo src 127.0.0.1`) and removed again with the rules.
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import { type Logger, silentLogger } from '@enclave-extras/proxy';
import { errorCode, errorMessage, RuntimeError } from './errors.js';

export interface ExemptDestination {
  /** An IP literal. */
  address: string;
  /** Only this TCP port (default: every port). */
  port?: number;
}

export interface RedirectRulesOptions {
  /** The port of the transparent listener (127.0.0.1 / ::1). */
  port: number;
  /** The nat chain this runtime owns (replaced on start, removed on exit). Default EE_EGRESS. */
  chain?: string;
  /** IPv6 rules too: true, false, or 'auto' (when ip6tables and the IPv6 nat table work). Default 'auto'. */
  ipv6?: boolean | 'auto';
  /** iptables binary. Default: `iptables-legacy` when installed, else `iptables`. */
  iptables?: string;
  /** ip6tables binary. Default: `ip6tables-legacy` when installed, else `ip6tables`. */
  ip6tables?: string;
  /** iproute2 binary, for the default route via lo. Default `ip`. */
  ipCommand?: string;
  /** Add a default route via lo when there is none (what the enclave needs). Default true. */
  defaultRoute?: boolean;
  /** TCP destinations never redirected (the routes' own TCP dials, a TCP gateway parent). */
  exempt?: ReadonlyArray<ExemptDestination>;
  /** CIDRs never redirected. */
  exclude?: ReadonlyArray<string>;
  logger?: Logger;
}

export interface RedirectRules {
  /** The families with rules installed. */
  readonly families: ReadonlyArray<4 | 6>;
  readonly chain: string;
  /** Removes the rules and the default routes this call added. Idempotent; never throws. */
  remove(): Promise<void>;
}

interface Run {
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 15_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        Object.assign(err, { stderr: `${stderr}`.trim() });
        reject(err);
      } else resolve({ stdout, stderr });
    });
  });
}

function setupError(cmd: string, args: string[], err: unknown, what: string): RuntimeError {
  const text = (err as { stderr?: string }).stderr || errorMessage(err);
  const line = `${cmd} ${args.join(' ')}`;
  if (errorCode(err) === 'ENOENT') {
    return new RuntimeError(
      'ERR_RUNTIME_EGRESS_SETUP',
      `${what}: "${cmd}" was not found. Install iptables (legacy) in the enclave image, or set egress: proxy.`,
      { cause: err, syscall: line },
    );
  }
  if (/Permission denied|not permitted|EPERM/i.test(text)) {
    return new RuntimeError(
      'EPERM',
      `${what}: not permitted (${text}). Run ee-enclave as root with CAP_NET_ADMIN (PID 1 in the enclave), or set egress: proxy.`,
      { cause: err, syscall: line },
    );
  }
  return new RuntimeError(
    'ERR_RUNTIME_EGRESS_SETUP',
    `${what}: "${line}" failed: ${text}. The kernel needs the nat table and the REDIRECT target (iptable_nat, xt_REDIRECT).`,
    { cause: err, syscall: line },
  );
}

async function pick(preferred: string, fallback: string): Promise<string> {
  try {
    await run(preferred, ['--version']);
    return preferred;
  } catch {
    return fallback;
  }
}

const CHAIN = /^[A-Za-z][A-Za-z0-9_-]{0,27}$/;

/** Deletes every jump to `chain` from OUTPUT, then the chain: a crashed run's rules go away. */
async function clearFamily(bin: string, chain: string): Promise<void> {
  for (let i = 0; i < 64; i++) {
    try {
      await run(bin, ['-w', '-t', 'nat', '-D', 'OUTPUT', '-p', 'tcp', '-j', chain]);
    } catch {
      break;
    }
  }
  await run(bin, ['-w', '-t', 'nat', '-F', chain]).catch(() => {});
  await run(bin, ['-w', '-t', 'nat', '-X', chain]).catch(() => {});
}

function familyRules(
  family: 4 | 6,
  chain: string,
  port: number,
  exempt: ReadonlyArray<ExemptDestination>,
  exclude: ReadonlyArray<string>,
): string[][] {
  const nat = ['-w', '-t', 'nat'];
  const out: string[][] = [[...nat, '-N', chain]];
  out.push([...nat, '-A', chain, '-d', family === 4 ? '127.0.0.0/8' : '::1/128', '-j', 'RETURN']);
  for (const e of exempt) {
    if (isIP(e.address) !== family) continue;
    const host = `${e.address}/${family === 4 ? 32 : 128}`;
    out.push([
      ...nat,
      '-A',
      chain,
      '-d',
      host,
      '-p',
      'tcp',
      ...(e.port ? ['--dport', String(e.port)] : []),
      '-j',
      'RETURN',
    ]);
  }
  for (const cidr of exclude) {
    const ip = cidr.split('/')[0] ?? '';
    if (isIP(ip) !== family) continue;
    out.push([...nat, '-A', chain, '-d', cidr, '-j', 'RETURN']);
  }
  out.push([...nat, '-A', chain, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(port)]);
  out.push([...nat, '-I', 'OUTPUT', '1', '-p', 'tcp', '-j', chain]);
  return out;
}

/**
 * Installs the REDIRECT rules (see the layout above), replacing a stale chain of the same name
 * left by a crashed run (never duplicating it). On failure everything this call did is undone
 * before it rejects (RuntimeError `ERR_RUNTIME_EGRESS_SETUP`, or `EPERM` without CAP_NET_ADMIN).
 */
export async function installRedirectRules(options: RedirectRulesOptions): Promise<RedirectRules> {
  const log = options.logger ?? silentLogger;
  const chain = options.chain ?? 'EE_EGRESS';
  if (!CHAIN.test(chain)) {
    throw new RuntimeError(
      'ERR_RUNTIME_EGRESS_SETUP',
      `transparent.chain "${chain}" is not a valid iptables chain name (letters, digits, _ and -, at most 28).`,
    );
  }
  for (const c of options.exclude ?? []) {
    const [ip, bits, extra] = c.split('/');
    const family = isIP(ip ?? '');
    const max = family === 4 ? 32 : 128;
    if (
      family === 0 ||
      extra !== undefined ||
      (bits !== undefined && !/^\d+$/.test(bits)) ||
      Number(bits ?? 0) > max
    ) {
      throw new RuntimeError(
        'ERR_RUNTIME_EGRESS_SETUP',
        `transparent.exclude entry "${c}" is not an IP address or CIDR (e.g. 10.0.0.0/8).`,
        { address: c },
      );
    }
  }
  const ipCmd = options.ipCommand ?? 'ip';
  const v4bin = options.iptables ?? (await pick('iptables-legacy', 'iptables'));
  const mode = options.ipv6 ?? 'auto';
  const v6bin =
    mode === false
      ? undefined
      : (options.ip6tables ?? (await pick('ip6tables-legacy', 'ip6tables')));
  const installed: Array<{ family: 4 | 6; bin: string }> = [];
  const routes: Array<string[]> = [];
  let removed = false;

  const remove = async (): Promise<void> => {
    if (removed) return;
    removed = true;
    for (const { bin } of installed.reverse()) {
      await clearFamily(bin, chain).catch((err) =>
        log.warn({ err: errorMessage(err), chain }, 'could not remove the egress rules'),
      );
    }
    for (const del of routes.reverse()) {
      await run(ipCmd, del).catch((err) =>
        log.warn({ err: errorMessage(err), route: del.join(' ') }, 'could not remove the route'),
      );
    }
    log.info({ chain }, 'transparent egress rules removed');
  };

  const installFamily = async (family: 4 | 6, bin: string): Promise<void> => {
    await clearFamily(bin, chain).catch(() => {});
    installed.push({ family, bin });
    for (const args of familyRules(
      family,
      chain,
      options.port,
      options.exempt ?? [],
      options.exclude ?? [],
    )) {
      try {
        await run(bin, args);
      } catch (err) {
        throw setupError(bin, args, err, `Installing the IPv${family} egress rules`);
      }
    }
    if (options.defaultRoute ?? true) {
      const f = family === 4 ? '-4' : '-6';
      let shown: Run;
      try {
        shown = await run(ipCmd, [f, 'route', 'show', 'default']);
      } catch (err) {
        throw setupError(ipCmd, [f, 'route', 'show', 'default'], err, 'Reading the default route');
      }
      if (shown.stdout.trim() === '') {
        const add = [
          f,
          'route',
          'add',
          'default',
          'dev',
          'lo',
          ...(family === 4 ? ['src', '127.0.0.1'] : []),
        ];
        try {
          await run(ipCmd, add);
        } catch (err) {
          throw setupError(ipCmd, add, err, `Adding an IPv${family} default route via lo`);
        }
        routes.push([f, 'route', 'del', 'default', 'dev', 'lo']);
        log.info({ family }, 'default route via lo added for transparent egress');
      }
    }
  };

  try {
    await installFamily(4, v4bin);
    if (v6bin) {
      try {
        await installFamily(6, v6bin);
      } catch (err) {
        if (mode === true) throw err;
        // 'auto': undo the partial IPv6 state, keep IPv4.
        const last = installed[installed.length - 1];
        if (last?.family === 6) {
          installed.pop();
          await clearFamily(last.bin, chain).catch(() => {});
        }
        log.warn(
          { code: errorCode(err), err: errorMessage(err) },
          'IPv6 transparent egress unavailable; IPv4 only',
        );
      }
    }
  } catch (err) {
    await remove();
    throw err;
  }
  const families = installed.map((i) => i.family);
  log.info(
    { chain, port: options.port, families, iptables: v4bin },
    'transparent egress rules installed',
  );
  return { families, chain, remove };
}
