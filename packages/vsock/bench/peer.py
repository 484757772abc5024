# Plain Python socket loop, the baseline of bench/throughput.mjs (same modes as peer.mjs).
import json, socket, sys, time

mode, port = sys.argv[1], int(sys.argv[2])
arg = int(sys.argv[3]) if len(sys.argv) > 3 else 0
CID_LOCAL = 1

if mode == "sink":
    srv = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    srv.bind((socket.VMADDR_CID_ANY, port))
    srv.listen(1024)
    print("ready", flush=True)
    conn, _ = srv.accept()
    t0 = time.perf_counter()
    buf = bytearray(256 * 1024)
    total = 0
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        total += n
    print(json.dumps({"bytes": total, "seconds": time.perf_counter() - t0}), flush=True)
elif mode == "send":
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.connect((CID_LOCAL, port))
    chunk = b"\x5a" * 65536
    left = arg
    while left > 0:
        n = min(len(chunk), left)
        s.sendall(chunk if n == len(chunk) else chunk[:n])
        left -= n
    s.shutdown(socket.SHUT_WR)
    s.close()
elif mode == "accept":
    srv = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    srv.bind((socket.VMADDR_CID_ANY, port))
    srv.listen(1024)
    print("ready", flush=True)
    while True:
        c, _ = srv.accept()
        c.close()
elif mode == "connect":
    t0 = time.perf_counter()
    for _ in range(arg):
        s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        s.connect((CID_LOCAL, port))
        s.close()
    print(json.dumps({"count": arg, "seconds": time.perf_counter() - t0}), flush=True)
