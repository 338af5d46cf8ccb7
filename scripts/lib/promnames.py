#!/usr/bin/env python3
"""The metric names a Grafana dashboard and Prometheus rule files query, checked against the
names a daemon exports (scripts/check-deploy, scripts/e2e-health).

  promnames.py check KNOWN FILE...   KNOWN: a file of metric family names, one per line (what
                                     `ipipd metric-names` prints), or a Prometheus exposition
                                     (`# TYPE` lines, a scrape of /metrics); FILE: dashboards
                                     (*.json) and rule files (*.yml, *.yaml). Prints each query's
                                     unknown names with where they are; exit 1 if there are any.
  promnames.py names FILE...         print every metric name the files query

PromQL is read just far enough to find metric names: strings, label matchers, range and subquery
brackets, grouping clauses (by, without, on, ignoring, group_left, group_right) and Grafana
variables are removed; what remains is an identifier that is not a function call, a keyword or a
number: a metric name. Grafana's own query functions (label_values, query_result, metrics) are
understood too.
"""
import json
import re
import sys

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "atan2", "inf", "nan", "start", "end"}

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_TOKEN = re.compile(r"(?P<number>\d[\w.]*|\.\d[\w.]*)|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?")


def metric_names(expr):
    """The metric names one PromQL expression (or Grafana variable query) selects."""
    expr = expr.strip()
    grafana = re.fullmatch(r"label_values\s*\(\s*(.*?)\s*,\s*[A-Za-z_]\w*\s*\)", expr, re.S)
    if grafana:
        return metric_names(grafana.group(1))
    if re.fullmatch(r"label_values\s*\(\s*[A-Za-z_]\w*\s*\)", expr):
        return set()
    grafana = re.fullmatch(r"query_result\s*\((.*)\)", expr, re.S)
    if grafana:
        return metric_names(grafana.group(1))
    if re.fullmatch(r"metrics\s*\(.*\)", expr, re.S):
        return set()
    text = _VARIABLE.sub(" 1 ", _STRING.sub(" ", expr))
    previous = None
    while previous != text:  # nested brackets and matchers (subqueries) from the inside out
        previous = text
        text = _BRACKETS.sub(" ", _MATCHERS.sub(" ", text))
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in _TOKEN.finditer(text):
        ident = m.group("ident")
        if ident is None or m.group("call") or ident in KEYWORDS:
            continue
        names.add(ident)
    return names


def dashboard_queries(dashboard, where="dashboard"):
    """(where, expression) for every query of a Grafana dashboard: panel targets (nested rows
    included) and query variables."""
    out = []

    def walk(node, label):
        if isinstance(node, dict):
            title = node.get("title")
            here = "%s / %s" % (label, title) if isinstance(title, str) and title else label
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    out.append((here, value))
                elif key != "templating":
                    walk(value, here)
        elif isinstance(node, list):
            for item in node:
                walk(item, label)

    walk(dashboard, where)
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query:
            out.append(("%s / variable %s" % (where, var.get("name")), query))
    return out


def rule_queries(rules, where="rules"):
    """(where, expression) for every alerting and recording rule of a Prometheus rule file."""
    out = []
    for group in (rules or {}).get("groups", []) or []:
        for rule in group.get("rules", []) or []:
            name = rule.get("alert") or rule.get("record") or "?"
            out.append(("%s / %s / %s" % (where, group.get("name"), name), str(rule.get("expr", ""))))
    return out


def file_queries(path):
    if path.endswith(".json"):
        with open(path) as f:
            return dashboard_queries(json.load(f), path)
    import yaml  # python3-yaml (scripts/install-deps); only rule files need it

    with open(path) as f:
        return rule_queries(yaml.safe_load(f), path)


def known_names(text):
    """Family names from `ipipd metric-names` output or from an exposition's # TYPE lines."""
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#" and parts[1] == "TYPE":
            names.add(parts[2])
        elif len(parts) == 1 and not line.startswith("#"):
            names.add(parts[0])
    return names


def unknown(known, paths):
    """Lines naming each query's metric names that `known` lacks; also every file with no query."""
    problems = []
    for path in paths:
        queries = file_queries(path)
        if not queries:
            problems.append("%s: no queries found" % path)
        for where, expr in queries:
            for name in sorted(metric_names(expr) - known):
                problems.append("%s: %s is not a metric ipipd exports (in: %s)" % (where, name, " ".join(expr.split())))
    return problems


def main(argv):
    if len(argv) >= 3 and argv[1] == "check":
        with open(argv[2]) as f:
            known = known_names(f.read())
        if not known:
            print("promnames: %s lists no metric names" % argv[2], file=sys.stderr)
            return 2
        problems = unknown(known, argv[3:])
        for p in problems:
            print(p)
        count = sum(len(file_queries(p)) for p in argv[3:])
        if problems:
            print("%d problems in %d queries" % (len(problems), count))
            return 1
        print("%d queries in %d files name only the %d metrics ipipd exports" % (count, len(argv) - 3, len(known)))
        return 0
    if len(argv) >= 2 and argv[1] == "names":
        for name in sorted(set().union(*(metric_names(e) for p in argv[2:] for _, e in file_queries(p)))):
            print(name)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
