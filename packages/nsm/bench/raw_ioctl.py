#!/usr/bin/env python3
"""Baseline for `pnpm bench`: raw NSM ioctl loops in the style of nsm-vm-selftest.py.

Two Python clients per request, both with one preallocated ctypes request/response buffer pair
and fcntl.ioctl on /dev/nsm with the response length read back:
  raw   - a pre-encoded request, the answer sliced out but not decoded (the cheapest loop)
  full  - like the selftest's nsm(): encode the request with a small CBOR encoder, ioctl, decode
          the answer with a small CBOR decoder, pick the field out
Each figure is the best of ROUNDS windows of SECONDS (the machine is shared and noisy).
Prints JSON {"raw": {name: rps}, "full": {name: rps}}.  Usage: raw_ioctl.py SECONDS ROUNDS
"""
import ctypes, fcntl, json, os, struct, sys, time

NSM_IOCTL_RAW = 0xC0200A00
RESPONSE_MAX = 0x3000
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3

def head(major, n):
    if n < 24: return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)

def enc(v):
    if v is None: return b"\xf6"
    if isinstance(v, bool): return b"\xf5" if v else b"\xf4"
    if isinstance(v, int): return head(0, v)
    if isinstance(v, bytes): return head(2, len(v)) + v
    if isinstance(v, str): b = v.encode(); return head(3, len(b)) + b
    if isinstance(v, dict): return head(5, len(v)) + b"".join(enc(k) + enc(x) for k, x in v.items())
    raise TypeError(type(v))

def dec(b, i=0):
    ib = b[i]; major, ai = ib >> 5, ib & 31; i += 1
    if ai < 24: n = ai
    else: size = 1 << (ai - 24); n = int.from_bytes(b[i:i + size], "big"); i += size
    if major == 0: return n, i
    if major == 2: return bytes(b[i:i + n]), i + n
    if major == 3: return b[i:i + n].decode(), i + n
    if major == 4:
        out = []
        for _ in range(n): x, i = dec(b, i); out.append(x)
        return out, i
    if major == 5:
        out = {}
        for _ in range(n): k, i = dec(b, i); out[k], i = dec(b, i)
        return out, i
    if major == 7: return {20: False, 21: True, 22: None}[ai], i
    raise ValueError(major)

class Nsm:
    def __init__(self):
        self.fd = os.open("/dev/nsm", os.O_RDWR)
        self.resp = ctypes.create_string_buffer(RESPONSE_MAX)
    def raw(self, request):
        req = ctypes.create_string_buffer(request, len(request))
        arg = bytearray(struct.pack("<QQQQ", ctypes.addressof(req), len(request),
                                    ctypes.addressof(self.resp), RESPONSE_MAX))
        fcntl.ioctl(self.fd, NSM_IOCTL_RAW, arg, True)
        return self.resp.raw[:struct.unpack_from("<Q", arg, 24)[0]]
    def call(self, request):
        out, _ = dec(self.raw(enc(request)))
        if "Error" in out: raise RuntimeError(out["Error"])
        return out

def best(fn):
    rates = []
    for _ in range(ROUNDS):
        n, start = 0, time.perf_counter()
        deadline = start + SECONDS
        while True:
            fn(); n += 1
            if n % 16 == 0 and time.perf_counter() >= deadline: break
        rates.append(n / (time.perf_counter() - start))
    return max(rates)

nsm = Nsm()
DESCRIBE = enc({"DescribePCR": {"index": 16}})
RANDOM = enc("GetRandom")
print(json.dumps({
    "raw": {
        "DescribePCR": best(lambda: nsm.raw(DESCRIBE)),
        "GetRandom": best(lambda: nsm.raw(RANDOM)),
    },
    "full": {
        "DescribePCR": best(lambda: nsm.call({"DescribePCR": {"index": 16}})["DescribePCR"]["data"]),
        "GetRandom": best(lambda: nsm.call("GetRandom")["GetRandom"]["random"]),
    },
}))
