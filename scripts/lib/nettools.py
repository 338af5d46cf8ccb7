#!/usr/bin/env python3
"""Small network tools for the end-to-end tests and the demo (standard library only).

  nettools.py tcp-sink PORT OUTFILE            accept one connection, write sha256 and peer to OUTFILE
  nettools.py tcp-send HOST PORT BYTES SEED    send BYTES pseudo-random bytes, print their sha256
  nettools.py tcp-paced-send HOST PORT SECONDS KBPS SEED
                                               send pseudo-random bytes at KBPS KiB/s for SECONDS,
                                               print sha256, byte count and the longest gap (s)
                                               between successful sends
  nettools.py tcp-serve PORT BYTES SEED OUTFILE serve BYTES to one client, record the peer in OUTFILE
  nettools.py tcp-fetch HOST PORT              read until EOF, print sha256 and byte count
  nettools.py udp-echo PORT COUNT OUTFILE      echo COUNT datagrams, record the peers in OUTFILE
  nettools.py udp-ping HOST PORT COUNT         send COUNT datagrams, print how many echoes came back
  nettools.py ipip-inject SRC DST INNER_SRC INNER_DST    one IP-in-IP packet (raw socket, as root)
  nettools.py metric URL NAME [LABELS]         print the value of one Prometheus sample
"""
import hashlib
import random
import socket
import struct
import sys
import time
import urllib.request


def stream(nbytes, seed):
    rng = random.Random(int(seed))
    left = int(nbytes)
    while left > 0:
        n = min(left, 65536)
        yield rng.randbytes(n)
        left -= n


def tcp_sink(port, outfile):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(1)
    s.settimeout(60)
    c, peer = s.accept()
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        h.update(d)
        n += len(d)
    open(outfile, "w").write(f"{h.hexdigest()} {n} {peer[0]}\n")


def tcp_send(host, port, nbytes, seed):
    h = hashlib.sha256()
    s = socket.create_connection((host, int(port)), timeout=60)
    for chunk in stream(nbytes, seed):
        h.update(chunk)
        s.sendall(chunk)
    s.close()
    print(h.hexdigest(), nbytes)


def tcp_paced_send(host, port, seconds, kbps, seed):
    """Sends the deterministic stream of `seed` in 4 KiB writes paced at `kbps` KiB/s for
    `seconds`, then half-closes and waits for the sink to close (so everything was delivered).
    The send buffer is kept small (SO_SNDBUF 32 KiB, 64 KiB in the kernel: ~0.3 s at 200 KiB/s),
    so a stalled connection blocks sendall() within a fraction of a second and shows up as a gap
    between two successful sends instead of being absorbed by a multi-megabyte buffer. The gap
    also covers connect -> first send and last send -> the sink's EOF. A write that falls behind
    schedule does not make the next ones burst: the schedule restarts from it."""
    seconds, rate, chunk = float(seconds), int(kbps) * 1024, 4096
    rng = random.Random(int(seed))
    h, n = hashlib.sha256(), 0
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    s.settimeout(30)
    s.connect((host, int(port)))
    start = last = time.monotonic()
    gap, due = 0.0, start
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        data = rng.randbytes(chunk)
        s.sendall(data)
        h.update(data)
        n += len(data)
        done = time.monotonic()
        gap = max(gap, done - last)
        last = done
        due = max(due + chunk / rate, done)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    gap = max(gap, time.monotonic() - last)
    s.close()
    print(h.hexdigest(), n, f"{gap:.3f}")


def tcp_serve(port, nbytes, seed, outfile):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(1)
    s.settimeout(60)
    c, peer = s.accept()
    h = hashlib.sha256()
    for chunk in stream(nbytes, seed):
        h.update(chunk)
        c.sendall(chunk)
    c.close()
    open(outfile, "w").write(f"{h.hexdigest()} {nbytes} {peer[0]}\n")


def tcp_fetch(host, port):
    s = socket.create_connection((host, int(port)), timeout=60)
    h, n = hashlib.sha256(), 0
    while True:
        d = s.recv(65536)
        if not d:
            break
        h.update(d)
        n += len(d)
    print(h.hexdigest(), n)


def udp_echo(port, count, outfile):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    s.settimeout(30)
    peers = set()
    try:
        for _ in range(int(count)):
            d, peer = s.recvfrom(65536)
            peers.add(peer[0])
            s.sendto(d, peer)
    except socket.timeout:
        pass
    open(outfile, "w").write(" ".join(sorted(peers)) + "\n")


def udp_ping(host, port, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    got = 0
    for i in range(int(count)):
        msg = struct.pack("!I", i) + b"x" * 100
        s.sendto(msg, (host, int(port)))
        try:
            d, _ = s.recvfrom(65536)
            got += d == msg
        except socket.timeout:
            pass
    print(got)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF


def ip(src, dst, proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def ipip_inject(src, dst, inner_src, inner_dst):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x5EC, 1) + b"spoofed"
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    pkt = ip(src, dst, 4, ip(inner_src, inner_dst, 1, icmp))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(pkt, (dst, 0))


def metric(url, name, labels=""):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    want = name + ("{" + labels + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            print(line.split()[-1])
            return
    print("absent")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"tcp-sink": tcp_sink, "tcp-send": tcp_send,
     "tcp-paced-send": tcp_paced_send, "tcp-serve": tcp_serve, "tcp-fetch": tcp_fetch,
     "udp-echo": udp_echo, "udp-ping": udp_ping, "ipip-inject": ipip_inject, "metric": metric}[cmd](*args)
