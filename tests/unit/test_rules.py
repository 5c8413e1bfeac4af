"""packaging/prometheus/rules.yml and packaging/grafana/ceemsnet.json, without a kernel or a server.

promtool checks the rules and runs the rule unit tests (rules_test.yml), which
must cover every recording rule and alert; every dashboard expression parses
(promtool, with Grafana's variables substituted); every ceemsnet metric named
is one docs/metrics.md's table documents; the dashboard has the variables
and the structure Grafana imports. tests/kernel/test_dashboard.py evaluates
the same expressions against real Prometheus scraping a real exporter.
"""

import json
import os
import re
import subprocess

import pytest
import yaml

from ..programs import require_program

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROM_DIR = os.path.join(ROOT, "packaging", "prometheus")
RULES = os.path.join(PROM_DIR, "rules.yml")
RULES_TEST = os.path.join(PROM_DIR, "rules_test.yml")
DASHBOARD = os.path.join(ROOT, "packaging", "grafana", "ceemsnet.json")
VARS = {"datasource": "prometheus", "job_label": "exported_job", "job": "42", "instance": "node1:9977",
        "__rate_interval": "1m", "__interval": "15s", "__range": "6h"}


def promtool(*args, cwd=ROOT):
    return subprocess.run([require_program("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def load_rules():
    with open(RULES) as f:
        return [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def substitute(expr, values=VARS):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], expr)


def dashboard_exprs():
    return [(p["title"], t["expr"]) for p in panels(dashboard()) for t in p.get("targets", [])]


def documented_metrics():
    """Metric names in docs/metrics.md's table (its first column)."""
    with open(os.path.join(ROOT, "docs", "metrics.md")) as f:
        text = f.read()
    table = text[text.index("\n| metric |"):]
    table = table[:table.index("\n\n")]
    return {m for line in table.splitlines() if line.startswith("| `")
            for m in re.findall(r"`(ceemsnet_[a-z0-9_]+)`", line.split("|")[1])}


def test_promtool_check_rules():
    p = promtool("check", "rules", RULES)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout, p.stdout


def test_promtool_test_rules():
    p = promtool("test", "rules", "rules_test.yml", cwd=PROM_DIR)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout, p.stdout


def test_rule_tests_cover_every_rule():
    rules = load_rules()
    with open(RULES_TEST) as f:
        tests = yaml.safe_load(f)["tests"]
    tested_records = {re.match(r"[\w:]+", e["expr"]).group(0) for t in tests for e in t.get("promql_expr_test", [])}
    fired = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    quiet = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if not a.get("exp_alerts")}
    records = {r["record"] for r in rules if "record" in r}
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert records and alerts
    assert records <= tested_records, records - tested_records
    assert alerts <= fired, ("alerts never tested firing", alerts - fired)
    assert alerts <= quiet, ("alerts never tested quiet", alerts - quiet)


def test_rules_names_and_annotations():
    for r in load_rules():
        if "record" in r:
            assert re.fullmatch(r"ceemsnet:job_[a-z_]+:rate5m", r["record"]), r["record"]
            # the SLURM job under either label (honor_labels or not), and the node
            assert re.search(r"sum by \(instance, job, exported_job\b", r["expr"]), r
        else:
            assert r["alert"].startswith("Ceemsnet"), r
            assert r["labels"]["severity"] in ("warning", "critical"), r
            ann = r["annotations"]
            assert ann.get("summary") and ann.get("description"), r["alert"]


def test_every_metric_named_is_documented():
    """A metric name the exporter does not have would make a panel or an alert silently empty."""
    known = documented_metrics()
    assert "ceemsnet_net_egress_bytes_total" in known and "ceemsnet_hook_info" in known, known
    exprs = [e for _, e in dashboard_exprs()] + [r["expr"] for r in load_rules()]
    exprs += [v["definition"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    with open(RULES_TEST) as f:
        exprs += [s["series"] for t in yaml.safe_load(f)["tests"] for s in t["input_series"]]
    literal = [re.sub(r'__name__=~"[^"]+"', "", e) for e in exprs]  # name regexes: checked below
    named = {m for e in literal for m in re.findall(r"(?<![\w:])(ceemsnet_[a-z0-9_]+)", e)}
    # ceemsnet_job_<x> (--unit=slurm) is the per-job sum of ceemsnet_<x>
    unknown = {m for m in named if m not in known and m.replace("ceemsnet_job_", "ceemsnet_", 1) not in known}
    assert not unknown, unknown
    # a name regex must not hide a typo: each of its alternatives is a documented name
    for e in exprs:
        for rx in re.findall(r'__name__=~"([^"]+)"', e):
            names = expand(rx)
            assert len(names) > 1, rx
            assert {n for n in names if n not in known and n.replace("ceemsnet_job_", "ceemsnet_", 1) not in known} \
                == set(), (rx, names)


def expand(rx):
    """The strings a regex of literals, (groups) and | alternatives matches."""
    def alts(i):  # -> (strings, index after)
        out, seq = [], [""]
        while i < len(rx) and rx[i] != ")":
            c = rx[i]
            if c == "|":
                out += seq
                seq, i = [""], i + 1
            elif c == "(":
                sub, i = alts(i + 1)
                seq, i = [a + b for a in seq for b in sub], i + 1
            else:
                assert c.isalnum() or c == "_", f"not a plain alternation: {rx}"
                seq, i = [a + c for a in seq], i + 1
        return out + seq, i
    return alts(0)[0]


def test_dashboard_expressions_parse(tmp_path):
    """Every panel query and variable query, with the variables Grafana would substitute, is valid PromQL."""
    dash = dashboard()
    exprs = [substitute(e) for _, e in dashboard_exprs()]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*(\S+)\)", v["definition"], re.S)
            assert m, v["definition"]
            exprs.append(substitute(f"group by ({m.group(2)}) ({m.group(1)})"))
    assert not [e for e in exprs if "$" in e], exprs
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:expr_{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}
    f = tmp_path / "dashboard_rules.yml"
    f.write_text(yaml.safe_dump(rules))
    p = promtool("check", "rules", str(f))
    assert p.returncode == 0, p.stdout + p.stderr


def test_dashboard_structure():
    dash = dashboard()
    assert dash["schemaVersion"] >= 39  # Grafana 11 and later
    assert dash["uid"] and dash["title"]
    var = {v["name"]: v for v in dash["templating"]["list"]}
    assert var["datasource"]["type"] == "datasource" and var["datasource"]["query"] == "prometheus"
    assert var["job_label"]["type"] == "custom"
    assert [o["value"] for o in var["job_label"]["options"]] == ["exported_job", "job"]
    assert var["instance"]["definition"] == "label_values(ceemsnet_build_info, instance)"
    assert re.fullmatch(r"label_values\(.*ceemsnet_job_.*, \$job_label\)", var["job"]["definition"])
    for name in ("instance", "job"):
        assert var[name]["datasource"]["uid"] == "${datasource}"
        assert var[name]["query"]["query"] == var[name]["definition"]
    ids, cells = set(), set()
    for p in panels(dash):
        assert p["id"] not in ids, p["title"]
        ids.add(p["id"])
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, ("panels overlap", p["title"])
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p.get("description"), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip(), p["title"]
    titles = " ".join(p["title"] for p in panels(dash))
    for want in ("Network in/out", "File read/write", "File operations", "Top jobs", "socket vs skb",
                 "Map update failures", "kretprobe", "Scrape success", "Map entries", "Hooks", "RDMA bytes (job)",
                 "Hooks skipped and why", "recursion misses", "scrape duration",
                 "RDMA objects (job)", "RDMA ports vs jobs"):
        assert want in titles, want


@pytest.mark.parametrize("metric", ["ceemsnet_map_update_failures_total", "ceemsnet_kretprobe_missed_total",
                                    "ceemsnet_scrape_collector_success", "ceemsnet_map_entries",
                                    "ceemsnet_map_capacity", "ceemsnet_hook_info", "ceemsnet_hook_skipped",
                                    "ceemsnet_bpf_recursion_misses_total", "ceemsnet_rdma_drops_total",
                                    "ceemsnet_scrape_collector_duration_seconds"])
def test_dashboard_shows_health_series(metric):
    assert any(metric in e for _, e in dashboard_exprs()), metric
