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
  nettools.py udp-echo-serve PORT IDLE         echo every datagram until none came for IDLE seconds
  nettools.py tcp-echo-serve PORT IDLE         echo on every connection until none was active for IDLE s
  nettools.py udp-flows HOST PORT FLOWS SOURCES  FLOWS sockets (bound round robin to the comma-separated
                                               SOURCES addresses) each send their own datagram and
                                               wait for its echo; prints "ok wrong flows"
  nettools.py tcp-flows HOST PORT FLOWS SOURCES  the same with FLOWS TCP connections (200 at a time)
  nettools.py ipip-inject SRC DST INNER_SRC INNER_DST    one IP-in-IP packet (raw socket, as root)
  nettools.py fragneeded-inject SRC DST QUOTED_SRC QUOTED_DST MTU
                                               one ICMP frag-needed (3/4, next-hop MTU) from SRC to DST
                                               quoting an IP-in-IP header QUOTED_SRC > QUOTED_DST (raw socket)
  nettools.py udp-delayed-echo PORT DELAY      answer one datagram DELAY seconds after it came
  nettools.py udp-request HOST PORT TIMEOUT    send one datagram, print "reply" when it comes back
                                               within TIMEOUT seconds, else "none"
  nettools.py metric URL NAME [LABELS]         print the value of one Prometheus sample
  nettools.py metric-family URL NAME           print its non-zero samples as labels=value
  nettools.py cluster-manifests MODE [without|only NAME]
                                               examples/cluster.yaml with the pool's ipipMode set to
                                               MODE, optionally without (or only) the documents of
                                               NAME (a node: its Node and BlockAffinity; a block)
  nettools.py since T0 [T1]                    seconds from T0 to T1 (default now), both `date +%s.%N`
  nettools.py at-most VALUE BOUND              exit 0 when VALUE (a number) is at most BOUND
  nettools.py sleep-until T0 OFFSET            sleep until T0 + OFFSET seconds (no sleep if past)
  nettools.py ipip-phases PORT T0 MIN          read `tcpdump -tt -n` lines on stdin: the stream to or
                                               from PORT as runs of "ipip" and "native" packets;
                                               exit 0 when it went ipip, native, ipip (>= MIN each)
"""
import hashlib
import os
import re
import random
import resource
import selectors
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


def more_files(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, n + 64)) if hard != resource.RLIM_INFINITY else n + 64
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))


def udp_echo_serve(port, idle):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(float(idle))
    try:
        while True:
            d, peer = s.recvfrom(65536)
            s.sendto(d, peer)
    except socket.timeout:
        pass


def tcp_echo_serve(port, idle):
    more_files(8192)
    sel = selectors.DefaultSelector()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", int(port)))
    ls.listen(4096)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, None)
    last = time.time()
    while time.time() - last < float(idle):
        for key, _ in sel.select(timeout=0.5):
            last = time.time()
            if key.data is None:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "c")
                continue
            c = key.fileobj
            try:
                d = c.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                d = b""
            if not d:
                sel.unregister(c)
                c.close()
                continue
            c.setblocking(True)
            c.sendall(d)
            c.setblocking(False)


def udp_flows(host, port, flows, sources):
    flows = int(flows)
    more_files(flows)
    addrs = sources.split(",")
    socks = []
    for i in range(flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addrs[i % len(addrs)], 0))
        s.setblocking(False)
        socks.append(s)
    msgs = [("flow %d from %s:%d" % (i, *s.getsockname())).encode() for i, s in enumerate(socks)]
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    done = [False] * flows
    wrong = 0
    for attempt in range(4):
        for i, s in enumerate(socks):
            if not done[i]:
                try:
                    s.sendto(msgs[i], (host, int(port)))
                except BlockingIOError:
                    pass
            if i % 100 == 99:
                time.sleep(0.01)
        end = time.time() + 1.5
        while time.time() < end and not all(done):
            for key, _ in sel.select(timeout=0.2):
                i = key.data
                try:
                    d = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if d == msgs[i]:
                    done[i] = True
                else:
                    wrong += 1
        if all(done):
            break
    print(sum(done), wrong, flows)


def tcp_flows(host, port, flows, sources):
    flows = int(flows)
    more_files(flows)
    addrs = sources.split(",")
    ok = wrong = 0
    i = 0
    while i < flows:
        chunk = []
        for k in range(i, min(flows, i + 200)):
            s = socket.socket()
            s.bind((addrs[k % len(addrs)], 0))
            s.settimeout(10)
            chunk.append((k, s))
        i += len(chunk)
        live = []
        for k, s in chunk:
            try:
                s.connect((host, int(port)))
                m = ("tcp flow %d from %s:%d" % (k, *s.getsockname())).encode()
                s.sendall(m)
                live.append((s, m))
            except OSError:
                s.close()
        for s, m in live:
            got = b""
            try:
                while len(got) < len(m):
                    d = s.recv(65536)
                    if not d:
                        break
                    got += d
            except OSError:
                pass
            if got == m:
                ok += 1
            elif got:
                wrong += 1
            s.close()
    print(ok, wrong, flows)


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


def fragneeded(src, dst, quoted_src, quoted_dst, mtu):
    """An ICMP 3/4 packet from src to dst about an IP-in-IP packet quoted_src > quoted_dst."""
    quoted = ip(quoted_src, quoted_dst, 4, b"\0" * 8)
    body = struct.pack("!BBHHH", 3, 4, 0, 0, int(mtu)) + quoted
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    return ip(src, dst, 1, body)


def fragneeded_inject(src, dst, quoted_src, quoted_dst, mtu):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(fragneeded(src, dst, quoted_src, quoted_dst, mtu), (dst, 0))


def udp_delayed_echo(port, delay):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    s.settimeout(60)
    d, peer = s.recvfrom(65536)
    time.sleep(float(delay))
    s.sendto(d, peer)


def udp_request(host, port, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(float(timeout))
    s.sendto(b"flight-recorder request", (host, int(port)))
    try:
        d, _ = s.recvfrom(65536)
        print("reply" if d == b"flight-recorder request" else "wrong")
    except socket.timeout:
        print("none")


def metric(url, name, labels=""):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    want = name + ("{" + labels + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            print(line.split()[-1])
            return
    print("absent")


def metric_family(url, name):
    """Every non-zero sample of one metric family, as label=value pairs on one line."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{") and not line.endswith(" 0"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            found.append("%s=%s" % (labels.replace('"', ""), value))
    print(" ".join(found) or "none")


EXAMPLE_CLUSTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "cluster.yaml")


def select_manifests(text, mode, selection=None, name=None):
    """The example cluster's YAML with ipipMode MODE; with selection "without" or "only", the
    documents that belong to NAME left out or kept alone. A document belongs to NAME when its
    `name:` or its `node:` field is NAME: "node-c" is node-c's Node and BlockAffinity,
    "node-c-192-168-2-0-26" that BlockAffinity alone. One document per resource, as in
    examples/cluster.yaml."""
    text = text.replace("ipipMode: Always", "ipipMode: " + mode)
    if selection is None:
        return text
    if selection not in ("without", "only"):
        raise ValueError("selection must be 'without' or 'only', not %r" % selection)
    owned = re.compile(r"^\s*(name|node): %s$" % re.escape(name), re.M)
    documents = [d for d in re.split(r"^---\n", text, flags=re.M) if d.strip()]
    return "---\n".join(d for d in documents if bool(owned.search(d)) == (selection == "only"))


def cluster_manifests(mode, selection=None, name=None):
    with open(EXAMPLE_CLUSTER) as f:
        sys.stdout.write(select_manifests(f.read(), mode, selection, name))


def elapsed(t0, t1=None):
    """Seconds from t0 to t1 (now when None); both Unix times with a fraction."""
    return (time.time() if t1 is None else float(t1)) - float(t0)


def since(t0, t1=None):
    print("%.2f" % elapsed(t0, t1))


def is_at_most(value, bound):
    """True when value is a number no greater than bound (an empty or non-numeric value: False)."""
    try:
        return float(value) <= float(bound)
    except ValueError:
        return False


def at_most(value, bound):
    sys.exit(0 if is_at_most(value, bound) else 1)


def remaining(t0, offset, now):
    """Seconds left until t0 + offset at `now`; 0 once past."""
    return max(0.0, float(t0) + float(offset) - now)


def sleep_until(t0, offset):
    time.sleep(remaining(t0, offset, time.time()))


def classify_phases(lines, port, t0, minimum):
    """The packets of the stream to or from 192.168.1.20:PORT in `tcpdump -tt -n` lines, in
    capture order: "ipip" when the line's source is a node IP (10.0.0.1 or 10.0.0.2, so the
    packet is IP-in-IP between the nodes), "native" otherwise (the bare workload TCP on the
    underlay). Consecutive packets of one kind make a run; runs shorter than `minimum` (a switch,
    while the two nodes reload a few milliseconds apart) are reported together as "mixed".

    Returns (report lines, ok): ok when the runs of at least `minimum` packets hold ipip, native,
    ipip in that order."""
    marks = ("192.168.1.20.%s:" % port, "192.168.1.20.%s >" % port)
    runs, other = [], 0          # runs: [kind, count, first time, last time]
    for line in lines:
        if not any(m in line for m in marks):
            other += 1
            continue
        fields = line.split()
        kind = "ipip" if fields[2] in ("10.0.0.1", "10.0.0.2") else "native"
        when = float(fields[0])
        if runs and runs[-1][0] == kind:
            runs[-1][1] += 1
            runs[-1][3] = when
        else:
            runs.append([kind, 1, when, when])
    total = {"ipip": 0, "native": 0}
    for kind, count, _, _ in runs:
        total[kind] += count
    parts, i = [], 0
    while i < len(runs):
        kind, count, first, last = runs[i]
        if count >= minimum:
            parts.append("%s %d (%.1f-%.1f s)" % (kind, count, first - t0, last - t0))
            i += 1
            continue
        j = i
        while j < len(runs) and runs[j][1] < minimum:
            j += 1
        mixed = sum(r[1] for r in runs[i:j])
        parts.append("mixed %d in %d runs (%.1f-%.1f s)" % (mixed, j - i, runs[i][2] - t0, runs[j - 1][3] - t0))
        i = j
    report = ["capture: %d ipip, %d native, %d other packets in %d runs: %s"
              % (total["ipip"], total["native"], other, len(runs), " ".join(parts))]
    wanted, found = ["ipip", "native", "ipip"], []
    for run in runs:
        if len(found) < 3 and run[0] == wanted[len(found)] and run[1] >= minimum:
            found.append(run)
    if len(found) < 3:
        report.append("no ipip, native, ipip sequence with >= %d packets each" % minimum)
        return report, False
    report.append("phases: " + ", ".join("%s %d from %.1f s" % (r[0], r[1], r[2] - t0) for r in found))
    return report, True


def ipip_phases(port, t0, minimum):
    report, ok = classify_phases(sys.stdin, port, float(t0), int(minimum))
    print("\n".join(report))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"tcp-sink": tcp_sink, "tcp-send": tcp_send,
     "tcp-paced-send": tcp_paced_send, "tcp-serve": tcp_serve, "tcp-fetch": tcp_fetch,
     "udp-echo": udp_echo, "udp-ping": udp_ping, "udp-echo-serve": udp_echo_serve, "tcp-echo-serve": tcp_echo_serve,
     "udp-flows": udp_flows, "tcp-flows": tcp_flows, "ipip-inject": ipip_inject, "fragneeded-inject": fragneeded_inject,
     "udp-delayed-echo": udp_delayed_echo, "udp-request": udp_request, "metric": metric, "metric-family": metric_family,
     "ipip-phases": ipip_phases, "cluster-manifests": cluster_manifests, "since": since, "at-most": at_most,
     "sleep-until": sleep_until}[cmd](*args)
