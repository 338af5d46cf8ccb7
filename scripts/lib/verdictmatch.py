#!/usr/bin/env python3
"""Checks a flight recording against what `ipipctl monitor -o json` showed live.

    verdictmatch.py RECORDING_DIR MONITOR.jsonl [--lost N]

Every packet of RECORDING_DIR/tun.pcapng (egress) and RECORDING_DIR/underlay.pcapng (ingress)
carries the live verdict as its pcapng comment; every line of MONITOR.jsonl is one verdict the
monitor streamed. A recorded packet is matched to the monitor event of the same direction whose
captured bytes are a prefix of the packet's (the monitor keeps the first 128 bytes) and whose
time is nearest (both take the packet loop's clock; each converts it to wall-clock time with an
offset of its own, so the two may differ by a little). The verdict and drop reason must then be
equal. Packets recorded before the monitor's first event or after its last are outside the
monitor's window and are not compared. Inside it, a packet without an event is allowed only as
far as the monitor said it lost events (--lost). Exit 0 when every compared verdict agrees and
the unmatched are within the loss; prints the counts and, for each disagreement, both sides.

Written for scripts/e2e-record; an independent reader of both files (pcapng parsed here, not by
the project's Swift reader).
"""

import base64
import json
import struct
import sys

LINKTYPE_VIRTIO = 147
VIRTIO_HEADER = 10
# Matches farther apart than this are not the same packet (the clock offsets differ by µs).
MAX_SKEW_NS = 50_000_000


def pcapng_records(path):
    """(time_ns, packet bytes without any virtio header, comment) for each enhanced packet block."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    link_types = []
    resolutions = []
    while pos + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        if blen < 12 or pos + blen > len(data):
            raise ValueError(f"{path}: block at {pos} has a bad length {blen}")
        body = data[pos + 8 : pos + blen - 4]
        if btype == 1:
            link, _, _ = struct.unpack_from("<HHI", body, 0)
            link_types.append(link)
            res = 6
            for code, value in options(body[8:]):
                if code == 9 and value:
                    res = value[0]
            resolutions.append(res)
        elif btype == 6:
            iface, hi, lo, caplen, _orig = struct.unpack_from("<IIIII", body, 0)
            packet = body[20 : 20 + caplen]
            rest = body[20 + ((caplen + 3) & ~3) :]
            comment = ""
            for code, value in options(rest):
                if code == 1:
                    comment = value.decode("utf-8", "replace")
            ticks = (hi << 32) | lo
            res = resolutions[iface] if iface < len(resolutions) else 6
            if res & 0x80:
                raise ValueError(f"{path}: a power-of-two time resolution is not handled")
            time_ns = ticks * 10 ** (9 - res) if res <= 9 else ticks // 10 ** (res - 9)
            if iface < len(link_types) and link_types[iface] == LINKTYPE_VIRTIO:
                packet = packet[VIRTIO_HEADER:]
            out.append((time_ns, packet, comment))
        pos += blen
    return out


def options(buf):
    pos = 0
    while pos + 4 <= len(buf):
        code, length = struct.unpack_from("<HH", buf, pos)
        if code == 0:
            return
        yield code, buf[pos + 4 : pos + 4 + length]
        pos += 4 + ((length + 3) & ~3)


def verdict_of_comment(comment):
    """'dropped ipip_unknown_peer', 'decapsulated', ... from 'decapsulated peer 10.0.0.2 ...'."""
    words = comment.split()
    if not words:
        return ""
    if words[0] == "dropped" and len(words) > 1:
        return "dropped " + words[1]
    return words[0]


def verdict_of_event(e):
    return e["verdict"] + (" " + e["reason"] if e.get("reason") else "")


def ns_of(timestamp):
    seconds, _, fraction = timestamp.partition(".")
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 1
    directory, monitor = argv[1], argv[2]
    lost = int(argv[argv.index("--lost") + 1]) if "--lost" in argv else 0
    events = {"egress": [], "ingress": []}
    with open(monitor) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            e = json.loads(line)
            if "verdict" not in e:
                continue
            events[e["direction"]].append(
                {"t": ns_of(e["timestamp"]), "bytes": base64.b64decode(e.get("packet", "")), "v": verdict_of_event(e),
                 "used": False})
    all_times = [e["t"] for side in events.values() for e in side]
    if not all_times:
        print("the monitor showed no events")
        return 1
    first, last = min(all_times), max(all_times)
    compared = agreed = outside = unmatched = 0
    disagreements = []
    for side, name in (("egress", "tun.pcapng"), ("ingress", "underlay.pcapng")):
        for index, (t, packet, comment) in enumerate(pcapng_records(f"{directory}/{name}"), start=1):
            if t < first - MAX_SKEW_NS or t > last + MAX_SKEW_NS:
                outside += 1
                continue
            best = None
            for e in events[side]:
                if e["used"] or abs(e["t"] - t) > MAX_SKEW_NS or not e["bytes"]:
                    continue
                if packet[: len(e["bytes"])] != e["bytes"]:
                    continue
                if best is None or abs(e["t"] - t) < abs(best["t"] - t):
                    best = e
            if best is None:
                unmatched += 1
                continue
            best["used"] = True
            compared += 1
            live = verdict_of_comment(comment)
            if live == best["v"]:
                agreed += 1
            else:
                disagreements.append(f"  {name} packet {index}: recording \"{comment}\", monitor \"{best['v']}\"")
    print(
        f"{compared} recorded verdicts compared with the monitor's: {agreed} agree, {len(disagreements)} differ; "
        f"{unmatched} without a monitor event (the monitor lost {lost}); {outside} outside the monitor's window")
    for d in disagreements[:20]:
        print(d)
    return 0 if compared > 0 and not disagreements and unmatched <= lost else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
