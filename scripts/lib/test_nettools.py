"""Unit tests of the helpers the shell scripts call (python3 -m unittest, run by scripts/test)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nettools  # noqa: E402


def ipip(t, port=5201):
    return "%.6f IP 10.0.0.1 > 10.0.0.2: IP 192.168.0.10.40000 > 192.168.1.20.%d: Flags [.], length 1448" % (t, port)


def native(t, port=5201):
    return "%.6f IP 192.168.0.10.40000 > 192.168.1.20.%d: Flags [.], length 1448" % (t, port)


def reply_ipip(t, port=5201):
    return "%.6f IP 10.0.0.2 > 10.0.0.1: IP 192.168.1.20.%d > 192.168.0.10.40000: Flags [.], length 0" % (t, port)


class ClassifyPhases(unittest.TestCase):
    T0 = 1000.0

    def run_phases(self, lines, minimum=3):
        return nettools.classify_phases(lines, "5201", self.T0, minimum)

    def test_ipip_native_ipip(self):
        lines = ([ipip(1000 + i * 0.1) for i in range(4)] + [reply_ipip(1000.45)]
                 + [native(1004 + i * 0.1) for i in range(3)] + [ipip(1008 + i * 0.1) for i in range(3)])
        report, ok = self.run_phases(lines)
        self.assertTrue(ok, report)
        self.assertEqual(report[0], "capture: 8 ipip, 3 native, 0 other packets in 3 runs: "
                         "ipip 5 (0.0-0.5 s) native 3 (4.0-4.2 s) ipip 3 (8.0-8.2 s)")
        self.assertEqual(report[1], "phases: ipip 5 from 0.0 s, native 3 from 4.0 s, ipip 3 from 8.0 s")

    def test_short_runs_at_a_switch_are_mixed_and_skipped(self):
        lines = ([ipip(1000 + i * 0.1) for i in range(3)] + [native(1004.0), ipip(1004.01), native(1004.02)]
                 + [native(1004.1 + i * 0.1) for i in range(3)] + [ipip(1008 + i * 0.1) for i in range(3)])
        report, ok = self.run_phases(lines)
        self.assertTrue(ok, report)
        self.assertIn("mixed 2 in 2 runs (4.0-4.0 s)", report[0])

    def test_other_ports_are_counted_apart(self):
        lines = [ipip(1000 + i * 0.1) for i in range(3)] + [native(1001, port=22), ipip(1001, port=52010)]
        report, ok = self.run_phases(lines)
        self.assertFalse(ok)
        self.assertTrue(report[0].startswith("capture: 3 ipip, 0 native, 2 other packets in 1 runs"), report)

    def test_never_native_fails(self):
        report, ok = self.run_phases([ipip(1000 + i * 0.1) for i in range(20)])
        self.assertFalse(ok)
        self.assertEqual(report[-1], "no ipip, native, ipip sequence with >= 3 packets each")

    def test_no_return_to_ipip_fails(self):
        lines = [ipip(1000 + i * 0.1) for i in range(3)] + [native(1004 + i * 0.1) for i in range(5)]
        _, ok = self.run_phases(lines)
        self.assertFalse(ok)

    def test_empty_capture(self):
        report, ok = self.run_phases([])
        self.assertFalse(ok)
        self.assertEqual(report[0], "capture: 0 ipip, 0 native, 0 other packets in 0 runs: ")


class Time(unittest.TestCase):
    def test_elapsed_between_two_times(self):
        self.assertAlmostEqual(nettools.elapsed("1700000000.250", "1700000004.000"), 3.75)

    def test_at_most(self):
        self.assertTrue(nettools.is_at_most("0.022", "3"))
        self.assertTrue(nettools.is_at_most("3", "3"))
        self.assertFalse(nettools.is_at_most("3.9", "3"))
        self.assertFalse(nettools.is_at_most("", "3"), "no value measured is not within the bound")

    def test_remaining(self):
        self.assertAlmostEqual(nettools.remaining("100.0", "4", 102.5), 1.5)
        self.assertEqual(nettools.remaining("100.0", "4", 105.0), 0.0)


class SelectManifests(unittest.TestCase):
    with open(nettools.EXAMPLE_CLUSTER) as f:
        EXAMPLE = f.read()

    @staticmethod
    def kinds_and_names(text):
        out = []
        for doc in text.split("---\n"):
            kind = [l.split(": ")[1] for l in doc.splitlines() if l.startswith("kind: ")]
            name = [l.split(": ")[1] for l in doc.splitlines() if l.startswith("  name: ")]
            out.append((kind[0], name[0]))
        return out

    def test_mode_only(self):
        text = nettools.select_manifests(self.EXAMPLE, "CrossSubnet")
        self.assertIn("ipipMode: CrossSubnet", text)
        self.assertNotIn("ipipMode: Always", text)
        self.assertEqual(len(self.kinds_and_names(text)), 7)

    def test_without_a_node(self):
        text = nettools.select_manifests(self.EXAMPLE, "Always", "without", "node-c")
        self.assertEqual(self.kinds_and_names(text), [
            ("IPPool", "ippool-ipip-1"), ("Node", "node-a"), ("Node", "node-b"),
            ("BlockAffinity", "node-a-192-168-0-0-26"), ("BlockAffinity", "node-b-192-168-1-0-26")])
        self.assertTrue(text.startswith("# A three-node cluster"), "the header comment stays with the pool")

    def test_only_a_node(self):
        text = nettools.select_manifests(self.EXAMPLE, "Never", "only", "node-c")
        self.assertEqual(self.kinds_and_names(text), [("Node", "node-c"), ("BlockAffinity", "node-c-192-168-2-0-26")])

    def test_without_one_block(self):
        text = nettools.select_manifests(self.EXAMPLE, "Always", "without", "node-c-192-168-2-0-26")
        names = [n for _, n in self.kinds_and_names(text)]
        self.assertIn("node-c", names)
        self.assertNotIn("node-c-192-168-2-0-26", names)

    def test_unknown_selection(self):
        with self.assertRaises(ValueError):
            nettools.select_manifests(self.EXAMPLE, "Always", "except", "node-c")


if __name__ == "__main__":
    unittest.main()


class FragNeeded(unittest.TestCase):
    def test_layout_and_checksums(self):
        p = nettools.fragneeded("10.0.0.254", "10.0.0.1", "10.0.0.1", "10.0.1.3", 1300)
        self.assertEqual(len(p), 20 + 8 + 28)
        self.assertEqual(nettools.csum(p[:20]), 0)          # outer header checksum valid
        self.assertEqual(p[9], 1)                           # ICMP
        self.assertEqual((p[20], p[21]), (3, 4))            # frag-needed
        self.assertEqual(int.from_bytes(p[26:28], "big"), 1300)
        self.assertEqual(nettools.csum(p[20:]), 0)          # ICMP checksum valid
        quoted = p[28:48]
        self.assertEqual(quoted[9], 4)                      # quotes IP-in-IP
        self.assertEqual(quoted[12:16], bytes([10, 0, 0, 1]))
        self.assertEqual(quoted[16:20], bytes([10, 0, 1, 3]))
