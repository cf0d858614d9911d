"""Prometheus and Grafana: promtool on deploy/prometheus/, and the metric
names of the rules and of deploy/grafana/dashboard.json against SPEC §8."""

import json
import re

import yaml

from .context import PROMTOOL, Context, Skip
from .metrics import (
    ADDED_METRICS,
    ADDED_REASONS,
    ALL_METRICS,
    SPEC_METRICS,
    dashboard_queries,
    grafana_to_promql,
    name_problems,
    promql_names,
    rule_exprs,
    series_names,
    spec_added,
    spec_table,
)

RULES = "deploy/prometheus/rules.yml"
RULES_TEST = "deploy/prometheus/rules_test.yml"
SCRAPE_CONFIG = "deploy/prometheus/scrape-config.yml"
DASHBOARD = "deploy/grafana/dashboard.json"
RUNBOOK = "deploy/RUNBOOK.md"
# What each runbook section says, as its bold lead-ins.
RUNBOOK_PARTS = ("What it means", "What to check", "What to do")


def load_rules(ctx: Context) -> dict:
    return yaml.safe_load(ctx.read(RULES)) or {}


def load_dashboard(ctx: Context) -> dict:
    return json.loads(ctx.read(DASHBOARD))


def check_rules(ctx: Context) -> list[str]:
    """promtool check rules: the alerting rules parse and are well formed."""
    return ctx.run_problems([ctx.tool(PROMTOOL), "check", "rules", RULES])


def check_rules_tests(ctx: Context) -> list[str]:
    """promtool test rules: the rules' unit tests pass."""
    return ctx.run_problems([ctx.tool(PROMTOOL), "test", "rules", RULES_TEST])


def check_scrape_config(ctx: Context) -> list[str]:
    """promtool check config on the example prometheus.yml as shipped."""
    return ctx.run_problems([ctx.tool(PROMTOOL), "check", "config", SCRAPE_CONFIG])


def check_generated_config(ctx: Context) -> list[str]:
    """The scrape jobs, with the rules, in a full prometheus.yml that promtool
    accepts; at least one job is named after wsgate (the rules match on it)."""
    promtool = ctx.tool(PROMTOOL)
    scrape = yaml.safe_load(ctx.read(SCRAPE_CONFIG)) or {}
    jobs = scrape.get("scrape_configs") or []
    if not jobs:
        return [f"{SCRAPE_CONFIG}: no scrape_configs"]
    problems = []
    names = [j.get("job_name") for j in jobs]
    if len(names) != len(set(names)):
        problems.append(f"{SCRAPE_CONFIG}: duplicate job_name")
    if not any("wsgate" in (n or "") for n in names):
        problems.append(f'{SCRAPE_CONFIG}: no job named after wsgate (the rules\' up{{job=~".*wsgate.*"}} needs one)')
    generated = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [str(ctx.path(RULES).resolve())],
        "scrape_configs": jobs,
    }
    out = ctx.tmp / "prometheus.yml"
    out.write_text(yaml.safe_dump(generated, sort_keys=False))
    return problems + ctx.run_problems([promtool, "check", "config", out])


def check_metric_names(ctx: Context) -> list[str]:
    """Every metric and label in the rules and the dashboard is one of SPEC §8
    (histograms as _bucket/_sum/_count), process_* or up, and every SPEC §8
    metric is on the dashboard."""
    problems = []
    for group, name, expr in rule_exprs(load_rules(ctx)):
        problems += name_problems(f"rules.yml {group}/{name}", expr)
    queries, query_problems = dashboard_queries(load_dashboard(ctx))
    problems += [f"dashboard.json: {p}" for p in query_problems]
    if not queries:
        problems.append("dashboard.json: no queries found")
    used = set()
    for where, expr in queries:
        problems += name_problems(f"dashboard.json {where}", expr)
        used |= promql_names(expr)[0]
    for name, (kind, _) in ALL_METRICS.items():
        if not series_names(name, kind) & used:
            problems.append(f"dashboard.json: no panel shows {name}")
    exprs = " ".join(expr for _, expr in queries)
    for reason in ADDED_REASONS:
        if not re.search(rf"\b{reason}\b", exprs):
            problems.append(f"dashboard.json: no query names the reason {reason!r} (SPEC §12-§14)")
    return problems


def check_spec_metrics(ctx: Context) -> list[str]:
    """SPEC.md's §8 table lists exactly the metrics of metrics.SPEC_METRICS."""
    if ctx.spec is None:
        raise Skip("SPEC.md not found beside the repository (shared/SPEC.md); set WSGATE_SPEC")
    found = spec_table(ctx.spec.read_text())
    if found is None:
        return [f"{ctx.spec}: no section 8"]
    problems = []
    for n in sorted(set(found) | set(SPEC_METRICS)):
        if found.get(n) != SPEC_METRICS.get(n):
            problems.append(f"SPEC §8 says {n}: {found.get(n)}, metrics.py says {SPEC_METRICS.get(n)}")
    added = spec_added(ctx.spec.read_text()) or {}
    for n in sorted(set(added) | set(ADDED_METRICS)):
        if added.get(n) != (ADDED_METRICS.get(n) or (None, None))[1]:
            problems.append(f"SPEC §8 (added by §12-§15) says {n}: {added.get(n)},"
                            f" metrics.py says {(ADDED_METRICS.get(n) or (None, None))[1]}")
    if problems:
        problems.append("update SPEC_METRICS in scripts/validate_deploy/metrics.py to match SPEC §8")
    return problems


def check_dashboard_json(ctx: Context) -> list[str]:
    """dashboard.json is JSON."""
    try:
        load_dashboard(ctx)
    except json.JSONDecodeError as e:
        return [f"{DASHBOARD}: invalid JSON: {e}"]
    return []


def check_dashboard_structure(ctx: Context) -> list[str]:
    """What Grafana needs to import it: title, uid, schemaVersion, unique
    panel ids, a query and a position for every panel."""
    dash = load_dashboard(ctx)
    problems = [f"dashboard.json: missing {k!r}" for k in ("title", "uid", "panels", "schemaVersion") if k not in dash]
    panels = dash.get("panels") or []
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        problems.append("dashboard.json: panel ids are not unique")
    for p in panels:
        if p.get("type") != "row" and not p.get("targets"):
            problems.append(f"dashboard.json: panel {p.get('title')!r} has no query")
        if "gridPos" not in p:
            problems.append(f"dashboard.json: panel {p.get('title')!r} has no gridPos")
    return problems


def check_dashboard_queries_parse(ctx: Context) -> list[str]:
    """promtool parses every dashboard query (as recording rules, with
    Grafana's variables replaced)."""
    promtool = ctx.tool(PROMTOOL)
    queries, _ = dashboard_queries(load_dashboard(ctx))
    if not queries:
        return ["dashboard.json: no queries found"]
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)} for i, (_, expr) in enumerate(queries)]
    out = ctx.tmp / "dashboard-rules.yml"
    out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    problems = ctx.run_problems([promtool, "check", "rules", out])
    # promtool names a failing rule by its record name: say which query that is.
    output = "\n".join(problems)
    for i, (where, expr) in enumerate(queries):
        if f'"dashboard:query_{i}"' in output:
            problems.append(f"dashboard:query_{i} is dashboard.json {where}: {expr}")
    return problems


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections(text: str) -> dict:
    """{anchor: body} of every `## ` section of RUNBOOK.md."""
    out = {}
    for m in re.finditer(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, re.S | re.M):
        out[github_anchor(m.group(1))] = m.group(2)
    return out


def check_runbooks(ctx: Context) -> list[str]:
    """Every alert has a runbook_url to its own section of deploy/RUNBOOK.md,
    which says what it means, what to check and what to do; every alert has
    a promtool test case in which it fires."""
    problems = []
    sections = runbook_sections(ctx.read(RUNBOOK))
    alerts = [r for g in load_rules(ctx).get("groups") or [] for r in g.get("rules") or [] if "alert" in r]
    for r in alerts:
        name = r["alert"]
        url = (r.get("annotations") or {}).get("runbook_url", "")
        m = re.fullmatch(r"(?:.*/)?deploy/RUNBOOK\.md#([\w-]+)", url)
        if not m:
            problems.append(f"rules.yml {name}: runbook_url {url!r} does not point at {RUNBOOK}#<section>")
            continue
        if m.group(1) != github_anchor(name):
            problems.append(f"rules.yml {name}: runbook_url points at #{m.group(1)}, not #{github_anchor(name)}")
        body = sections.get(m.group(1))
        if body is None:
            problems.append(f"{RUNBOOK}: no section '## {name}' (runbook_url of {name})")
            continue
        for part in RUNBOOK_PARTS:
            if f"**{part}**" not in body:
                problems.append(f"{RUNBOOK} ## {name}: no **{part}**")
    names = {r["alert"] for r in alerts}
    for anchor in sections:
        if anchor.startswith("wsgate") and anchor not in {github_anchor(n) for n in names}:
            problems.append(f"{RUNBOOK}: section #{anchor} is for no alert of rules.yml")
    tests = yaml.safe_load(ctx.read(RULES_TEST)) or {}
    fired = {t.get("alertname") for case in tests.get("tests") or [] for t in case.get("alert_rule_test") or []
             if t.get("exp_alerts")}
    for name in sorted(names - fired):
        problems.append(f"rules_test.yml: no test case in which {name} fires")
    return problems
