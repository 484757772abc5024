// SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST: where a connection redirected by iptables (nat REDIRECT)
// was going before the redirect. Linux only; the getsockopt call goes through koffi (loaded on
// first use), on the fd of the accepted socket.
import { RuntimeError } from './errors.js';

type KoffiModule = typeof import('koffi');
type GetSockOpt = (fd: number, level: number, name: number, val: Buffer, len: Buffer) => number;

const SOL_IP = 0;
const SOL_IPV6 = 41;
/** SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h). */
const SO_ORIGINAL_DST = 80;
const AF_INET = 2;
const AF_INET6 = 10;

interface Native {
  koffi: KoffiModule;
  getsockopt: GetSockOpt;
}

let nativeLoad: Promise<Native> | undefined;

function unavailable(why: string, cause?: unknown): RuntimeError {
  return new RuntimeError(
    'ERR_RUNTIME_ORIGINAL_DST',
    `Cannot read the original destination of redirected connections: ${why}. Transparent egress needs Linux and koffi; use egress: proxy instead.`,
    cause === undefined ? {} : { cause },
  );
}

function loadNative(): Promise<Native> {
  nativeLoad ??= (async () => {
    if (process.platform !== 'linux') throw unavailable(`this is ${process.platform}`);
    let koffi: KoffiModule;
    try {
      const mod = (await import('koffi')) as KoffiModule & { default?: KoffiModule };
      koffi = mod.default ?? mod;
    } catch (err) {
      throw unavailable(`koffi could not be loaded (${String(err)})`, err);
    }
    const proto = 'int getsockopt(int sockfd, int level, int optname, void *optval, void *optlen)';
    try {
      let lib: ReturnType<KoffiModule['load']>;
      try {
        lib = koffi.load(null);
        lib.func(proto);
      } catch {
        lib = koffi.load('libc.so.6');
      }
      const fn = lib.func(proto) as unknown as (...a: unknown[]) => number;
      return {
        koffi,
        getsockopt: (fd, level, name, val, len) => fn(fd, level, name, val, len),
      };
    } catch (err) {
      throw unavailable(`koffi could not bind getsockopt (${String(err)})`, err);
    }
  })();
  nativeLoad.catch(() => {
    nativeLoad = undefined;
  });
  return nativeLoad;
}

/** Loads the native call now, so a missing koffi fails before the app starts. */
export async function loadOriginalDst(): Promise<void> {
  await loadNative();
}

/** The fd of a net.Socket (libuv exposes it on POSIX handles). */
function socketFd(socket: unknown): number | undefined {
  const fd = (socket as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

export interface OriginalDestination {
  address: string;
  port: number;
  family: 4 | 6;
}

/** Parses a struct sockaddr_in / sockaddr_in6 (family in host order, port big-endian). */
export function parseSockaddr(buf: Buffer, len: number): OriginalDestination | undefined {
  if (len < 2) return undefined;
  const family = buf.readUInt16LE(0);
  if (family === AF_INET && len >= 8) {
    return {
      family: 4,
      port: buf.readUInt16BE(2),
      address: `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`,
    };
  }
  if (family === AF_INET6 && len >= 24) {
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(8 + i * 2).toString(16));
    // Shortest form is not needed for dialling; normalise with the URL parser for readable logs.
    const full = groups.join(':');
    let address = full;
    try {
      address = new URL(`http://[${full}]/`).hostname.slice(1, -1);
    } catch {
      // keep the full form
    }
    return { family: 6, port: buf.readUInt16BE(2), address };
  }
  return undefined;
}

/**
 * The destination a REDIRECTed connection was meant for, read with getsockopt(SO_ORIGINAL_DST)
 * (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6, by the socket's local address family). Rejects with
 * RuntimeError ERR_RUNTIME_ORIGINAL_DST when the socket was not redirected (ENOENT) or has no fd.
 */
export async function originalDestination(socket: object): Promise<OriginalDestination> {
  const native = await loadNative();
  const fd = socketFd(socket);
  const localAddress = (socket as { localAddress?: unknown }).localAddress;
  const local = typeof localAddress === 'string' ? localAddress : '';
  if (fd === undefined) {
    throw new RuntimeError(
      'ERR_RUNTIME_ORIGINAL_DST',
      'The accepted socket has no file descriptor; transparent egress needs a TCP listener.',
    );
  }
  const v6 = local.includes(':') && !local.startsWith('::ffff:');
  const val = Buffer.alloc(28);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(val.length, 0);
  const r = native.getsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, SO_ORIGINAL_DST, val, len);
  if (r < 0) {
    const errno = native.koffi.errno();
    throw new RuntimeError(
      'ERR_RUNTIME_ORIGINAL_DST',
      `getsockopt(${v6 ? 'IP6T_SO_ORIGINAL_DST' : 'SO_ORIGINAL_DST'}) failed with errno ${errno}${errno === 2 ? ' (ENOENT: this connection was not redirected by the nat table)' : ''}; only connections redirected by the egress rules may reach this listener.`,
      { syscall: 'getsockopt', address: local, details: { errno } },
    );
  }
  const parsed = parseSockaddr(val, len.readUInt32LE(0));
  if (!parsed) {
    throw new RuntimeError(
      'ERR_RUNTIME_ORIGINAL_DST',
      `getsockopt(SO_ORIGINAL_DST) returned an unknown address family ${val.readUInt16LE(0)}.`,
      { syscall: 'getsockopt' },
    );
  }
  return parsed;
}
