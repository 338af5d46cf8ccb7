#!/usr/bin/env python3
"""Writes the committed input captures for the golden replay tests and the README example.

Deterministic (no randomness, fixed timestamps), standard library only, so anyone can check
what the inputs contain and regenerate them:  python3 scripts/make-fixtures.py

Every packet is a raw IPv4 datagram (pcap link type 101 / LINKTYPE_RAW) as a workload would
hand it to the TUN device: valid header checksum, TTL already decremented by the host.
"""
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_TIME = 1_764_000_000  # fixed capture time


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def addr(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ipv4(src, dst, proto, payload, ttl=63, tos=0, df=True, ident=0x1234, options=b"", mf=False, offset=0):
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(payload)
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | offset
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, total, ident, flags, ttl, proto, 0, addr(src), addr(dst)) + options
    c = csum(hdr)
    hdr = hdr[:10] + struct.pack("!H", c) + hdr[12:]
    return hdr + payload


def icmp_echo(ident=0x42, seq=1, data=b"swift-ipip ping payload!"):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    c = csum(body)
    return body[:2] + struct.pack("!H", c) + body[4:]


def l4_pseudo(src, dst, proto, seg):
    return addr(src) + addr(dst) + struct.pack("!BBH", 0, proto, len(seg))


def udp(src, dst, sport, dport, data):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    c = csum(l4_pseudo(src, dst, 17, seg) + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def tcp(src, dst, sport, dport, flags, seq=1000, ack=0, data=b""):
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0) + data
    c = csum(l4_pseudo(src, dst, 6, seg) + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def ipv6_packet():
    # An IPv6 router solicitation, as the kernel sends on a fresh TUN.
    payload = bytes([133, 0, 0, 0, 0, 0, 0, 0])
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), 58, 255, b"\xfe\x80" + b"\0" * 13 + b"\x01",
                       b"\xff\x02" + b"\0" * 13 + b"\x02") + payload


def write_pcap(path, packets):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 101))
        for i, p in enumerate(packets):
            f.write(struct.pack("<IIII", BASE_TIME + i // 10, (i % 10) * 100_000, len(p), len(p)))
            f.write(p)
    print("wrote", os.path.relpath(path, ROOT), len(packets), "packets")


def mode_case(remote_same, remote_other):
    """Traffic from node-a's workloads to a same-subnet peer and to another-subnet peer."""
    w = "192.168.0.10"
    return [
        ipv4(w, remote_same, 1, icmp_echo(seq=1)),
        ipv4(w, remote_other, 1, icmp_echo(seq=2)),
        ipv4(w, remote_same, 17, udp(w, remote_same, 40000, 7000, b"udp to the same subnet")),
        ipv4(w, remote_other, 6, tcp(w, remote_other, 40001, 80, 0x02), tos=0x2A),  # AF11|ECT(0)
        ipv4(w, remote_other, 6, tcp(w, remote_other, 40001, 80, 0x10, data=b"x" * 100), tos=0xBB),  # EF|CE
    ]


def edge_case():
    w = "192.168.0.10"
    peer = "192.168.1.20"
    big = bytes(range(256)) * 12  # 3072 bytes of payload
    return [
        ipv4(w, "192.168.200.5", 1, icmp_echo(seq=10)),                      # in the pool, no block: no route
        ipv4(w, peer, 1, icmp_echo(seq=11), ttl=0),                           # TTL 0
        ipv4(w, peer, 17, udp(w, peer, 40002, 9000, b"d" * 1453), df=True),   # 1481 bytes, DF=1: too big
        ipv4(w, peer, 17, udp(w, peer, 40002, 9000, b"e" * 1452), df=True),   # 1480 bytes: fits exactly
        ipv4(w, peer, 17, udp(w, peer, 40003, 9000, big), df=False, ident=0x7777),  # DF=0, 3100 bytes: fragmented
        ipv6_packet(),                                                        # not IPv4: skipped
        ipv4(w, peer, 4, ipv4("192.168.0.11", "192.168.1.21", 1, icmp_echo())),  # workload-originated IPIP
        ipv4("10.0.0.1", peer, 1, icmp_echo(seq=12)),                         # source = our node IP
        ipv4(w, "203.0.113.10", 6, tcp(w, "203.0.113.10", 40004, 443, 0x02)),  # outside every pool
        ipv4(w, "192.168.0.20", 1, icmp_echo(seq=13)),                        # local block
        ipv4(w, "192.168.1.1", 1, icmp_echo(seq=14)),                         # peer's tunnel address
        ipv4(w, peer, 1, icmp_echo(seq=15), ttl=1),                           # TTL 1 is still forwarded
        ipv4(w, peer, 17, udp(w, peer, 40005, 9000, b"o" * 1500), df=True,    # DF=1 too big, with a
             options=bytes([0x94, 0x04, 0, 0])),                              # copied option (Router Alert)
        ipv4(w, peer, 17, udp(w, peer, 40006, 9000, b"f" * 2000), df=False,   # DF=0 with a copied and
             options=bytes([0x94, 0x04, 0, 0, 0x07, 0x07, 0x04, 0, 0, 0, 0, 0])),  # a non-copied option (RR)
        ipv4(w, "224.0.0.5", 89, b"\0" * 20),                                 # multicast destination
    ]


def example():
    """The README example: workloads on node-a talking to the other nodes and the outside."""
    w1, w2 = "192.168.0.10", "192.168.0.11"
    b, c = "192.168.1.20", "192.168.2.30"
    pkts = []
    for s in range(1, 4):
        pkts.append(ipv4(w1, b, 1, icmp_echo(ident=0x100, seq=s)))
        pkts.append(ipv4(w2, c, 1, icmp_echo(ident=0x200, seq=s)))
    pkts.append(ipv4(w1, b, 6, tcp(w1, b, 41000, 8080, 0x02)))
    pkts.append(ipv4(w1, b, 6, tcp(w1, b, 41000, 8080, 0x10, seq=1001, ack=5001)))
    pkts.append(ipv4(w1, b, 6, tcp(w1, b, 41000, 8080, 0x18, seq=1001, ack=5001, data=b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")))
    pkts.append(ipv4(w2, c, 17, udp(w2, c, 42000, 53, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")))
    pkts.append(ipv4(w2, "203.0.113.10", 6, tcp(w2, "203.0.113.10", 43000, 443, 0x02)))
    pkts.append(ipv4(w1, c, 17, udp(w1, c, 44000, 9000, bytes(range(256)) * 8), df=False, ident=0x4242))
    return pkts


def main():
    fx = os.path.join(ROOT, "Tests", "Fixtures", "golden")
    write_pcap(os.path.join(fx, "always", "input.pcap"), mode_case("192.168.1.20", "192.168.2.30"))
    write_pcap(os.path.join(fx, "crosssubnet", "input.pcap"), mode_case("192.168.1.20", "192.168.2.30"))
    write_pcap(os.path.join(fx, "never", "input.pcap"), mode_case("192.168.1.20", "192.168.2.30"))
    write_pcap(os.path.join(fx, "edge-cases", "input.pcap"), edge_case())
    write_pcap(os.path.join(ROOT, "examples", "workload-traffic.pcap"), example())
    return 0


if __name__ == "__main__":
    sys.exit(main())
