"""Tests of verdictmatch.py (the recording-against-monitor check of scripts/e2e-record)."""

import base64
import json
import os
import struct
import tempfile
import unittest

import verdictmatch


def block(kind, body):
    body += b"\0" * ((4 - len(body) % 4) % 4)
    n = 12 + len(body)
    return struct.pack("<II", kind, n) + body + struct.pack("<I", n)


def option(code, value):
    return struct.pack("<HH", code, len(value)) + value + b"\0" * ((4 - len(value) % 4) % 4)


def capture(path, records, link=101):
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", link, 0, 65535) + option(9, b"\x09") + option(0, b""))
    epbs = b""
    for t, data, comment in records:
        padded = data + b"\0" * ((4 - len(data) % 4) % 4)
        epbs += block(
            6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(data), len(data)) + padded
            + option(1, comment.encode()) + option(0, b""))
    with open(path, "wb") as f:
        f.write(shb + idb + epbs)


def event(t, packet, verdict, reason=None, direction="egress"):
    e = {"timestamp": f"{t // 10**9}.{t % 10**9:09d}", "direction": direction, "verdict": verdict,
         "packet": base64.b64encode(packet[:30]).decode()}
    if reason:
        e["reason"] = reason
    return json.dumps(e)


T = 1_800_000_000 * 10**9
P1 = bytes(range(40))
P2 = bytes(range(1, 41))
VIRTIO = bytes(10)


class VerdictMatchTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        capture(os.path.join(self.dir, "tun.pcapng"),
                [(T, P1, "encapsulated peer 10.0.0.2"), (T + 1000, P2, "dropped no_route icmp 3/1")])
        # The underlay side as the recorder writes it: link type 147, a virtio header first.
        capture(os.path.join(self.dir, "underlay.pcapng"), [(T + 2000, VIRTIO + P2[::-1], "decapsulated peer 10.0.0.3")],
                link=147)

    def run_with(self, lines, *extra):
        path = os.path.join(self.dir, "monitor.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return verdictmatch.main(["verdictmatch.py", self.dir, path, *extra])

    def test_agreeing_verdicts_pass(self):
        self.assertEqual(0, self.run_with([
            event(T + 5, P1, "encapsulated"), event(T + 900, P2, "dropped", "no_route"),
            event(T + 2100, P2[::-1], "decapsulated", direction="ingress")]))

    def test_a_different_reason_fails(self):
        self.assertEqual(1, self.run_with([
            event(T + 5, P1, "encapsulated"), event(T + 900, P2, "dropped", "ttl_expired"),
            event(T + 2100, P2[::-1], "decapsulated", direction="ingress")]))

    def test_a_packet_the_monitor_missed_fails_unless_it_said_so(self):
        lines = [event(T + 5, P1, "encapsulated"), event(T + 2100, P2[::-1], "decapsulated", direction="ingress")]
        self.assertEqual(1, self.run_with(lines))
        self.assertEqual(0, self.run_with(lines, "--lost", "1"))

    def test_the_direction_must_match(self):
        self.assertEqual(1, self.run_with([
            event(T + 5, P1, "encapsulated"), event(T + 900, P2, "dropped", "no_route"),
            event(T + 2100, P2[::-1], "decapsulated", direction="egress")]))


if __name__ == "__main__":
    unittest.main()
