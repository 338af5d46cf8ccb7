"""Unit tests of promnames.py: metric names out of PromQL, dashboards and rule files."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promnames  # noqa: E402


class MetricNames(unittest.TestCase):
    def names(self, expr):
        return promnames.metric_names(expr)

    def test_functions_aggregations_and_grouping_are_not_names(self):
        self.assertEqual(self.names('sum by (direction, verdict) (rate(ipipd_packets_total{instance=~"$instance"}[$__rate_interval]))'),
                         {"ipipd_packets_total"})
        self.assertEqual(self.names("sum(rate(a_total[5m])) without (worker) / on (instance) group_left(method) b_info"),
                         {"a_total", "b_info"})

    def test_matchers_strings_ranges_offsets_and_numbers_are_not_names(self):
        self.assertEqual(self.names('rate(x_total{reason="no_route",job!~"up|down"}[1h] offset 10m) > 2 * 1.5e3'),
                         {"x_total"})
        self.assertEqual(self.names('max_over_time(rate(y_total[5m])[30m:1m]) > bool 0'), {"y_total"})
        self.assertEqual(self.names('label_replace(z, "dst", "$1", "src", "(.*)")'), {"z"})

    def test_several_names_and_set_operators(self):
        self.assertEqual(self.names("a > 1 and b unless c or d"), {"a", "b", "c", "d"})

    def test_grafana_variables_and_queries(self):
        self.assertEqual(self.names("label_values(ipipd_workers, instance)"), {"ipipd_workers"})
        self.assertEqual(self.names("label_values(instance)"), set())
        self.assertEqual(self.names("query_result(topk(3, ipipd_nat_sessions))"), {"ipipd_nat_sessions"})
        self.assertEqual(self.names("8 * rate(b_total[$__interval]) + ${offset}"), {"b_total"})


class Files(unittest.TestCase):
    def test_dashboard_rows_targets_and_variables(self):
        dash = {"panels": [{"title": "row", "panels": [{"title": "p", "targets": [{"expr": "rate(a_total[1m])"}]}]},
                           {"title": "q", "targets": [{"expr": "b"}]}],
                "templating": {"list": [{"name": "instance", "type": "query",
                                         "query": {"query": "label_values(c, instance)"}},
                                        {"name": "ds", "type": "datasource", "query": "prometheus"}]}}
        got = promnames.dashboard_queries(dash, "d.json")
        self.assertEqual(got, [("d.json / row / p", "rate(a_total[1m])"), ("d.json / q", "b"),
                               ("d.json / variable instance", "label_values(c, instance)")])

    def test_rules(self):
        rules = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "x > 1"}, {"record": "r:y", "expr": "sum(y)"}]}]}
        self.assertEqual(promnames.rule_queries(rules, "r.yml"), [("r.yml / g / A", "x > 1"), ("r.yml / g / r:y", "sum(y)")])

    def test_known_names_from_a_list_or_an_exposition(self):
        self.assertEqual(promnames.known_names("a_total\nb\n"), {"a_total", "b"})
        self.assertEqual(promnames.known_names("# HELP a_total x y\n# TYPE a_total counter\na_total 3\n"), {"a_total"})

    def test_an_unknown_name_is_reported_with_where_it_is(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "d.json")
            with open(path, "w") as f:
                f.write('{"panels": [{"title": "p", "targets": [{"expr": "rate(a_total[1m]) / b_missing"}]}]}')
            problems = promnames.unknown({"a_total"}, [path])
            self.assertEqual(problems, ["%s / p: b_missing is not a metric ipipd exports (in: rate(a_total[1m]) / b_missing)" % path])
            self.assertEqual(promnames.unknown({"a_total", "b_missing"}, [path]), [])

    def test_a_file_without_queries_is_a_problem(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "d.json")
            with open(path, "w") as f:
                f.write('{"panels": []}')
            self.assertEqual(promnames.unknown({"a"}, [path]), ["%s: no queries found" % path])


if __name__ == "__main__":
    unittest.main()
