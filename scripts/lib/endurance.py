#!/usr/bin/env python3
"""Traffic and measurement tools of the endurance tests (scripts/endurance; standard library only).

  endurance.py udp-stream HOST PORT SECONDS PPS SIZE   send sequenced SIZE-byte IP packets (UDP) at PPS
                                                    for SECONDS from one socket; prints "sent N"
  endurance.py udp-recv PORT SECONDS OUTFILE        receive them for SECONDS: JSON summary in OUTFILE
                                                    (count, lost, longest gap between arrivals and when)
  endurance.py udp-echo-log PORT IDLE OUTFILE       echo every datagram until none came for IDLE s;
                                                    JSON in OUTFILE: datagrams, the peers' ports, and
                                                    per source address its datagrams and ports
  endurance.py udp-exhaust HOST PORT FLOWS SOURCE BURST WAIT KEEP
                                                    the NAT exhaustion client (see udp_exhaust); JSON on stdout
  endurance.py proc-sample PID SECONDS OUTFILE      RSS (KiB) and open descriptors of PID every 0.5 s
  endurance.py flat FILE WARMUP RSS_KIB FDS         exit 0 when after WARMUP seconds the samples in FILE
                                                    grow by at most RSS_KIB KiB and FDS descriptors
  endurance.py json FILE KEY                        print one field of a JSON file
  endurance.py reload-loop FILE SECONDS INTERVAL PID...
                                                    every INTERVAL s: the next soak topology into FILE
                                                    and SIGHUP to the PIDs; prints "WRITES SECONDS"
  endurance.py soak-manifests STEP                  the soak's topology number STEP (examples/cluster.yaml,
                                                    its mode and an extra block of node-b varied by STEP)
"""
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nettools  # noqa: E402

MAGIC = b"IPEN"


def udp_stream(host, port, seconds, pps, size):
    """One socket, one flow: datagrams carrying MAGIC, a sequence number and padding, so that each
    IP packet is SIZE bytes (20 IP + 8 UDP + payload), paced at PPS for SECONDS. A send that
    fails (ENOBUFS, an ICMP error reported on the socket) is counted as sent and goes on."""
    seconds, pps, payload = float(seconds), int(pps), max(8, int(size) - 28)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, int(port)))
    pad = b"\0" * (payload - 8)
    start = time.monotonic()
    n = 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        due = start + n / pps
        if due > now:
            time.sleep(due - now)
        try:
            s.send(MAGIC + struct.pack("!I", n) + pad)
        except OSError:
            pass
        n += 1
    print("sent", n)


def gap_summary(arrivals):
    """arrivals: (time, sequence) in arrival order. The count, the distinct sequence numbers, the
    highest one, the numbers missing below it, and the longest gap between two consecutive
    arrivals with the time (relative to the first arrival) at which it began."""
    if not arrivals:
        return {"received": 0, "distinct": 0, "highest": -1, "lost": 0, "longest_gap": None, "gap_at": None}
    seen = {seq for _, seq in arrivals}
    highest = max(seen)
    first = arrivals[0][0]
    gap, at = 0.0, 0.0
    for (t0, _), (t1, _) in zip(arrivals, arrivals[1:]):
        if t1 - t0 > gap:
            gap, at = t1 - t0, t0 - first
    return {"received": len(arrivals), "distinct": len(seen), "highest": highest,
            "lost": highest + 1 - len(seen), "longest_gap": round(gap, 4), "gap_at": round(at, 3)}


def udp_recv(port, seconds, outfile):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", int(port)))
    end = time.monotonic() + float(seconds)
    arrivals = []
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if len(d) >= 8 and d[:4] == MAGIC:
            arrivals.append((time.monotonic(), struct.unpack("!I", d[4:8])[0]))
    with open(outfile, "w") as f:
        json.dump(gap_summary(arrivals), f)


def udp_echo_log(port, idle, outfile):
    """Echoes every datagram until none came for IDLE seconds, writing after each one (so the
    file is current whenever it is read): the number of datagrams, the sorted source ports, and
    per source address its datagrams and ports."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", int(port)))
    s.settimeout(float(idle))
    ports, sources, n, written = set(), {}, 0, 0.0

    def save():
        write_json(outfile, {"datagrams": n, "ports": sorted(ports),
                             "sources": {a: {"datagrams": c, "ports": sorted(p)} for a, (c, p) in sources.items()}})

    while True:
        try:
            d, peer = s.recvfrom(65536)
        except socket.timeout:
            break
        n += 1
        ports.add(peer[1])
        count, seen = sources.get(peer[0], (0, set()))
        seen.add(peer[1])
        sources[peer[0]] = (count + 1, seen)
        s.sendto(d, peer)
        if n <= 5000 or time.monotonic() - written > 0.1:
            written = time.monotonic()
            save()
    save()


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def exchange(socks, indices, host, port, tag, wait):
    """Each socket in `indices` sends one datagram "TAG i", 1 ms apart (so the first get the NAT's
    ports first); then echoes are collected for `wait` seconds. Returns the indices answered with
    their own datagram and the number of ICMP errors the sockets reported."""
    sel = selectors.DefaultSelector()
    for i in indices:
        sel.register(socks[i], selectors.EVENT_READ, i)
    errors = 0
    for i in indices:
        try:
            socks[i].sendto(("%s %d" % (tag, i)).encode(), (host, port))
        except OSError:
            errors += 1
        time.sleep(0.001)
    answered = set()
    end = time.monotonic() + wait
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.1):
            i = key.data
            try:
                d = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                errors += 1   # an ICMP error queued on the socket (IP_RECVERR is off: EHOSTUNREACH)
                continue
            if d == ("%s %d" % (tag, i)).encode():
                answered.add(i)
    sel.close()
    return sorted(answered), errors


def udp_exhaust(host, port, flows, source, burst, wait, keep):
    """The NAT exhaustion client. FLOWS sockets bound to SOURCE (one workload), each its own UDP
    flow to HOST:PORT.
      round 1:  every flow sends one datagram, in order: the first KEEP ones should get the NAT's
                ports (and echoes), the others be dropped (ports exhausted, ICMP 3/13).
      burst:    the flows without an echo send BURST datagrams each, back to back (drops that
                the ICMP rate limit must hold back).
      round 2:  the first KEEP flows send again: their mappings still stand.
      (silence for WAIT seconds: every mapping's timeout passes)
      round 3:  the next KEEP flows (KEEP..2*KEEP-1) send: the expired ports are handed out again.
    Prints JSON: the answered flow indices of each round, the socket errors seen, and the burst's
    size, length and start (Unix time, the clock of tcpdump -tt)."""
    flows, port, burst, wait, keep = int(flows), int(port), int(burst), float(wait), int(keep)
    nettools.more_files(flows)
    socks = []
    for _ in range(flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source, 0))
        s.setblocking(False)
        socks.append(s)
    result = {}
    answered, errors = exchange(socks, range(flows), host, port, "r1", 2.0)
    result["round1"], result["round1_errors"] = answered, errors
    t0, wall = time.monotonic(), time.time()
    rest = [i for i in range(flows) if i not in set(answered)]
    sent = 0
    for _ in range(burst):
        for i in rest:
            try:
                socks[i].sendto(b"burst", (host, port))
                sent += 1
            except OSError:
                pass
    result["burst_sent"], result["burst_seconds"] = sent, round(time.monotonic() - t0, 3)
    result["burst_start"] = wall
    time.sleep(0.5)
    answered, errors = exchange(socks, range(min(keep, flows)), host, port, "r2", 2.0)
    result["round2"], result["round2_errors"] = answered, errors
    time.sleep(wait)
    answered, errors = exchange(socks, range(keep, min(2 * keep, flows)), host, port, "r3", 2.0)
    result["round3"], result["round3_errors"] = answered, errors
    print(json.dumps(result))


def proc_sample(pid, seconds, outfile):
    """Every 0.5 s for SECONDS: the time since the start, VmRSS in KiB and the number of open
    descriptors of PID, one line each; stops early when the process is gone."""
    start = time.monotonic()
    with open(outfile, "w") as out:
        while time.monotonic() - start < float(seconds):
            try:
                with open("/proc/%s/status" % pid) as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
                fds = len(os.listdir("/proc/%s/fd" % pid))
            except (OSError, StopIteration):
                break
            out.write("%.2f %d %d\n" % (time.monotonic() - start, rss, fds))
            out.flush()
            time.sleep(0.5)


def flatness(samples, warmup):
    """samples: (seconds, rss KiB, descriptors). After `warmup` seconds: the RSS at the first such
    sample and its growth to the highest later one; for descriptors, which a reload holds open for
    a moment (a netlink socket, the pipes of `nft`), the growth from the fewest in the first three
    samples to the fewest in the last three, so a leak shows and a passing socket does not. None
    when fewer than six samples are after the warm-up."""
    after = [s for s in samples if s[0] >= warmup]
    if len(after) < 6:
        return None
    first, last = min(s[2] for s in after[:3]), min(s[2] for s in after[-3:])
    return {"samples": len(after), "rss_start": after[0][1], "rss_growth": max(s[1] for s in after) - after[0][1],
            "fds_start": first, "fds_growth": last - first}


def flat(path, warmup, rss_kib, fds):
    with open(path) as f:
        samples = [tuple(float(x) for x in line.split()) for line in f if line.strip()]
    r = flatness(samples, float(warmup))
    if r is None:
        print("no samples after %s s of warm-up in %s" % (warmup, path))
        sys.exit(1)
    print("after %s s: %d samples, RSS %d KiB + %d KiB (bound %s), descriptors %d + %d (bound %s)"
          % (warmup, r["samples"], r["rss_start"], r["rss_growth"], rss_kib, r["fds_start"], r["fds_growth"], fds))
    sys.exit(0 if r["rss_growth"] <= float(rss_kib) and r["fds_growth"] <= float(fds) else 1)


def json_field(path, key):
    """One field of a JSON file; KEY may be a path of fields separated by '/'. Absent: 'absent'."""
    with open(path) as f:
        value = json.load(f)
    for k in key.split("/"):
        if not isinstance(value, dict) or k not in value:
            print("absent")
            return
        value = value[k]
    print(json.dumps(value) if isinstance(value, (dict, list)) else value)


EXTRA_BLOCK = """---
apiVersion: projectcalico.org/v3
kind: BlockAffinity
metadata:
  name: node-b-192-168-1-64-26
spec:
  node: node-b
  cidr: 192.168.1.64/26
  state: confirmed
"""


def soak_manifests_text(text, step):
    """Topology STEP of the soak: the pool CrossSubnet on odd steps and Always on even ones;
    node-b's second block 192.168.1.64/26 present when STEP % 4 is 0 or 1, absent otherwise, so
    both change, out of phase."""
    step = int(step)
    out = nettools.select_manifests(text, "CrossSubnet" if step % 2 else "Always")
    if step % 4 in (0, 1):
        out = out.rstrip("\n") + "\n" + EXTRA_BLOCK
    return out


def reload_loop(path, seconds, interval, *pids):
    """Every INTERVAL seconds for SECONDS: topology step k (1, 2, ...) written to PATH (a new file
    renamed over it), then SIGHUP to every PID. Prints the number of writes and the last step."""
    with open(nettools.EXAMPLE_CLUSTER) as f:
        text = f.read()
    seconds, interval = float(seconds), float(interval)
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        k += 1
        tmp = path + ".next"
        with open(tmp, "w") as f:
            f.write(soak_manifests_text(text, k))
        os.replace(tmp, path)
        for pid in pids:
            os.kill(int(pid), signal.SIGHUP)
        due = start + k * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
    print(k, "%.2f" % (time.monotonic() - start))


def soak_manifests(step):
    with open(nettools.EXAMPLE_CLUSTER) as f:
        sys.stdout.write(soak_manifests_text(f.read(), step))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"udp-stream": udp_stream, "udp-recv": udp_recv, "udp-echo-log": udp_echo_log, "udp-exhaust": udp_exhaust,
     "proc-sample": proc_sample, "flat": flat, "json": json_field, "soak-manifests": soak_manifests,
     "reload-loop": reload_loop}[cmd](*args)
