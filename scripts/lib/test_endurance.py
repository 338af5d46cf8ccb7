"""Unit tests of the endurance tests' helpers (python3 -m unittest, run by scripts/test)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import endurance  # noqa: E402
import nettools  # noqa: E402


class GapSummary(unittest.TestCase):
    def test_empty(self):
        self.assertEqual(endurance.gap_summary([])["received"], 0)
        self.assertIsNone(endurance.gap_summary([])["longest_gap"])

    def test_loss_duplicates_and_the_longest_gap(self):
        arrivals = [(10.0, 0), (10.1, 1), (10.2, 1), (11.7, 4), (11.8, 5)]
        r = endurance.gap_summary(arrivals)
        self.assertEqual(r["received"], 5)
        self.assertEqual(r["distinct"], 4)
        self.assertEqual(r["highest"], 5)
        self.assertEqual(r["lost"], 2)          # 2 and 3
        self.assertAlmostEqual(r["longest_gap"], 1.5)
        self.assertAlmostEqual(r["gap_at"], 0.2)


class Flatness(unittest.TestCase):
    def samples(self, rss, fds):
        return [(i * 0.5, r, f) for i, (r, f) in enumerate(zip(rss, fds))]

    def test_too_few_samples_after_the_warm_up(self):
        self.assertIsNone(endurance.flatness(self.samples([1] * 8, [3] * 8), 2.0))

    def test_growth_after_the_warm_up_only(self):
        rss = [100, 500, 900, 1000, 1000, 1010, 1004, 1020, 1001, 1002]
        fds = [3, 9, 12, 12, 12, 14, 12, 12, 13, 12]
        r = endurance.flatness(self.samples(rss, fds), 1.5)   # from the fourth sample on
        self.assertEqual(r["rss_start"], 1000)
        self.assertEqual(r["rss_growth"], 20)
        self.assertEqual(r["fds_growth"], 0)                  # a descriptor held for a moment is no leak

    def test_a_descriptor_leak_shows(self):
        fds = [10, 10, 10, 11, 12, 13, 14, 15]
        r = endurance.flatness(self.samples([5] * 8, fds), 0.0)
        self.assertEqual(r["fds_growth"], 3)


class SoakManifests(unittest.TestCase):
    def test_mode_and_extra_block_out_of_phase(self):
        with open(nettools.EXAMPLE_CLUSTER) as f:
            text = f.read()
        seen = []
        for step in range(4):
            t = endurance.soak_manifests_text(text, step)
            seen.append(("ipipMode: CrossSubnet" in t, "192.168.1.64/26" in t))
            self.assertEqual(t.count("kind: BlockAffinity"), 4 if seen[-1][1] else 3)
        self.assertEqual(seen, [(False, True), (True, True), (False, False), (True, False)])


if __name__ == "__main__":
    unittest.main()
