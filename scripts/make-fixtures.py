#!/usr/bin/env python3
"""Writes the committed input captures for the golden replay tests and the README example.

Deterministic (no randomness, fixed timestamps), standard library only, so anyone can check
what the inputs contain and regenerate them:  python3 scripts/make-fixtures.py

Every packet is a raw IPv4 datagram (pcap link type 101 / LINKTYPE_RAW) as a workload would
hand it to the TUN device: valid header checksum, TTL already decremented by the host. The
offload cases use link type 147 instead: a virtio_net_hdr in front of each packet, as a TUN with
IFF_VNET_HDR (or a packet socket with PACKET_VNET_HDR) hands it over.
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


def write_pcap(path, packets, times=None):
    """Writes raw-IPv4 packets; `times` gives each packet's offset in microseconds from BASE_TIME
    (default: 100 ms apart)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 101))
        for i, p in enumerate(packets):
            t = times[i] if times is not None else i * 100_000
            f.write(struct.pack("<IIII", BASE_TIME + t // 1_000_000, t % 1_000_000, len(p), len(p)))
            f.write(p)
    print("wrote", os.path.relpath(path, ROOT), len(packets), "packets")


def icmp_echo_reply(ident, seq, data=b"swift-ipip ping payload!"):
    body = struct.pack("!BBHHH", 0, 0, 0, ident, seq) + data
    c = csum(body)
    return body[:2] + struct.pack("!H", c) + body[4:]


def icmp_error(router, dst, type_, code, offending, mtu=0):
    """An ICMP error from `router` to `dst` quoting the first 28 bytes of `offending` (RFC 792)."""
    body = struct.pack("!BBHHH", type_, code, 0, 0, mtu) + offending[:28]
    c = csum(body)
    body = body[:2] + struct.pack("!H", c) + body[4:]
    return ipv4(router, dst, 1, body, ttl=60, df=False)


def snat_case():
    """A workload (192.168.0.10, node-a) talks to an external server 203.0.113.10 through SNAT:
    a TCP connection (handshake, request, response, FIN both ways), a ping, a UDP query that gets
    an ICMP port unreachable, and one unsolicited packet from the outside. Source ports and the
    echo identifier lie inside the default natPortRange (61000-65535), so SNAT keeps them and the
    replies below can name them. Returns (workload side, underlay side), each as (times, packets)."""
    w, srv, node = "192.168.0.10", "203.0.113.10", "10.0.0.1"
    wport, sport = 61234, 443
    req = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    c0, s0 = 1000, 5000
    tun, und = [], []
    ms = 1000
    # workload -> server (as the workload sends it), server -> node (as it arrives on the uplink)
    tun.append((0 * ms, ipv4(w, srv, 6, tcp(w, srv, wport, sport, 0x02, seq=c0))))
    und.append((10 * ms, ipv4(srv, node, 6, tcp(srv, node, sport, wport, 0x12, seq=s0, ack=c0 + 1), ttl=50)))
    tun.append((20 * ms, ipv4(w, srv, 6, tcp(w, srv, wport, sport, 0x10, seq=c0 + 1, ack=s0 + 1))))
    tun.append((21 * ms, ipv4(w, srv, 6, tcp(w, srv, wport, sport, 0x18, seq=c0 + 1, ack=s0 + 1, data=req))))
    und.append((30 * ms, ipv4(srv, node, 6, tcp(srv, node, sport, wport, 0x10, seq=s0 + 1, ack=c0 + 1 + len(req)), ttl=50)))
    und.append((31 * ms, ipv4(srv, node, 6, tcp(srv, node, sport, wport, 0x18, seq=s0 + 1, ack=c0 + 1 + len(req), data=resp), ttl=50)))
    tun.append((40 * ms, ipv4(w, srv, 6, tcp(w, srv, wport, sport, 0x10, seq=c0 + 1 + len(req), ack=s0 + 1 + len(resp)))))
    tun.append((41 * ms, ipv4(w, srv, 6, tcp(w, srv, wport, sport, 0x11, seq=c0 + 1 + len(req), ack=s0 + 1 + len(resp)))))
    und.append((50 * ms, ipv4(srv, node, 6, tcp(srv, node, sport, wport, 0x11, seq=s0 + 1 + len(resp), ack=c0 + 2 + len(req)), ttl=50)))
    tun.append((60 * ms, ipv4(w, srv, 6, tcp(w, srv, wport, sport, 0x10, seq=c0 + 2 + len(req), ack=s0 + 2 + len(resp)))))
    # ping
    ident = 0xF00D
    for n in (1, 2):
        tun.append(((100 + 100 * n) * ms, ipv4(w, srv, 1, icmp_echo(ident=ident, seq=n))))
        und.append(((110 + 100 * n) * ms, ipv4(srv, node, 1, icmp_echo_reply(ident, n), ttl=50)))
    # a UDP query to a closed port: the server answers ICMP port unreachable quoting the
    # translated packet (source node:61235)
    query = ipv4(w, srv, 17, udp(w, srv, 61235, 7777, b"\x00\x01query"))
    tun.append((400 * ms, query))
    translated = ipv4(node, srv, 17, udp(node, srv, 61235, 7777, b"\x00\x01query"))
    und.append((410 * ms, icmp_error(srv, node, 3, 3, translated)))
    # unsolicited: a SYN to the node from the outside
    und.append((500 * ms, ipv4("198.51.100.77", node, 6, tcp("198.51.100.77", node, 40000, 61234, 0x02), ttl=50)))
    return tun, und


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


def write_virtio_pcap(path, records, times):
    """Writes records of link type 147 (LINKTYPE_USER0 as swift-ipip uses it): each a 10-byte
    virtio_net_hdr (little-endian) followed by an IPv4 packet. `records` are (header, packet)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 147))
        for (h, p), t in zip(records, times):
            r = h + p
            f.write(struct.pack("<IIII", BASE_TIME + t // 1_000_000, t % 1_000_000, len(r), len(r)))
            f.write(r)
    print("wrote", os.path.relpath(path, ROOT), len(records), "records (virtio_net_hdr + IPv4)")


def vnet(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


NEEDS_CSUM, DATA_VALID = 1, 2
GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 1, 3, 4, 5


def partial(src, dst, proto, length):
    """The folded, not complemented pseudo-header sum a CHECKSUM_PARTIAL packet carries."""
    return ~csum(addr(src) + addr(dst) + struct.pack("!BBH", 0, proto, length)) & 0xFFFF


def tcp_super(src, dst, sport, dport, seq, ack, payload, flags=0x18, options=b"", ttl=63, ident=0x2000):
    """One TCP super-packet as a TUN with TSO hands it over: one header for all of `payload`,
    a partial checksum in the TCP checksum field."""
    thl = 20 + len(options)
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (thl // 4) << 4, flags, 502, 0, 0) + options + payload
    seg = seg[:16] + struct.pack("!H", partial(src, dst, 6, len(seg))) + seg[18:]
    return ipv4(src, dst, 6, seg, ttl=ttl, ident=ident)


def udp_super(src, dst, sport, dport, payload, ident=0x3000):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    seg = seg[:6] + struct.pack("!H", partial(src, dst, 17, len(seg))) + seg[8:]
    return ipv4(src, dst, 17, seg, ident=ident)


def offload_case():
    """Super-packets both ways on node-a (the always manifests). TUN side, as a TUN with virtio
    headers and TSO/USO reads them: TCP super-packets to a peer's workload (encapsulated, cut into
    segments with their own outer headers) and to the outside (SNAT, then cut), a UDP USO
    super-packet, an ordinary packet, a checksum-partial ordinary packet (completed on input),
    metadata that does not fit (invalid_offload) and segments too big for the tunnel (frag-needed).
    Underlay side, as a packet socket with PACKET_VNET_HDR receives them: MTU-sized IP-in-IP
    segments of one flow from node-b (coalesced into one TUN write with --offloads), one with a
    bad inner checksum among them (left alone), a GRO'd IP-in-IP super-packet from node-c
    (decapsulated whole), and equal-size UDP datagrams (coalesced into a USO write)."""
    w, b1, c1, ext = "192.168.0.10", "192.168.1.20", "192.168.2.30", "203.0.113.10"
    mss = 1428  # 1480 - 20 - 32: with 12 bytes of TCP options (timestamps)
    ts = bytes([1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78])
    data = bytes((i * 7 + 3) & 0xFF for i in range(3 * mss + 500))
    tun = [
        (vnet(NEEDS_CSUM, GSO_TCPV4, 52, mss, 20, 16), tcp_super(w, c1, 40100, 5201, 1000, 7000, data, options=ts)),
        (vnet(), ipv4(w, b1, 1, icmp_echo(seq=21))),
        (vnet(NEEDS_CSUM, GSO_TCPV4, 52, mss, 20, 16),
         tcp_super(w, ext, 61300, 443, 5000, 9000, data[:2 * mss], options=ts, ident=0x2100)),
        (vnet(NEEDS_CSUM, GSO_UDP_L4, 28, 1000, 20, 6), udp_super(w, b1, 40200, 9000, bytes(range(250)) * 11 + b"tail")),
    ]
    # An ordinary TCP segment whose checksum was left to offload.
    seg = struct.pack("!HHIIBBHHH", 40300, 80, 1, 1, 5 << 4, 0x18, 502, 0, 0) + b"checksum left to offload"
    seg = seg[:16] + struct.pack("!H", partial(w, b1, 6, len(seg))) + seg[18:]
    tun.append((vnet(NEEDS_CSUM, 0, 0, 0, 20, 16), ipv4(w, b1, 6, seg)))
    tun.append((vnet(NEEDS_CSUM, GSO_TCPV6, 52, mss, 20, 16), tcp_super(w, c1, 40101, 5201, 1, 1, data[:2 * mss], options=ts)))
    tun.append((vnet(NEEDS_CSUM, GSO_TCPV4, 40, 1460, 20, 16), tcp_super(w, c1, 40102, 5201, 1, 1, data[:2 * 1460])))
    und = []
    seq = 70000
    back = bytes((i * 13 + 5) & 0xFF for i in range(7 * 1400))
    for k in range(7):
        payload = back[k * 1400:(k + 1) * 1400]
        inner = ipv4(b1, w, 6, tcp(b1, w, 5201, 40100, 0x10, seq=seq, ack=1001, data=payload), ident=0x500 + k)
        if k == 3:  # corrupt the last payload byte: the checksum no longer verifies
            inner = inner[:-1] + bytes([inner[-1] ^ 0xFF])
        und.append((vnet(), ipv4("10.0.0.2", "10.0.0.1", 4, inner, ttl=64, ident=0x900 + k)))
        seq += 1400
    gro_inner = tcp_super(c1, w, 5202, 40101, 90000, 1, data[:3 * mss], flags=0x10, options=ts, ident=0x600)
    und.append((vnet(DATA_VALID, GSO_TCPV4, 86, mss, 0, 0), ipv4("10.0.1.3", "10.0.0.1", 4, gro_inner, ttl=64, ident=0xA00)))
    for k in range(3):
        und.append((vnet(), ipv4("10.0.0.2", "10.0.0.1", 4,
                                 ipv4(b1, w, 17, udp(b1, w, 9000, 40200, bytes([k]) * 800), ident=0x700 + k), ttl=64, ident=0xB00 + k)))
    return tun, und


def main():
    fx = os.path.join(ROOT, "Tests", "Fixtures", "golden")
    write_pcap(os.path.join(fx, "always", "input.pcap"), mode_case("192.168.1.20", "192.168.2.30"))
    write_pcap(os.path.join(fx, "crosssubnet", "input.pcap"), mode_case("192.168.1.20", "192.168.2.30"))
    write_pcap(os.path.join(fx, "never", "input.pcap"), mode_case("192.168.1.20", "192.168.2.30"))
    write_pcap(os.path.join(fx, "edge-cases", "input.pcap"), edge_case())
    write_pcap(os.path.join(ROOT, "examples", "workload-traffic.pcap"), example())
    tun, und = snat_case()
    write_pcap(os.path.join(fx, "snat", "input.pcap"), [p for _, p in tun], [t for t, _ in tun])
    write_pcap(os.path.join(fx, "snat", "underlay-input.pcap"), [p for _, p in und], [t for t, _ in und])
    tun, und = offload_case()
    for name in ("offloads", "offloads-segmented"):
        write_virtio_pcap(os.path.join(fx, name, "input.pcap"), tun, [i * 1000 for i in range(len(tun))])
        write_virtio_pcap(os.path.join(fx, name, "underlay-input.pcap"), und, [100_000 + i * 10 for i in range(len(und))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
