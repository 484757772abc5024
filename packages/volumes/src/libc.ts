// The libc calls of this package through koffi, loaded once, and the error they throw.
// Internal only.
import koffi from 'koffi';

type SysFn = ((...args: unknown[]) => number) & {
  async: (...args: unknown[]) => void;
};

interface Libc {
  ioctl: SysFn;
  addKey: SysFn;
  keyctl: SysFn;
  flock: SysFn;
}
let libc: Libc | undefined;

export function sys(): Libc {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  const f = (proto: string): SysFn => lib.func(proto) as unknown as SysFn;
  libc = {
    ioctl: f('int ioctl(int fd, unsigned long req, void *arg)'),
    addKey: f(
      'int32_t syscall(long nr, const char *type, const char *desc, void *payload, size_t plen, int32_t keyring)',
    ),
    keyctl: f('long syscall(long nr, int cmd, int32_t a, unsigned long b)'),
    flock: f('int flock(int fd, int op)'),
  };
  return libc;
}

/** A failed system call: `code` is the errno's name (ENOLCK, EWOULDBLOCK ...). */
export class SyscallError extends Error {
  constructor(
    readonly syscall: string,
    readonly errno: number,
  ) {
    const name =
      Object.entries(koffi.os.errno).find(([, v]) => v === errno)?.[0] ?? `errno ${errno}`;
    super(`${syscall}: ${name}`);
    this.code = name;
  }
  readonly code: string;
}
