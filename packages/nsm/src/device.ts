import { closeSync, constants, openSync } from 'node:fs';
import { NsmError } from './errors.js';
import { checkRawRequest, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES } from './protocol.js';
import { type NsmTransport, SerialQueue } from './transport.js';

/** `_IOWR(0x0A, 0, struct nsm_raw)` on 64-bit Linux. */
export const NSM_IOCTL_REQUEST = 0xc0200a00;
const NSM_RAW_SIZE = 32;
// one byte more than the driver accepts, so oversize requests reach the kernel's own check
const MAX_REQUEST_BUFFER = MAX_REQUEST_BYTES + 1;

export interface DeviceTransportOptions {
  /** Device path. Default `/dev/nsm`. */
  path?: string;
  /**
   * Library that exports `ioctl`, loaded with koffi. Default: the running process itself (Node
   * links libc), which works on glibc and musl.
   */
  library?: string | null;
  /**
   * How the ioctl is called. `'async'`: on a koffi worker thread (the event loop never waits on
   * the device, but each call pays two thread hand-offs). `'sync'`: on the calling thread.
   * `'auto'` (default): Attestation requests (the NSM signs a document) async, everything else
   * sync: those answers take microseconds (13-23 us median in nsm-vm, see the README), far less
   * than a worker round trip.
   */
  dispatch?: 'auto' | 'sync' | 'async';
}

type KoffiModule = typeof import('koffi');
type IoctlFn = ((fd: number, request: number, arg: bigint) => number) & {
  async(fd: number, request: number, arg: bigint, cb: (err: unknown, res: number) => void): void;
};

interface Native {
  koffi: KoffiModule;
  ioctl: IoctlFn;
}

const nativeCache = new Map<string, Native>();

interface Leaked {
  fd: number;
  free: () => void;
}
// A transport dropped without close(): release its fd and native buffers when collected (no call
// can be in flight then, since pending calls reference the transport).
const finalizer = new FinalizationRegistry<Leaked>((leaked) => {
  try {
    closeSync(leaked.fd);
  } catch {}
  leaked.free();
});

async function loadNative(library: string | null): Promise<Native> {
  const key = library ?? '';
  const cached = nativeCache.get(key);
  if (cached) return cached;
  let koffi: KoffiModule;
  try {
    const mod = (await import('koffi')) as KoffiModule & { default?: KoffiModule };
    koffi = mod.default ?? mod;
  } catch (err) {
    throw new NsmError(
      'ERR_NSM_FFI_UNAVAILABLE',
      `koffi could not be loaded (${(err as Error).message}); install koffi with its native package for this platform (@koromix/koffi-linux-x64/arm64), or use the simulator`,
      { cause: err },
    );
  }
  try {
    const lib = koffi.load(library);
    // ioctl is variadic in C; on Linux x86-64 and aarch64 a pointer-sized third argument is
    // passed exactly as for a fixed prototype, and only fixed prototypes can run through
    // koffi's async (worker thread) calls.
    const ioctl = lib.func('int ioctl(int fd, unsigned long request, uintptr_t arg)') as IoctlFn;
    const native = { koffi, ioctl };
    nativeCache.set(key, native);
    return native;
  } catch (err) {
    throw new NsmError(
      'ERR_NSM_FFI_UNAVAILABLE',
      `koffi could not bind ioctl from ${library ?? 'the running process'} (${(err as Error).message}); use the simulator on platforms without it`,
      { cause: err },
    );
  }
}

function openError(err: unknown, path: string): NsmError {
  const e = err as NodeJS.ErrnoException;
  const base = { cause: err, syscall: 'open', address: path, errno: e.errno };
  if (e.code === 'ENOENT' || e.code === 'ENXIO' || e.code === 'ENODEV') {
    return new NsmError(
      'ERR_NSM_NO_DEVICE',
      `no ${path}: not inside a Nitro Enclave; use the simulator for development (NsmSimulator or socketTransport)`,
      base,
    );
  }
  if (e.code === 'EACCES' || e.code === 'EPERM') {
    return new NsmError(
      'ERR_NSM_PERMISSION',
      `${path}: permission denied (${e.code}); run as a user that may read and write ${path}`,
      base,
    );
  }
  return new NsmError('ERR_NSM_IO', `${path}: open failed: ${e.message}`, base);
}

const ERRNO_HINT: Record<string, string> = {
  ENOTTY: 'is not an NSM device (ioctl not supported)',
  EMSGSIZE: 'rejected the request as too large (over 4096 bytes)',
  ETIMEDOUT: 'did not answer in time (the NSM may be stalled)',
  EINVAL: 'rejected the request buffers',
  EFAULT: 'could not access the request buffers',
};

/**
 * The real NSM: opens the device and sends each request with the NSM ioctl through koffi. Calls
 * are serialized per transport (they share one set of native buffers, and the driver serializes
 * them anyway); see `dispatch` for which run on a worker thread.
 */
export async function deviceTransport(options: DeviceTransportOptions = {}): Promise<NsmTransport> {
  const path = options.path ?? '/dev/nsm';
  const native = await loadNative(options.library === undefined ? null : options.library);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR); // libuv sets O_CLOEXEC
  } catch (err) {
    throw openError(err, path);
  }
  const dispatch = options.dispatch ?? 'auto';
  if (dispatch !== 'auto' && dispatch !== 'sync' && dispatch !== 'async') {
    closeSync(fd);
    throw new NsmError('ERR_NSM_INVALID_ARGUMENT', `dispatch must be 'auto', 'sync' or 'async'`, {
      field: 'dispatch',
    });
  }
  return new DeviceTransport(path, fd, native, dispatch);
}

class DeviceTransport implements NsmTransport {
  readonly name: string;
  readonly #path: string;
  readonly #queue = new SerialQueue();
  readonly #native: Native;
  #fd: number;
  #closed = false;
  readonly #token = {};
  // native (non-moving) memory: nsm_raw, request buffer, response buffer
  readonly #rawPtr: unknown;
  readonly #reqPtr: unknown;
  readonly #resPtr: unknown;
  readonly #raw: DataView;
  readonly #req: Uint8Array;
  readonly #res: Uint8Array;
  readonly #rawAddr: bigint;
  readonly #reqAddr: bigint;
  readonly #resAddr: bigint;

  readonly #dispatch: 'auto' | 'sync' | 'async';

  constructor(path: string, fd: number, native: Native, dispatch: 'auto' | 'sync' | 'async') {
    this.name = `device:${path}`;
    this.#dispatch = dispatch;
    this.#path = path;
    this.#fd = fd;
    this.#native = native;
    const { koffi } = native;
    try {
      this.#rawPtr = koffi.alloc('uint8_t', NSM_RAW_SIZE);
      this.#reqPtr = koffi.alloc('uint8_t', MAX_REQUEST_BUFFER);
      this.#resPtr = koffi.alloc('uint8_t', MAX_RESPONSE_BYTES);
      this.#raw = new DataView(koffi.view(this.#rawPtr, NSM_RAW_SIZE));
      this.#req = new Uint8Array(koffi.view(this.#reqPtr, MAX_REQUEST_BUFFER));
      this.#res = new Uint8Array(koffi.view(this.#resPtr, MAX_RESPONSE_BYTES));
      this.#rawAddr = koffi.address(this.#rawPtr);
      this.#reqAddr = koffi.address(this.#reqPtr);
      this.#resAddr = koffi.address(this.#resPtr);
      const ptrs = [this.#rawPtr, this.#reqPtr, this.#resPtr];
      finalizer.register(
        this,
        {
          fd,
          free: () => {
            for (const p of ptrs) koffi.free(p);
          },
        },
        this.#token,
      );
    } catch (err) {
      closeSync(fd);
      throw new NsmError(
        'ERR_NSM_FFI_UNAVAILABLE',
        `koffi could not allocate native buffers: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  request(request: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) return Promise.reject(closedError(this.name));
    try {
      // size: the kernel answers EMSGSIZE (mapped to ERR_NSM_INPUT_TOO_LARGE)
      checkRawRequest(request, this.name, { sizeLimit: false });
    } catch (err) {
      return Promise.reject(err);
    }
    if (request.length > MAX_REQUEST_BUFFER) {
      return Promise.reject(
        new NsmError(
          'ERR_NSM_INPUT_TOO_LARGE',
          `${this.name}: request is ${request.length} bytes, the NSM accepts at most ${MAX_REQUEST_BYTES}`,
          { field: 'request' },
        ),
      );
    }
    const copy = new Uint8Array(request);
    return this.#queue.run(() => this.#ioctl(copy));
  }

  #ioctl(request: Uint8Array): Promise<Uint8Array> {
    if (this.#fd < 0) return Promise.reject(closedError(this.name));
    this.#req.set(request);
    const raw = this.#raw;
    raw.setBigUint64(0, this.#reqAddr, true);
    raw.setBigUint64(8, BigInt(request.length), true);
    raw.setBigUint64(16, this.#resAddr, true);
    raw.setBigUint64(24, BigInt(MAX_RESPONSE_BYTES), true);
    const { ioctl } = this.#native;
    const useAsync =
      this.#dispatch === 'async' || (this.#dispatch === 'auto' && isAttestation(request));
    if (!useAsync) {
      try {
        return Promise.resolve(this.#complete(ioctl(this.#fd, NSM_IOCTL_REQUEST, this.#rawAddr)));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise((resolve, reject) => {
      ioctl.async(this.#fd, NSM_IOCTL_REQUEST, this.#rawAddr, (err, rc) => {
        if (err) {
          reject(
            new NsmError('ERR_NSM_FFI_UNAVAILABLE', `${this.name}: koffi async call failed`, {
              cause: err,
            }),
          );
          return;
        }
        // koffi restores the worker thread's errno while this callback runs
        try {
          resolve(this.#complete(rc));
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  /** Turns the ioctl's return code (errno still current) into the response bytes or an NsmError. */
  #complete(rc: number): Uint8Array {
    const { koffi } = this.#native;
    if (rc < 0) {
      const errno = koffi.errno();
      const name =
        Object.entries(koffi.os.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
      const hint = ERRNO_HINT[name] ?? 'failed';
      const code = name === 'EMSGSIZE' ? 'ERR_NSM_INPUT_TOO_LARGE' : 'ERR_NSM_IO';
      throw new NsmError(code, `${this.#path}: NSM ioctl ${hint} (${name})`, {
        syscall: 'ioctl',
        address: this.#path,
        errno,
        cause: Object.assign(new Error(name), { code: name, errno }),
      });
    }
    const len = Number(this.#raw.getBigUint64(24, true));
    if (len > MAX_RESPONSE_BYTES) {
      throw new NsmError(
        'ERR_NSM_UNEXPECTED_RESPONSE',
        `${this.#path}: driver reported a ${len}-byte response`,
      );
    }
    // copy out of the native buffer: the next request overwrites it
    return new Uint8Array(this.#res.subarray(0, len));
  }

  async close(): Promise<void> {
    if (this.#closed) return this.#queue.drain();
    this.#closed = true;
    await this.#queue.drain();
    const { koffi } = this.#native;
    if (this.#fd >= 0) {
      finalizer.unregister(this.#token);
      closeSync(this.#fd);
      this.#fd = -1;
      koffi.free(this.#rawPtr);
      koffi.free(this.#reqPtr);
      koffi.free(this.#resPtr);
    }
  }
}

// serde_cbor's {"Attestation": {...}}: a1 6b "Attestation"
const ATTESTATION_PREFIX = Buffer.from('a16b4174746573746174696f6e', 'hex');

function isAttestation(request: Uint8Array): boolean {
  return Buffer.from(request.buffer, request.byteOffset, request.byteLength)
    .subarray(0, ATTESTATION_PREFIX.length)
    .equals(ATTESTATION_PREFIX);
}

function closedError(name: string): NsmError {
  return new NsmError('ERR_NSM_CLOSED', `${name}: the transport is closed; open a new NsmClient`);
}
