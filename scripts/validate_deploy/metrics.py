"""SPEC §8's metrics, and the metric and label names a PromQL expression uses.

Plain functions with no I/O: the Prometheus checks feed them rules.yml and
dashboard.json; the unit tests feed them small expressions."""

import re

# SPEC §8, kept here so the check runs where shared/ is absent; cross-checked
# against SPEC.md whenever it is found (check_spec_metrics).
SPEC_METRICS = {
    "wsgate_build_info": ("gauge", {"version"}),
    "wsgate_upstream_up": ("gauge", {"upstream"}),
    "wsgate_upstream_state": ("gauge", {"upstream", "state"}),
    "wsgate_upstream_connects_total": ("counter", {"upstream"}),
    "wsgate_upstream_connect_failures_total": ("counter", {"upstream", "reason"}),
    "wsgate_upstream_disconnects_total": ("counter", {"upstream", "reason"}),
    "wsgate_upstream_messages_total": ("counter", {"upstream"}),
    "wsgate_upstream_bytes_total": ("counter", {"upstream"}),
    "wsgate_upstream_decode_errors_total": ("counter", {"upstream"}),
    "wsgate_upstream_last_message_timestamp_seconds": ("gauge", {"upstream"}),
    "wsgate_upstream_ping_rtt_seconds": ("histogram", {"upstream"}),
    "wsgate_upstream_downtime_seconds": ("histogram", {"upstream"}),
    "wsgate_subscribers": ("gauge", {"kind"}),
    "wsgate_subscriber_messages_total": ("counter", {"kind"}),
    "wsgate_subscriber_dropped_total": ("counter", {"kind", "reason"}),
    "wsgate_subscriber_disconnects_total": ("counter", {"reason"}),
    "wsgate_fanout_latency_seconds": ("histogram", set()),
}
# SPEC §8's "Added by §12-§15" list (same rules). Its types are not in
# SPEC's text but follow from the names (a histogram says so in SPEC).
ADDED_METRICS = {
    "wsgate_upstream_wire_bytes_total": ("counter", {"upstream"}),
    "wsgate_upstream_sequence_gaps_total": ("counter", {"upstream"}),
    "wsgate_upstream_sequence_missed_total": ("counter", {"upstream"}),
    "wsgate_upstream_duplicates_total": ("counter", {"upstream"}),
    "wsgate_topic_last_message_age_seconds": ("gauge", {"upstream", "topic"}),
    "wsgate_topic_stale": ("gauge", {"upstream", "topic"}),
    "wsgate_connect_wait_seconds": ("histogram", set()),
    "wsgate_upstream_rotations_total": ("counter", {"upstream"}),
    "wsgate_upstream_link_up": ("gauge", {"upstream", "link"}),
    "wsgate_upstream_link_first_total": ("counter", {"upstream", "link"}),
    "wsgate_cluster_owned_upstreams": ("gauge", set()),
    "wsgate_cluster_lease_changes_total": ("counter", {"upstream"}),
}
# Named in the fine print of SPEC §14a (Replay, conflate, block), not in §8's
# list: allowed in rules and the dashboard, not cross-checked with §8.
FINE_PRINT_METRICS = {
    "wsgate_upstream_paused_seconds_total": ("counter", {"upstream"}),
}
# The bounded `reason` values (SPEC §4, §12-§14): the dashboard names the
# ones added by §12-§14 explicitly.
REASONS = ("dns", "tcp", "tls", "timeout", "http_4xx", "http_5xx", "auth", "closed", "dead_link", "idle",
           "oversize", "protocol", "panic", "shutdown", "reload", "proxy", "handshake", "rotate", "sequence",
           "stale")
ADDED_REASONS = ("handshake", "sequence", "stale", "proxy", "rotate")
# The standard process collector (the prometheus crate's, as Go's).
PROCESS_METRICS = {
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
}
# Series Prometheus itself makes for every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def series_names(name: str, kind: str) -> set:
    """The series a metric family exposes: a histogram's _bucket/_sum/_count."""
    return {name + s for s in HISTOGRAM_SUFFIXES} if kind == "histogram" else {name}


ALL_METRICS = {**SPEC_METRICS, **ADDED_METRICS, **FINE_PRINT_METRICS}
ALLOWED_METRICS = set(PROCESS_METRICS) | SYNTHETIC
for _name, (_kind, _) in ALL_METRICS.items():
    ALLOWED_METRICS |= series_names(_name, _kind)
# Labels: SPEC §8's, `le` of histograms, and target labels added by scraping.
ALLOWED_LABELS = {label for _, labels in ALL_METRICS.values() for label in labels} | {
    "le", "job", "instance", "namespace", "pod", "container", "service", "endpoint", "environment", "__name__"
}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "inf", "nan",
}


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced by values PromQL accepts."""
    e = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    e = re.sub(r"\$\{__(rate_interval|interval|range)(:\w+)?\}", "5m", e)
    e = re.sub(r"\$\{\w+(:\w+)?\}|\$\w+", ".*", e)
    return e


def promql_names(expr: str) -> tuple[set, set]:
    """(metric names, label names) an expression refers to. Not a parser, but
    enough for the expressions we write: strings, matchers, grouping clauses
    and ranges are removed before the remaining identifiers are read."""
    labels = set()
    e = grafana_to_promql(expr)
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', e)
    for m in re.finditer(r"\{([^}]*)\}", e):
        for lm in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(1)):
            labels.add(lm.group(1))
    e = re.sub(r"\{[^}]*\}", " ", e)
    grouping = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
    for m in grouping.finditer(e):
        labels |= {x.strip() for x in m.group(2).split(",") if x.strip()}
    e = grouping.sub(" ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", e)
    metrics = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)", e):
        word = m.group(1)
        if e[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if word.lower() in PROMQL_KEYWORDS:
            continue
        metrics.add(word)
    return metrics, labels


def name_problems(where: str, expr: str) -> list[str]:
    """Every metric and label of `expr` that SPEC §8 does not define."""
    problems = []
    metrics, labels = promql_names(expr)
    if not metrics:
        problems.append(f"{where}: no metric in expression {expr!r}")
    for m in sorted(metrics - ALLOWED_METRICS):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        hint = ""
        if m in ALL_METRICS and ALL_METRICS[m][0] == "histogram":
            hint = " (a histogram: use _bucket, _sum or _count)"
        elif base in ALL_METRICS:
            hint = f" ({base} is a {ALL_METRICS[base][0]})"
        problems.append(f"{where}: metric {m!r} is not in SPEC §8{hint}: {expr!r}")
    for label in sorted(labels - ALLOWED_LABELS):
        problems.append(f"{where}: label {label!r} is not a label of SPEC §8 nor a target label: {expr!r}")
    return problems


def rule_exprs(rules: dict):
    """(group, alert or record name, expr) of a Prometheus rules file."""
    for g in rules.get("groups") or []:
        for r in g.get("rules") or []:
            yield g.get("name"), r.get("alert") or r.get("record"), r.get("expr", "")


def dashboard_queries(dash: dict) -> tuple[list, list]:
    """([(where, promql)], problems): every panel target (nested rows too),
    and the metric selectors of the query variables (label_values(sel, label))."""
    out, problems = [], []

    def walk(panels):
        for p in panels:
            for t in p.get("targets") or []:
                if "expr" in t:
                    out.append((f"panel {p.get('title', '?')!r} target {t.get('refId')}", t["expr"]))
            walk(p.get("panels") or [])

    walk(dash.get("panels") or [])
    for v in (dash.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*", q or "")
        if m:
            out.append((f"variable {v.get('name')!r}", m.group(1)))
            if m.group(2) not in ALLOWED_LABELS:
                problems.append(f"variable {v.get('name')!r}: label {m.group(2)!r} does not exist")
        elif q:
            out.append((f"variable {v.get('name')!r}", q))
    return out, problems


def spec_table(text: str) -> dict | None:
    """{name: (type, labels)} from the table of SPEC.md's section 8, or None
    when there is no section 8. Rows look like
    | `wsgate_x_total` | counter | upstream, reason (a, b) |."""
    section = re.search(r"^## 8\..*?(?=^## |\Z)", text, re.S | re.M)
    if not section:
        return None
    found = {}
    row = re.compile(r"^\|\s*`(wsgate_\w+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|", re.M)
    for m in row.finditer(section.group(0)):
        kind = m.group(2).split()[0].rstrip(",")
        cell = m.group(3).strip()
        labels = set()
        if cell and not cell.startswith("—"):
            labels = {x.strip() for x in re.sub(r"\(.*\)", "", cell).split(",") if x.strip()}
        found[m.group(1)] = (kind, labels)
    return found


def spec_added(text: str) -> dict | None:
    """{name: labels} of SPEC §8's "Added by §12-§15" paragraph, or None when
    there is none. Items look like `wsgate_x_total{upstream,topic}` or
    `wsgate_x_seconds` (histogram)."""
    section = re.search(r"^## 8\..*?(?=^## |\Z)", text, re.S | re.M)
    para = re.search(r"^Added by .*?(?=\n\n|\Z)", section.group(0), re.S | re.M) if section else None
    if not para:
        return None
    return {m.group(1): {x.strip() for x in (m.group(2) or "").split(",") if x.strip()}
            for m in re.finditer(r"`(wsgate_\w+)(?:\{([^}]*)\})?`", para.group(0))
            if m.group(1) != "wsgate_subscribers"}
