"""Unit tests of scripts/lib/benchlive.py's counter parsing (python3 -m unittest, run by scripts/test)."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlive  # noqa: E402


class Counters(unittest.TestCase):
    def test_process_ticks_after_a_command_with_spaces_and_parentheses(self):
        stat = "4242 (ipipd (worker) x) S 1 4242 4242 0 -1 4194560 1 2 3 4 1500 250 7 8 20 0 3 0 99 123 456"
        self.assertEqual(benchlive.process_ticks(stat), (1500, 250))

    def test_machine_busy_ticks_leave_idle_and_iowait_out(self):
        text = "cpu  100 2 30 5000 40 6 7 8 0 0\ncpu0 50 1 15 2500 20 3 3 4 0 0\nintr 1 2 3\n"
        self.assertEqual(benchlive.machine_busy_ticks(text), 100 + 2 + 30 + 6 + 7 + 8)

    def test_machine_busy_ticks_need_the_cpu_line(self):
        with self.assertRaises(ValueError):
            benchlive.machine_busy_ticks("cpu0 1 2 3 4 5 6 7 8\n")

    def test_link_packets_add_both_directions(self):
        text = json.dumps([{"ifname": "eth0", "stats64": {"rx": {"bytes": 9, "packets": 120}, "tx": {"bytes": 9, "packets": 80}}}])
        self.assertEqual(benchlive.link_packets(text), 200)

    def test_deltas(self):
        before = {"user": 100, "system": 50, "wire": 1000, "machine": 400, "time": 10.0}
        after = {"user": 300, "system": 150, "wire": 5000, "machine": 1200, "time": 14.0}
        d = benchlive.deltas(before, after, 100)
        self.assertEqual(d, {"cpu_s": 3.0, "cpu_user_s": 2.0, "wire_packets": 4000, "machine_s": 8.0, "wall_s": 4.0})

    def test_read_counters_of_this_process_and_no_links(self):
        c = benchlive.read_counters([str(os.getpid())], [])
        self.assertEqual(set(c), {"user", "system", "wire", "machine", "time"})
        self.assertEqual(c["wire"], 0)
        self.assertGreater(c["machine"], 0)

    def test_a_vanished_process_is_named(self):
        with self.assertRaises(SystemExit) as e:
            benchlive.read_counters(["999999999"], [])
        self.assertIn("999999999", str(e.exception))


if __name__ == "__main__":
    unittest.main()
