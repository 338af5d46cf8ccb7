#!/usr/bin/env python3
"""Tools for scripts/interop (standard library only): crafted packets, captures, checks.

Addresses (scripts/interop): our node 172.29.0.1 (netns -a, uplink eth0), the kernel peer (VM)
172.29.0.2, our workload 10.99.1.10, the VM's tunnel address 10.99.2.1. The VM's tap and our
uplink's veth are bridged in netns -h, which is where frames are injected and captured.

  interop.py http-get URL BYTES CHAR           fetch, check length and that every byte is CHAR
  interop.py tcp-echo HOST PORT BYTES SEED     send BYTES, read them back, compare sha256
  interop.py udp-refused HOST PORT COUNT       COUNT datagrams to a closed port: count ICMP port-unreachables
  interop.py ping-tos HOST TOS COUNT           ICMP echo with TOS; prints the TOS of each reply
  interop.py wire-check PCAP [--ttl 64] [--expect-plain N]   outer fields of everything on the tap
  interop.py ecn-matrix IFACE SIDE DSTMAC SRCMAC  inject the 16 outer x inner ECN cases, print the
                                               decapsulated inner ECN as seen in the echo replies
  interop.py inject IFACE DSTMAC SRCMAC HEX    one frame
  interop.py frag-needed-to-kernel IFACE DSTMAC SRCMAC MTU   ICMP 3/4 from 172.29.0.1 quoting a VM packet
  interop.py frag-needed-to-us IFACE DSTMAC SRCMAC MTU       ICMP 3/4 from 172.29.0.2 quoting one of ours
  interop.py df-probe IFACE DSTMAC SRCMAC SIZE  plain DF packet 172.29.0.1 -> 10.99.1.10 to the VM
  interop.py diff-send-ours / diff-send-kernel ...  the differential's inner packets (see main)
  interop.py diff-table PCAP_OURS PCAP_KERNEL MODE  compare field by field; exit 1 on unexplained
"""
import hashlib
import os
import random
import select
import socket
import struct
import sys
import threading
import time
import urllib.request

NODE, PEER = "172.29.0.1", "172.29.0.2"
WORKLOAD, PEER_TUN = "10.99.1.10", "10.99.2.1"
ECN_NAMES = ["Not-ECT", "ECT(1)", "ECT(0)", "CE"]
ECN_OF = {"Not-ECT": 0, "ECT(1)": 1, "ECT(0)": 2, "CE": 3}


def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF


def ipv4(src, dst, proto, payload, tos=0, ttl=64, df=True, ident=None):
    ident = random.randrange(1, 65536) if ident is None else ident
    h = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, 0x4000 if df else 0, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def icmp_echo(ident, seq, data=b"interop"):
    m = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]


def udp(src, dst, sport, dport, data):
    u = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(u))
    c = csum(pseudo + u) or 0xFFFF
    return u[:6] + struct.pack("!H", c) + u[8:]


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def inject(iface, dstmac, srcmac, packet):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    s.send(mac(dstmac) + mac(srcmac) + b"\x08\x00" + packet)
    s.close()


def sniffer(iface):
    # ETH_P_ALL: on a bridge port, protocol-specific packet sockets never see received frames
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


def sniff(s, seconds, stop=None):
    out, end = [], time.time() + seconds
    while time.time() < end:
        r, _, _ = select.select([s], [], [], max(0.0, end - time.time()))
        if not r:
            break
        f = s.recv(65535)
        if len(f) > 34 and f[12:14] == b"\x08\x00":
            out.append(f[14:])
        if stop and stop(out):
            break
    return out


# --- parsing -------------------------------------------------------------------------------------

def parse_ip(p):
    if len(p) < 20 or p[0] >> 4 != 4:
        return None
    ihl = (p[0] & 15) * 4
    tl, ident, frag, ttl, proto, ck = struct.unpack("!HHHBBH", p[2:12])
    return {"ihl": ihl, "tos": p[1], "len": tl, "id": ident, "df": bool(frag & 0x4000),
            "mf": bool(frag & 0x2000), "off": frag & 0x1FFF, "ttl": ttl, "proto": proto,
            "ck_ok": csum(p[:ihl]) == 0, "src": socket.inet_ntoa(p[12:16]), "dst": socket.inet_ntoa(p[16:20]),
            "payload": p[ihl:tl]}


def read_pcap(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    e = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(e + "I", data[20:24])[0]
    off, out = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype == 1:
            if frame[12:14] != b"\x08\x00":
                continue
            frame = frame[14:]
        out.append(frame)
    return out


# --- traffic tools -------------------------------------------------------------------------------

def http_get(url, nbytes, char):
    body = urllib.request.urlopen(url, timeout=30).read()
    ok = len(body) == int(nbytes) and body == char.encode() * int(nbytes)
    print(f"{len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()[:16]}, content {'ok' if ok else 'WRONG'}")
    sys.exit(0 if ok else 1)


def tcp_echo(host, port, nbytes, seed):
    rng = random.Random(int(seed))
    data = rng.randbytes(int(nbytes))
    s = socket.create_connection((host, int(port)), timeout=30)
    got = bytearray()

    def reader():
        while len(got) < len(data):
            d = s.recv(65536)
            if not d:
                break
            got.extend(d)
    t = threading.Thread(target=reader)
    t.start()
    s.sendall(data)
    t.join(60)
    s.close()
    a, b = hashlib.sha256(data).hexdigest(), hashlib.sha256(bytes(got)).hexdigest()
    print(f"sent {len(data)} sha256 {a[:16]}, echoed {len(got)} sha256 {b[:16]}")
    sys.exit(0 if a == b else 1)


def udp_refused(host, port, count):
    got = 0
    for i in range(int(count)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.connect((host, int(port)))
        s.send(b"interop %d" % i)
        try:
            s.recv(100)
        except ConnectionRefusedError:
            got += 1
        except socket.timeout:
            pass
        s.close()
    print(got)


def ping_tos(host, tos, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, int(tos, 0))
    s.settimeout(2)
    ident = os.getpid() & 0xFFFF
    out = []
    for seq in range(int(count)):
        s.sendto(icmp_echo(ident, seq), (host, 0))
        end = time.time() + 2
        while time.time() < end:
            try:
                p = s.recv(2000)
            except socket.timeout:
                break
            ip = parse_ip(p)
            pl = ip["payload"]
            if ip["src"] == host and pl[0] == 0 and struct.unpack("!HH", pl[4:8]) == (ident, seq):
                out.append("0x%02x" % ip["tos"])
                break
        else:
            out.append("none")
    print(" ".join(out))


# --- the wire ------------------------------------------------------------------------------------

def wire_check(path, ttl=64, expect_plain=0, inner_net="10.99."):
    """Every packet on the tap: ours (172.29.0.1 > .2 proto 4) must carry the promised outer header;
    no workload address may cross unencapsulated (unless expect_plain); no ICMP unreachable from us."""
    pkts = [parse_ip(p) for p in read_pcap(path)]
    ours = kern = plain = bad = unreach = 0
    ids = set()
    problems = []
    for ip in pkts:
        if ip is None:
            continue
        if ip["proto"] == 4:
            inner = parse_ip(ip["payload"])
            if ip["src"] == NODE:
                ours += 1
                ids.add(ip["id"])
                why = []
                if ip["ihl"] != 20: why.append("IHL")
                if not ip["df"]: why.append("DF=0")
                if ip["mf"] or ip["off"]: why.append("fragment")
                if ip["ttl"] != ttl: why.append("TTL %d" % ip["ttl"])
                if not ip["ck_ok"]: why.append("checksum")
                if inner is None or ip["len"] != inner["len"] + 20: why.append("length")
                elif ip["tos"] != inner["tos"]: why.append("TOS 0x%02x vs inner 0x%02x" % (ip["tos"], inner["tos"]))
                if ip["dst"] != PEER: why.append("dst " + ip["dst"])
                if why:
                    bad += 1
                    problems.append(" ".join(why))
            elif ip["src"] == PEER:
                kern += 1
        elif ip["src"].startswith(inner_net) or ip["dst"].startswith(inner_net):
            plain += 1
        if ip["proto"] == 1 and ip["src"] == NODE and ip["payload"][:1] == b"\x03":
            unreach += 1
            problems.append("ICMP 3/%d from us" % ip["payload"][1])
    print(f"on the tap: {ours} IP-in-IP from us ({len(ids)} distinct IDs), {kern} from the kernel, "
          f"{plain} plain workload packets, {bad} of ours with wrong outer fields, {unreach} ICMP unreachable from us")
    for p in sorted(set(problems))[:10]:
        print("  ", p)
    ok = bad == 0 and unreach == 0 and ours > 0 and (plain == expect_plain if expect_plain >= 0 else True)
    if expect_plain == 0:
        ok = ok and kern > 0
    sys.exit(0 if ok else 1)


def native_check(path):
    """CrossSubnet: nothing encapsulated either way, native workload packets both ways."""
    pkts = [p for p in (parse_ip(x) for x in read_pcap(path)) if p]
    enc = sum(1 for p in pkts if p["proto"] == 4)
    to_vm = sum(1 for p in pkts if p["proto"] != 4 and p["src"] == WORKLOAD)
    from_vm = sum(1 for p in pkts if p["proto"] != 4 and p["dst"] == WORKLOAD)
    print(f"IP-in-IP: {enc}, native from our workload: {to_vm}, native from the kernel to it: {from_vm}")
    sys.exit(0 if enc == 0 and to_vm > 0 and from_vm > 0 else 1)


# --- ECN -----------------------------------------------------------------------------------------

def ecn_matrix(iface, side, dstmac, srcmac):
    """side=kernel: frames go to the VM (outer NODE > PEER, inner WORKLOAD > PEER_TUN);
    side=ours: frames go to our uplink (outer PEER > NODE, inner PEER_TUN > WORKLOAD).
    The echo reply's inner TOS is the receiver's decapsulated TOS (Linux copies the request's TOS)."""
    if side == "kernel":
        osrc, odst, isrc, idst = NODE, PEER, WORKLOAD, PEER_TUN
    else:
        osrc, odst, isrc, idst = PEER, NODE, PEER_TUN, WORKLOAD
    cap_if = os.environ.get("CAPTURE_IF", iface)
    sn = sniffer(cap_if)
    ident = 0x6040 + (side == "ours")
    for o in range(4):
        for i in range(4):
            seq = o * 4 + i
            inner = ipv4(isrc, idst, 1, icmp_echo(ident, seq), tos=0x28 | i, ttl=64, df=False)
            inject(iface, dstmac, srcmac, ipv4(osrc, odst, 4, inner, tos=0x28 | o, ttl=64))
            time.sleep(0.02)
    got = {}
    for p in sniff(sn, 3.0):
        ip = parse_ip(p)
        if not ip or ip["proto"] != 4 or ip["src"] != odst:
            continue
        inner = parse_ip(ip["payload"])
        if inner and inner["proto"] == 1 and inner["payload"][0] == 0:
            rid, rseq = struct.unpack("!HH", inner["payload"][4:8])
            if rid == ident:
                got[rseq] = (inner["tos"], ip["tos"])
    print("outer \\ inner | " + " | ".join(ECN_NAMES))
    for o in range(4):
        cells = []
        for i in range(4):
            r = got.get(o * 4 + i)
            cells.append("dropped" if r is None else ECN_NAMES[r[0] & 3] + (" (DSCP lost)" if r[0] >> 2 != 0x0A else ""))
        print(ECN_NAMES[o] + " | " + " | ".join(cells))


# --- PMTU ----------------------------------------------------------------------------------------

def frag_needed(iface, dstmac, srcmac, mtu, to_kernel):
    # the quoted packet: an outer header the receiver sent, plus 8 bytes of its payload
    if to_kernel:
        qsrc, qdst, src, dst, isrc, idst = PEER, NODE, NODE, PEER, PEER_TUN, WORKLOAD
    else:
        qsrc, qdst, src, dst, isrc, idst = NODE, PEER, PEER, NODE, WORKLOAD, PEER_TUN
    inner = ipv4(isrc, idst, 6, b"\0" * 1460, ttl=64)
    quoted = ipv4(qsrc, qdst, 4, inner, ttl=64)[:20 + 28]
    m = struct.pack("!BBHHH", 3, 4, 0, 0, int(mtu)) + quoted
    m = m[:2] + struct.pack("!H", csum(m)) + m[4:]
    inject(iface, dstmac, srcmac, ipv4(src, dst, 1, m, tos=0xC0, df=False))


def df_probe(iface, dstmac, srcmac, size):
    """A plain DF UDP packet of SIZE bytes 172.29.0.1 > 10.99.1.10 handed to the VM, which forwards it into its
    tunnel: print what comes back on the tap (ICMP frag-needed with its MTU, or the encapsulated packet)."""
    size = int(size)
    sn = sniffer(iface)
    pkt = ipv4(NODE, WORKLOAD, 17, udp(NODE, WORKLOAD, 40000, 9, b"p" * (size - 28)), ttl=64, df=True)
    inject(iface, dstmac, srcmac, pkt)
    for p in sniff(sn, 2.0):
        ip = parse_ip(p)
        if not ip or ip["src"] != PEER:
            continue
        if ip["proto"] == 1 and ip["payload"][0] == 3 and ip["payload"][1] == 4:
            print("frag-needed mtu", struct.unpack("!H", ip["payload"][6:8])[0])
            return
        if ip["proto"] == 4 and ip["len"] == size + 20:
            print("encapsulated outer length", ip["len"], "DF", int(ip["df"]))
            return
    print("nothing")


# --- differential --------------------------------------------------------------------------------

DIFF_CASES = [  # name, inner TOS, DF, TTL
    ("plain", 0x00, False, 20), ("DF", 0x00, True, 20), ("EF (0xb8) DF", 0xB8, True, 20),
    ("ECT(0)", 0x02, True, 20), ("ECT(1)", 0x01, True, 20), ("CE", 0x03, True, 20),
    ("AF11+CE (0x2b)", 0x2B, False, 20), ("TTL 200", 0x00, True, 200),
]
DIFF_DST = "10.99.2.50"


def diff_packet(n):
    name, tos, df, ttl = DIFF_CASES[n]
    data = b"interop-diff-%02d " % n + b"z" * 64
    return ipv4(WORKLOAD, DIFF_DST, 17, udp(WORKLOAD, DIFF_DST, 40001, 9999, data), tos=tos, ttl=ttl, df=df, ident=0x1000 + n)


def diff_send_ours():
    # from the workload: the host forwards it (TTL - 1) into our TUN; ipipd encapsulates it
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for n in range(len(DIFF_CASES)):
        s.sendto(diff_packet(n), (DIFF_DST, 0))
        time.sleep(0.05)


def diff_send_kernel(iface, dstmac, srcmac):
    # to the VM, plain: it forwards it (TTL - 1) into its tunnel device
    for n in range(len(DIFF_CASES)):
        inject(iface, dstmac, srcmac, diff_packet(n))
        time.sleep(0.05)


def diff_collect(path, src):
    out = {}
    for p in read_pcap(path):
        ip = parse_ip(p)
        if not ip or ip["proto"] != 4 or ip["src"] != src:
            continue
        inner = parse_ip(ip["payload"])
        if inner and inner["dst"] == DIFF_DST and b"interop-diff-" in inner["payload"]:
            n = int(inner["payload"][8 + 13:8 + 15])
            out.setdefault(n, (ip, ip["payload"]))
    return out


def diff_table(ours_pcap, kernel_pcap, mode):
    ours, kern = diff_collect(ours_pcap, NODE), diff_collect(kernel_pcap, PEER)
    unexplained = []
    print(f"| inner packet | inner TOS/DF/TTL after 1 hop | ours: outer TOS DF TTL ID | kernel ({mode}): outer TOS DF TTL ID | inner identical |")
    print("|---|---|---|---|---|")
    for n, (name, tos, df, ttl) in enumerate(DIFF_CASES):
        if n not in ours or n not in kern:
            print(f"| {name} | missing: ours={n in ours} kernel={n in kern} | | | |")
            unexplained.append(f"{name}: missing")
            continue
        (o, oi), (k, ki) = ours[n], kern[n]
        inner = parse_ip(oi)
        same = oi == ki
        f = lambda ip: "0x%02x %d %d %s" % (ip["tos"], ip["df"], ip["ttl"], "0x%04x" % ip["id"])
        print(f"| {name} | 0x{inner['tos']:02x}/{int(inner['df'])}/{inner['ttl']} | {f(o)} | {f(k)} | {'yes' if same else 'NO'} |")
        # every difference must be one of the explained ones (docs/interop.md)
        exp_ours = (inner["tos"], True, 64)
        ecn = inner["tos"] & 3
        exp_kern = ((2 if ecn == 3 else ecn), True if mode == "ipip1" else inner["df"], inner["ttl"])
        for who, ip, exp in (("ours", o, exp_ours), ("kernel", k, exp_kern)):
            if (ip["tos"], ip["df"], ip["ttl"]) != exp:
                unexplained.append(f"{name}: {who} outer TOS/DF/TTL {ip['tos']:#x}/{ip['df']}/{ip['ttl']}, expected {exp}")
            if ip["ihl"] != 20 or not ip["ck_ok"] or ip["len"] != len(oi) + 20 or ip["mf"] or ip["off"]:
                unexplained.append(f"{name}: {who} outer header malformed")
        if not same:
            unexplained.append(f"{name}: inner packets differ")
    for u in unexplained:
        print("UNEXPLAINED:", u)
    sys.exit(1 if unexplained else 0)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "http-get": http_get(*a)
    elif cmd == "tcp-echo": tcp_echo(*a)
    elif cmd == "udp-refused": udp_refused(*a)
    elif cmd == "ping-tos": ping_tos(*a)
    elif cmd == "wire-check":
        ttl, plain = 64, 0
        if "--expect-plain" in a: plain = int(a[a.index("--expect-plain") + 1])
        wire_check(a[0], ttl, plain)
    elif cmd == "native-check": native_check(a[0])
    elif cmd == "ecn-matrix": ecn_matrix(*a)
    elif cmd == "inject": inject(a[0], a[1], a[2], bytes.fromhex(a[3]))
    elif cmd == "frag-needed-to-kernel": frag_needed(*a, to_kernel=True)
    elif cmd == "frag-needed-to-us": frag_needed(*a, to_kernel=False)
    elif cmd == "df-probe": df_probe(*a)
    elif cmd == "diff-send-ours": diff_send_ours()
    elif cmd == "diff-send-kernel": diff_send_kernel(*a)
    elif cmd == "diff-table": diff_table(*a)
    else:
        sys.exit("unknown command " + cmd)
