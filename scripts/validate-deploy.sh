#!/usr/bin/env bash
# shellcheck disable=SC2016  # the bash -c '...' snippets expand their own $1 $2
# Validates everything under deploy/ offline (no cluster, no container engine,
# no network):
#   - Prometheus: promtool check rules / test rules / check config (the example
#     and a generated full config), dashboard queries parsed by promtool;
#   - Kubernetes: every kustomization's resources exist, every manifest passes
#     kubernetes-validate (strict, Kubernetes $K8S_VERSION), the Prometheus
#     Operator CRs (no schema in kubernetes-validate) get a structural check,
#     the PrometheusRule carries exactly the groups of rules.yml, and the
#     contract between the manifests and wsgate holds (probes, ports,
#     securityContext, grace period vs shutdown timers, secret mounts);
#   - Grafana: JSON, and every metric name in the dashboard and the rules is
#     one of SPEC §8 (histograms as _bucket/_sum/_count), process_* or up;
#   - systemd: systemd-analyze verify and an offline security score;
#   - Docker: a static check of deploy/docker/Dockerfile and .dockerignore.
# Optional, when available: `kubectl kustomize` builds of both variants, and
# `wsgate check` of the configs ($WSGATE_BIN, e.g. target/debug/wsgate).
#
# Usage: scripts/validate-deploy.sh [--regen]
#   --regen  rewrite deploy/kubernetes/common/prometheusrule.yaml from
#            deploy/prometheus/rules.yml first.
# Tools: scripts/install-test-tools.sh. Exit status: 0 when every check
# passed, 1 otherwise (each failure says what is wrong).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

REGEN=0
for arg in "$@"; do
    case "$arg" in
        --regen) REGEN=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "validate-deploy: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

# Native sidecars (initContainers[].restartPolicy) are GA since 1.33.
K8S_VERSION="${K8S_VERSION:-1.33}"
PYTHON="${PYTHON:-python3}"
PROMTOOL="${PROMTOOL:-$(command -v promtool || echo /usr/bin/promtool)}"
SYSTEMD_ANALYZE="${SYSTEMD_ANALYZE:-$(command -v systemd-analyze || echo /usr/bin/systemd-analyze)}"
# SPEC.md lives in shared/ beside the repository (CI and developers alike).
if [ -z "${WSGATE_SPEC:-}" ]; then
    for candidate in "$ROOT/../shared/SPEC.md" "$ROOT/shared/SPEC.md" /work/shared/SPEC.md; do
        if [ -f "$candidate" ]; then WSGATE_SPEC="$candidate"; break; fi
    done
fi
export WSGATE_SPEC="${WSGATE_SPEC:-}" K8S_VERSION ROOT

# ---- tools ------------------------------------------------------------------
missing=()
[ -x "$PROMTOOL" ] || missing+=("promtool (Debian package prometheus)")
[ -x "$SYSTEMD_ANALYZE" ] || missing+=("systemd-analyze (Debian package systemd)")
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing+=("python3")
elif ! "$PYTHON" -c 'import sys, yaml, kubernetes_validate; assert sys.version_info >= (3, 11)' >/dev/null 2>&1; then
    missing+=("python3 >= 3.11 with PyYAML and kubernetes-validate (pip)")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "validate-deploy: FAILED: missing tools:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    echo "validate-deploy: run scripts/install-test-tools.sh (as root) first." >&2
    exit 1
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
export TMP

passed=0
failed=0
failed_names=()

# check NAME COMMAND... : runs COMMAND, shows its output only when it fails.
check() {
    local name="$1"; shift
    local out="$TMP/out.txt"
    if "$@" >"$out" 2>&1; then
        passed=$((passed + 1))
        printf 'ok    %s\n' "$name"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      | /' "$out"
    fi
}

# The Python half: checks that need parsing. Called as `py MODE`.
py() {
    "$PYTHON" - "$@" <<'PYEOF'
import json, os, re, sys, tomllib
from pathlib import Path

import yaml

ROOT = Path(os.environ["ROOT"])
TMP = Path(os.environ["TMP"])
MODE = sys.argv[1]
errors = []


def err(msg):
    errors.append(msg)


def finish():
    for e in dict.fromkeys(errors):  # once each, in order
        print(e)
    sys.exit(1 if errors else 0)


def rel(p):
    try:
        return str(Path(p).relative_to(ROOT))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------- metrics
# SPEC §8, kept here so the check runs where shared/ is absent; cross-checked
# against SPEC.md whenever it is found (mode `spec`).
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
# The standard process collector (the prometheus crate's, as Go's).
PROCESS_METRICS = {
    "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
    "process_virtual_memory_bytes", "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes", "process_start_time_seconds", "process_threads",
}
# Series Prometheus itself makes for every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

ALLOWED_METRICS = set(PROCESS_METRICS) | SYNTHETIC
for name, (kind, _) in SPEC_METRICS.items():
    if kind == "histogram":
        ALLOWED_METRICS |= {name + "_bucket", name + "_sum", name + "_count"}
    else:
        ALLOWED_METRICS.add(name)
# Labels: SPEC §8's, `le` of histograms, and target labels added by scraping.
ALLOWED_LABELS = {l for _, ls in SPEC_METRICS.values() for l in ls} | {
    "le", "job", "instance", "namespace", "pod", "container", "service", "endpoint", "environment", "__name__"}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan"}


def grafana_to_promql(expr):
    """Grafana's variables replaced by values PromQL accepts."""
    e = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    e = re.sub(r"\$\{__(rate_interval|interval|range)(:\w+)?\}", "5m", e)
    e = re.sub(r"\$\{\w+(:\w+)?\}|\$\w+", ".*", e)
    return e


def promql_names(expr):
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
        rest = e[m.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation
        if word.lower() in PROMQL_KEYWORDS:
            continue
        metrics.add(word)
    return metrics, labels


def check_names(where, expr):
    metrics, labels = promql_names(expr)
    if not metrics:
        err(f"{where}: no metric in expression {expr!r}")
    for m in sorted(metrics - ALLOWED_METRICS):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        hint = ""
        if m in SPEC_METRICS and SPEC_METRICS[m][0] == "histogram":
            hint = " (a histogram: use _bucket, _sum or _count)"
        elif base in SPEC_METRICS:
            hint = f" ({base} is a {SPEC_METRICS[base][0]})"
        err(f"{where}: metric {m!r} is not in SPEC §8{hint}: {expr!r}")
    for l in sorted(labels - ALLOWED_LABELS):
        err(f"{where}: label {l!r} is not a label of SPEC §8 nor a target label: {expr!r}")


def load_rules():
    return yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())


def rule_exprs(groups):
    for g in groups:
        for r in g.get("rules", []):
            yield g.get("name"), r.get("alert") or r.get("record"), r["expr"]


def dashboard_queries(dash):
    """(where, promql) for every panel target, and the metric selectors of
    the query variables (label_values(selector, label))."""
    out = []

    def walk(panels, path):
        for p in panels:
            title = p.get("title", "?")
            for t in p.get("targets", []) or []:
                if "expr" in t:
                    out.append((f"panel {title!r} target {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []) or [], path + [title])

    walk(dash.get("panels", []), [])
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*", q or "")
        if m:
            out.append((f"variable {v['name']!r}", m.group(1)))
            if m.group(2) not in ALLOWED_LABELS:
                err(f"variable {v['name']!r}: label {m.group(2)!r} does not exist")
        elif q:
            out.append((f"variable {v['name']!r}", q))
    return out


# ---------------------------------------------------------------- modes
def mode_spec():
    spec = os.environ.get("WSGATE_SPEC")
    if not spec:
        print("SPEC.md not found (set WSGATE_SPEC); using the list in this script")
        return
    text = Path(spec).read_text()
    sec = re.search(r"^## 8\..*?(?=^## )", text, re.S | re.M)
    if not sec:
        return err(f"{spec}: no section 8")
    found = {}
    for m in re.finditer(r"^\|\s*`(wsgate_\w+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|", sec.group(0), re.M):
        kind = m.group(2).split()[0].rstrip(",")
        labels = set() if m.group(3).strip().startswith("—") or not m.group(3).strip() else {
            l.strip() for l in re.sub(r"\(.*\)", "", m.group(3)).split(",") if l.strip()}
        found[m.group(1)] = (kind, labels)
    if found != SPEC_METRICS:
        for n in sorted(set(found) | set(SPEC_METRICS)):
            if found.get(n) != SPEC_METRICS.get(n):
                err(f"SPEC §8 says {n}: {found.get(n)}, this script says {SPEC_METRICS.get(n)}")
        err("update SPEC_METRICS in scripts/validate-deploy.sh to match SPEC §8")
    else:
        print(f"{len(found)} metrics match {spec}")


def mode_metric_names():
    rules = load_rules()
    for group, name, expr in rule_exprs(rules["groups"]):
        check_names(f"rules.yml {group}/{name}", expr)
    dash = json.loads((ROOT / "deploy/grafana/dashboard.json").read_text())
    queries = dashboard_queries(dash)
    if not queries:
        err("dashboard.json: no queries found")
    for where, expr in queries:
        check_names(f"dashboard.json {where}", expr)
    # Every SPEC metric should be on the dashboard somewhere.
    used = set()
    for _, expr in queries:
        used |= promql_names(expr)[0]
    for name, (kind, _) in SPEC_METRICS.items():
        names = {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
        if not names & used:
            err(f"dashboard.json: no panel shows {name}")


def mode_dashboard():
    dash = json.loads((ROOT / "deploy/grafana/dashboard.json").read_text())
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            err(f"dashboard.json: missing {key!r}")
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        err("dashboard.json: panel ids are not unique")
    for p in dash.get("panels", []):
        if p.get("type") != "row" and not p.get("targets"):
            err(f"dashboard.json: panel {p.get('title')!r} has no query")
        if "gridPos" not in p:
            err(f"dashboard.json: panel {p.get('title')!r} has no gridPos")
    # Every query as a recording rule, so promtool's parser checks the PromQL.
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
             for i, (_, expr) in enumerate(dashboard_queries(dash))]
    (TMP / "dashboard-rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))


def mode_prometheus_config():
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/scrape-config.yml").read_text())
    jobs = scrape.get("scrape_configs") or []
    if not jobs:
        return err("scrape-config.yml: no scrape_configs")
    names = [j.get("job_name") for j in jobs]
    if len(names) != len(set(names)):
        err("scrape-config.yml: duplicate job_name")
    if not any("wsgate" in (n or "") for n in names):
        err("scrape-config.yml: no job named after wsgate (the rules' up{job=~\".*wsgate.*\"} needs one)")
    generated = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [str(ROOT / "deploy/prometheus/rules.yml")],
        "scrape_configs": jobs,
    }
    (TMP / "prometheus.yml").write_text(yaml.safe_dump(generated, sort_keys=False))


PROMETHEUSRULE_HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by `scripts/validate-deploy.sh --regen`.
# Do not edit: change rules.yml and regenerate. validate-deploy.sh fails when
# this file and rules.yml differ. Add the labels your Prometheus' ruleSelector
# expects (kube-prometheus-stack: release: <release name>) in an overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: wsgate
  labels:
    app.kubernetes.io/name: wsgate
spec:
"""


def generated_prometheusrule():
    lines = (ROOT / "deploy/prometheus/rules.yml").read_text().splitlines(keepends=True)
    start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    body = "".join(("  " + l) if l.strip() else l for l in lines[start:])
    return PROMETHEUSRULE_HEADER + body


def mode_regen():
    path = ROOT / "deploy/kubernetes/common/prometheusrule.yaml"
    path.write_text(generated_prometheusrule())
    print(f"wrote {rel(path)}")


# ---- durations, configs
def duration_s(text):
    """humantime subset: "500ms", "5s", "1m30s", "2h"."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(text)
    return total


def key_paths(value, prefix=""):
    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{prefix}.{k}" if prefix else k
            out.add(p)
            if k != "headers":  # a free-form map of header names
                out |= key_paths(v, p)
    elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        for x in value:
            out |= key_paths(x, prefix + "[]")
    return out


EXAMPLE_KEYS = None


def check_wsgate_config(where, text, keys=True):
    """Parses a wsgate TOML config; with keys, every key must be one of
    config/example-full.toml (the list of every key wsgate knows)."""
    global EXAMPLE_KEYS
    if EXAMPLE_KEYS is None:
        EXAMPLE_KEYS = key_paths(tomllib.loads((ROOT / "config/example-full.toml").read_text()))
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        err(f"{where}: invalid TOML: {e}")
        return None
    if keys:
        for k in sorted(key_paths(cfg) - EXAMPLE_KEYS):
            err(f"{where}: key {k!r} is not in config/example-full.toml")
    return cfg


def shutdown_budget(cfg):
    server = cfg.get("server", {})
    return duration_s(server.get("shutdown_timeout", "10s")) + duration_s(server.get("shutdown_delay", "0s"))


# ---- Kubernetes
K8S_DIR = ROOT / "deploy/kubernetes"
CRD_GROUP = "monitoring.coreos.com/"


def load_docs(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as e:
        err(f"{rel(path)}: invalid YAML: {e}")
        return []


def kustomizations():
    return sorted(K8S_DIR.rglob("kustomization.yaml"))


def mode_kustomize():
    referenced = set()
    for k in kustomizations():
        docs = load_docs(k)
        if len(docs) != 1 or docs[0].get("kind") != "Kustomization":
            err(f"{rel(k)}: not a single Kustomization document")
            continue
        kz = docs[0]
        if kz.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
            err(f"{rel(k)}: apiVersion should be kustomize.config.k8s.io/v1beta1")
        if not kz.get("resources"):
            err(f"{rel(k)}: no resources")
        for r in kz.get("resources", []):
            p = (k.parent / r).resolve()
            if p.is_dir():
                if not (p / "kustomization.yaml").is_file():
                    err(f"{rel(k)}: resource {r!r} is a directory without kustomization.yaml")
            elif not p.is_file():
                err(f"{rel(k)}: resource {r!r} does not exist")
            else:
                referenced.add(p)
        for patch in kz.get("patches", []) or []:
            if "path" in patch:
                p = (k.parent / patch["path"]).resolve()
                if not p.is_file():
                    err(f"{rel(k)}: patch {patch['path']!r} does not exist")
                referenced.add(p)
            elif "patch" in patch:
                for d in yaml.safe_load_all(patch["patch"]):
                    if not d or "kind" not in d or "name" not in (d.get("metadata") or {}):
                        err(f"{rel(k)}: an inline patch lacks kind or metadata.name")
    for f in sorted(K8S_DIR.rglob("*.y*ml")):
        if f.name != "kustomization.yaml" and f.resolve() not in referenced:
            err(f"{rel(f)}: not listed in any kustomization.yaml")


def all_manifests():
    out = []
    for f in sorted(K8S_DIR.rglob("*.y*ml")):
        if f.name == "kustomization.yaml":
            continue
        for d in load_docs(f):
            out.append((f, d))
    return out


def mode_kubernetes_validate():
    import kubernetes_validate.utils as kv
    version = os.environ["K8S_VERSION"]
    available = kv.all_versions()
    if not any(kv.major_minor(v) == kv.major_minor(version) for v in available):
        return err(f"kubernetes-validate has no schemas for Kubernetes {version}; it has {', '.join(available)}"
                   " (set K8S_VERSION)")
    count = 0
    for f, d in all_manifests():
        where = f"{rel(f)} {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
        if not all(k in d for k in ("apiVersion", "kind", "metadata")) or not d["metadata"].get("name"):
            err(f"{where}: needs apiVersion, kind and metadata.name")
            continue
        if d["apiVersion"].startswith(CRD_GROUP):
            continue  # checked in mode crds
        try:
            kv.validate(d, version, strict=True)
            count += 1
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            err(f"{where}: invalid for Kubernetes {e.version}: {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            err(f"{where}: {e.message}")
    print(f"{count} manifests valid against Kubernetes {version} (strict)")


def pod_templates():
    for f, d in all_manifests():
        if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            yield f, d, d["spec"]["template"]


def selector_matches(sel, labels):
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        op, key, vals = e["operator"], e["key"], e.get("values", [])
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container_ports(tmpl):
    spec = tmpl["spec"]
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in c.get("ports") or []:
            yield c, p


CRD_SPEC_KEYS = {
    "PodMonitor": {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels",
                   "sampleLimit", "targetLimit", "attachMetadata"},
    "ServiceMonitor": {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels",
                       "podTargetLabels", "sampleLimit", "targetLimit", "attachMetadata"},
    "PrometheusRule": {"groups"},
}
ENDPOINT_KEYS = {"port", "portNumber", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "params",
                 "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings", "tlsConfig",
                 "bearerTokenSecret", "basicAuth", "authorization", "oauth2", "followRedirects",
                 "enableHttp2", "filterRunning", "proxyUrl", "trackTimestampsStaleness"}


def mode_crds():
    seen = set()
    for f, d in all_manifests():
        if not d.get("apiVersion", "").startswith(CRD_GROUP):
            continue
        kind = d.get("kind")
        where = f"{rel(f)} {kind}/{(d.get('metadata') or {}).get('name')}"
        seen.add(kind)
        if d["apiVersion"] != "monitoring.coreos.com/v1":
            err(f"{where}: apiVersion should be monitoring.coreos.com/v1")
        if kind not in CRD_SPEC_KEYS:
            err(f"{where}: unexpected kind")
            continue
        if set(d) - {"apiVersion", "kind", "metadata", "spec"}:
            err(f"{where}: unexpected top-level keys {sorted(set(d) - {'apiVersion', 'kind', 'metadata', 'spec'})}")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", d["metadata"].get("name", "")):
            err(f"{where}: metadata.name is not a DNS subdomain")
        spec = d.get("spec")
        if not isinstance(spec, dict):
            err(f"{where}: spec must be a mapping")
            continue
        extra = set(spec) - CRD_SPEC_KEYS[kind]
        if extra:
            err(f"{where}: unknown spec keys {sorted(extra)}")
        if kind in ("PodMonitor", "ServiceMonitor"):
            sel = spec.get("selector") or {}
            if not (sel.get("matchLabels") or sel.get("matchExpressions")):
                err(f"{where}: spec.selector selects nothing")
            eps = spec.get("podMetricsEndpoints" if kind == "PodMonitor" else "endpoints")
            if not eps:
                err(f"{where}: no endpoints")
            for ep in eps or []:
                if set(ep) - ENDPOINT_KEYS:
                    err(f"{where}: unknown endpoint keys {sorted(set(ep) - ENDPOINT_KEYS)}")
                if "path" in ep and ep["path"] != "/metrics":
                    err(f"{where}: wsgate serves its metrics at /metrics, not {ep['path']}")
                for k in ("interval", "scrapeTimeout"):
                    if k in ep:
                        try:
                            duration_s(ep[k])
                        except ValueError:
                            err(f"{where}: {k} {ep[k]!r} is not a duration")
            if kind == "PodMonitor":
                matched = [(pf, t) for pf, _, t in pod_templates()
                           if selector_matches(sel, t["metadata"].get("labels") or {})]
                if not matched:
                    err(f"{where}: the selector matches no pod template in deploy/kubernetes")
                for pf, t in matched:
                    names = {p.get("name") for _, p in container_ports(t)}
                    for ep in eps or []:
                        if "port" in ep and ep["port"] not in names:
                            err(f"{where}: pods of {rel(pf)} have no port named {ep['port']!r}")
        if kind == "PrometheusRule":
            rules = load_rules()
            if spec.get("groups") != rules["groups"]:
                err(f"{where}: spec.groups differ from deploy/prometheus/rules.yml;"
                    " run scripts/validate-deploy.sh --regen")
            elif f.read_text() != generated_prometheusrule():
                err(f"{where}: not byte-for-byte what --regen writes from rules.yml;"
                    " run scripts/validate-deploy.sh --regen")
            for g in spec.get("groups") or []:
                for r in g.get("rules", []):
                    if not ("alert" in r or "record" in r) or "expr" not in r:
                        err(f"{where}: a rule in group {g.get('name')!r} lacks alert/record or expr")
    for kind in ("PodMonitor", "PrometheusRule"):
        if kind not in seen:
            err(f"deploy/kubernetes: no {kind}")


def is_wsgate(c):
    return re.match(r"^(.*/)?wsgate(:|@|$)", c.get("image", "")) is not None


def mode_contract():
    manifests = all_manifests()
    by_kind = {}
    for f, d in manifests:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = (f, d)
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    saw_sidecar = saw_standalone = False

    for f, dep, tmpl in pod_templates():
        where = f"{rel(f)} {dep['kind']}/{dep['metadata']['name']}"
        spec = tmpl["spec"]
        psc = spec.get("securityContext") or {}
        if not selector_matches(dep["spec"]["selector"], tmpl["metadata"].get("labels") or {}):
            err(f"{where}: spec.selector does not match the pod template's labels")
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        containers = [(c, False) for c in spec.get("containers") or []] + \
                     [(c, True) for c in spec.get("initContainers") or []]
        for c, init in containers:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                err(f"{cw}: runAsNonRoot must be true")
            if sc.get("runAsUser", psc.get("runAsUser", 1)) == 0:
                err(f"{cw}: runs as uid 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                err(f"{cw}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                err(f"{cw}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                err(f"{cw}: privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                err(f"{cw}: capabilities.drop must contain ALL")
            if (sc.get("capabilities") or {}).get("add"):
                err(f"{cw}: adds capabilities")
            if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                err(f"{cw}: seccompProfile must be RuntimeDefault")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        err(f"{cw}: resources.{part}.{r} missing")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    err(f"{cw}: env {e['name']} refers to Secret {ref['name']!r} that is not in deploy/kubernetes")
            if not is_wsgate(c):
                continue

            # ---- the wsgate container
            if init:
                if c.get("restartPolicy") != "Always":
                    err(f"{cw}: a wsgate init container must be a native sidecar (restartPolicy: Always)")
                saw_sidecar = True
            else:
                saw_standalone = True
            ports = {p.get("name"): p for p in c.get("ports") or []}
            if not any(p.get("containerPort") == 9750 for p in ports.values()):
                err(f"{cw}: no containerPort 9750")

            def probe(kind, path):
                pr = c.get(kind)
                if not pr:
                    return err(f"{cw}: no {kind}")
                hg = pr.get("httpGet") or {}
                if hg.get("path") != path:
                    err(f"{cw}: {kind} must GET {path}, not {hg.get('path')}")
                port = hg.get("port")
                if not (port == 9750 or (port in ports and ports[port].get("containerPort") == 9750)):
                    err(f"{cw}: {kind} port {port!r} is not port 9750")

            probe("livenessProbe", "/healthz")
            probe("readinessProbe", "/readyz")
            args = c.get("args") or []
            if args[:2] != ["run", "--config"] or len(args) != 3:
                err(f"{cw}: args should be [run, --config, PATH], not {args}")
                continue
            config_path = args[2]
            mounts = c.get("volumeMounts") or []

            def mount_for(path):
                best = None
                for m in mounts:
                    mp = m["mountPath"].rstrip("/")
                    if path.startswith(mp + "/") and (best is None or len(mp) > len(best["mountPath"])):
                        best = m
                return best

            m = mount_for(config_path)
            if not m:
                err(f"{cw}: nothing is mounted at {config_path}")
                continue
            if "subPath" in m:
                err(f"{cw}: the config is mounted with subPath, which never sees ConfigMap updates")
            vol = volumes.get(m["name"]) or {}
            cm_name = (vol.get("configMap") or {}).get("name")
            if cm_name not in configmaps:
                err(f"{cw}: {config_path} is not from a ConfigMap in deploy/kubernetes")
                continue
            file_name = config_path[len(m["mountPath"].rstrip("/")) + 1:]
            items = {i["path"]: i["key"] for i in (vol["configMap"].get("items") or [])}
            key = items.get(file_name, file_name if not items else None)
            data = configmaps[cm_name][1].get("data") or {}
            if key not in data:
                err(f"{cw}: ConfigMap {cm_name} has no key for {file_name}")
                continue
            # Keys are checked once per ConfigMap in mode configs.
            cfg = check_wsgate_config(f"ConfigMap {cm_name} key {key}", data[key], keys=False)
            if cfg is None:
                continue
            if not cfg.get("server", {}).get("listen", "").startswith("0.0.0.0:9750"):
                err(f"ConfigMap {cm_name}: server.listen must be 0.0.0.0:9750 for the probes and Prometheus")
            delay = duration_s(cfg.get("server", {}).get("shutdown_delay", "0s"))
            if delay <= 0:
                err(f"ConfigMap {cm_name}: set server.shutdown_delay (~5s) so Services drop the pod first")
            budget = shutdown_budget(cfg)
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if not grace > budget:
                err(f"{where}: terminationGracePeriodSeconds {grace} must be above"
                    f" shutdown_delay + shutdown_timeout = {budget:g}s")
            for i, u in enumerate(cfg.get("upstreams", [])):
                tf = (u.get("auth") or {}).get("token_file")
                if not tf:
                    continue
                sm = mount_for(tf)
                sv = volumes.get(sm["name"]) if sm else None
                if not sv or "secret" not in sv:
                    err(f"{cw}: upstreams[{i}].auth.token_file {tf} is not on a Secret volume")
                    continue
                if "subPath" in sm:
                    err(f"{cw}: {tf} is mounted with subPath, which never sees Secret rotation")
                sname = sv["secret"]["secretName"]
                fname = tf[len(sm["mountPath"].rstrip("/")) + 1:]
                sitems = {it["path"]: it["key"] for it in (sv["secret"].get("items") or [])}
                skey = sitems.get(fname, fname if not sitems else None)
                if sname not in secrets:
                    err(f"{cw}: Secret {sname} is not in deploy/kubernetes")
                    continue
                sdoc = secrets[sname][1]
                if skey not in (sdoc.get("data") or {}) and skey not in (sdoc.get("stringData") or {}):
                    err(f"{cw}: Secret {sname} has no key {skey!r} for {tf}")

    if not saw_sidecar:
        err("deploy/kubernetes: no Deployment runs wsgate as a native sidecar")
    if not saw_standalone:
        err("deploy/kubernetes: no Deployment runs wsgate standalone")
    for name, (f, svc) in by_kind.get("Service", {}).items():
        sel = {"matchLabels": svc["spec"].get("selector") or {}}
        matched = [t for _, _, t in pod_templates() if selector_matches(sel, t["metadata"].get("labels") or {})]
        if not matched:
            err(f"{rel(f)} Service/{name}: the selector matches no pod template")
        for p in svc["spec"].get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            for t in matched:
                if isinstance(tp, str) and tp not in {pp.get("name") for _, pp in container_ports(t)}:
                    err(f"{rel(f)} Service/{name}: targetPort {tp!r} is not a port of the selected pods")


def mode_configs():
    for path in ("config/wsgate.toml",):
        check_wsgate_config(path, (ROOT / path).read_text())
    for f, d in all_manifests():
        if d["kind"] == "ConfigMap":
            for k, v in (d.get("data") or {}).items():
                if k.endswith(".toml"):
                    check_wsgate_config(f"{rel(f)} ConfigMap/{d['metadata']['name']} key {k}", v)
                    # For `wsgate check` below.
                    (TMP / f"configmap-{d['metadata']['name']}-{k}").write_text(v)


def mode_kustomize_build():
    """Checks kubectl kustomize's output (file in argv[2], variant in argv[3])."""
    import kubernetes_validate.utils as kv
    docs = [d for d in yaml.safe_load_all(Path(sys.argv[2]).read_text()) if d]
    variant = sys.argv[3]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for d in docs:
        if d["apiVersion"].startswith(CRD_GROUP):
            continue
        try:
            kv.validate(d, os.environ["K8S_VERSION"], strict=True)
        except kv.ValidationError as e:
            err(f"{variant}: {d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")
    want = {("ConfigMap", "wsgate-config"), ("Secret", "wsgate-feed"), ("PodMonitor", "wsgate"),
            ("PrometheusRule", "wsgate")}
    want |= {("Deployment", "example-app"), ("Service", "example-app")} if variant == "base" else {
        ("Deployment", "wsgate"), ("Service", "wsgate")}
    for k in sorted(want - names):
        err(f"{variant}: the build lacks {k[0]}/{k[1]}")
    if variant == "standalone" and ("Deployment", "example-app") in names:
        err("standalone: the build still has the example app")
    print(f"{variant}: {len(docs)} resources")


def mode_systemd():
    unit = (ROOT / "deploy/systemd/wsgate.service").read_text()
    directives = {}
    for line in unit.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            directives.setdefault(k.strip(), []).append(v.strip())
    want = {
        "ExecStart": "/usr/local/bin/wsgate run --config /etc/wsgate/wsgate.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    for k, v in want.items():
        if v not in directives.get(k, []):
            err(f"wsgate.service: expected {k}={v}")
    if "@system-service" not in directives.get("SystemCallFilter", []):
        err("wsgate.service: expected SystemCallFilter=@system-service")
    if "ProcSubset" in directives:
        err("wsgate.service: ProcSubset=pid hides /proc/stat, which the process_* metrics need")
    stop = directives.get("TimeoutStopSec", ["90s"])[-1]
    budget = max(shutdown_budget(tomllib.loads((ROOT / "config/wsgate.toml").read_text())), 15)
    if not duration_s(stop if re.search(r"[a-z]$", stop) else stop + "s") > budget:
        err(f"wsgate.service: TimeoutStopSec={stop} must be above shutdown_delay + shutdown_timeout ({budget:g}s)")
    # A copy that systemd-analyze verify can check here: the real binary when
    # given, else /bin/true (verify insists that ExecStart exists).
    binary = os.environ.get("WSGATE_BIN") or "/bin/true"
    (TMP / "wsgate.service").write_text(unit.replace("ExecStart=/usr/local/bin/wsgate", f"ExecStart={binary}", 1))


def mode_docker():
    path = ROOT / "deploy/docker/Dockerfile"
    text = path.read_text()
    # Join continuation lines, drop comments.
    logical, cur = [], ""
    for line in text.splitlines():
        if not cur and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip():
            logical.append(cur.strip())
        cur = ""
    instr = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in logical]
    args = {}
    for op, rest in instr:
        if op == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v

    def expand(s):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), s)

    froms = [expand(r) for op, r in instr if op == "FROM"]
    if len(froms) < 2:
        err("Dockerfile: not multi-stage")
    elif not re.match(r"rust:1-slim-bookworm\s+AS\s+\w+", froms[0], re.I):
        err(f"Dockerfile: build stage should be FROM rust:1-slim-bookworm AS ..., is {froms[0]}")
    elif not re.match(r"(debian:bookworm-slim|gcr\.io/distroless/cc-debian12:nonroot)$", froms[-1].split()[0]):
        err(f"Dockerfile: runtime stage should be debian:bookworm-slim or distroless cc-debian12:nonroot, is {froms[-1]}")
    runs = " ".join(r for op, r in instr if op == "RUN")
    if "cargo build --release --locked" not in runs:
        err("Dockerfile: no `cargo build --release --locked`")
    last_stage = instr[max(i for i, (op, _) in enumerate(instr) if op == "FROM"):]

    def one(op):
        found = [r for o, r in last_stage if o == op]
        return found[-1] if found else None

    def exec_form(op):
        v = one(op)
        try:
            return json.loads(v) if v else None
        except json.JSONDecodeError:
            err(f"Dockerfile: {op} must use the exec (JSON) form")
            return None

    if exec_form("ENTRYPOINT") != ["wsgate"]:
        err('Dockerfile: ENTRYPOINT should be ["wsgate"]')
    if exec_form("CMD") != ["run", "--config", "/etc/wsgate/wsgate.toml"]:
        err('Dockerfile: CMD should be ["run","--config","/etc/wsgate/wsgate.toml"]')
    if "9750" not in (one("EXPOSE") or "").split():
        err("Dockerfile: EXPOSE 9750 missing")
    user = expand(one("USER") or "")
    uid = user.split(":")[0]
    if not uid.isdigit() and user != "nonroot":
        err(f"Dockerfile: USER should be numeric (runAsNonRoot checks it), is {user!r}")
    elif uid.isdigit() and int(uid) == 0:
        err("Dockerfile: USER is root")
    hc = one("HEALTHCHECK")
    if not hc:
        err("Dockerfile: no HEALTHCHECK")
    elif "/healthz" not in hc:
        err("Dockerfile: the HEALTHCHECK should GET /healthz")
    elif "distroless" in froms[-1] and "CMD-SHELL" not in hc and "/bin/" in hc:
        err("Dockerfile: distroless has no shell for the HEALTHCHECK")
    copies = [r for op, r in last_stage if op == "COPY"]
    if not any(c.endswith("/usr/local/bin/wsgate") and "--from=" in c for c in copies):
        err("Dockerfile: the binary is not copied to /usr/local/bin/wsgate")
    if not any(c.split()[-2:] == ["config/wsgate.toml", "/etc/wsgate/wsgate.toml"] for c in copies):
        err("Dockerfile: config/wsgate.toml is not copied to /etc/wsgate/wsgate.toml")
    for op, rest in instr:
        if op == "COPY" and "--from=" not in rest:
            for src in rest.split()[:-1]:
                if not src.startswith("--") and src != "." and not (ROOT / src).exists():
                    err(f"Dockerfile: COPY source {src} does not exist")
    ignore = (ROOT / ".dockerignore").read_text().split()
    for want in ("target/", ".git", "fuzz/target/"):
        if want not in ignore and want.rstrip("/") not in ignore:
            err(f".dockerignore: {want} missing")
    for want in ("src", "Cargo.toml", "Cargo.lock", "config"):
        if want in ignore or want + "/" in ignore:
            err(f".dockerignore: excludes {want}, which the build needs")


{
    "spec": mode_spec, "metric-names": mode_metric_names, "dashboard": mode_dashboard,
    "prometheus-config": mode_prometheus_config, "regen": mode_regen, "kustomize": mode_kustomize,
    "kubernetes-validate": mode_kubernetes_validate, "crds": mode_crds, "contract": mode_contract,
    "configs": mode_configs, "kustomize-build": mode_kustomize_build, "systemd": mode_systemd,
    "docker": mode_docker,
}[MODE]()
finish()
PYEOF
}

if [ "$REGEN" = 1 ]; then
    py regen || exit 1
fi

echo "validate-deploy: $(basename "$PROMTOOL") $("$PROMTOOL" --version 2>&1 | head -n1 | awk '{print $3}'), Kubernetes schemas $K8S_VERSION"

# ---- Prometheus -------------------------------------------------------------
check "promtool check rules deploy/prometheus/rules.yml" \
    "$PROMTOOL" check rules deploy/prometheus/rules.yml
check "promtool test rules deploy/prometheus/rules_test.yml" \
    "$PROMTOOL" test rules deploy/prometheus/rules_test.yml
check "promtool check config deploy/prometheus/scrape-config.yml" \
    "$PROMTOOL" check config deploy/prometheus/scrape-config.yml
check "generate a full prometheus.yml from scrape-config.yml" py prometheus-config
if [ -f "$TMP/prometheus.yml" ]; then
    check "promtool check config (generated prometheus.yml)" "$PROMTOOL" check config "$TMP/prometheus.yml"
fi
check "metric and label names in rules and dashboard are SPEC §8's" py metric-names
check "SPEC §8 matches this script's metric list" py spec

# ---- Grafana ----------------------------------------------------------------
check "python3 -m json.tool deploy/grafana/dashboard.json" \
    "$PYTHON" -m json.tool deploy/grafana/dashboard.json /dev/null
check "dashboard structure" py dashboard
if [ -f "$TMP/dashboard-rules.yml" ]; then
    check "dashboard queries parse (promtool)" "$PROMTOOL" check rules "$TMP/dashboard-rules.yml"
fi

# ---- Kubernetes -------------------------------------------------------------
check "kustomization resources exist, no orphan manifests" py kustomize
check "kubernetes-validate --strict (Kubernetes $K8S_VERSION)" py kubernetes-validate
check "PodMonitor and PrometheusRule structure; PrometheusRule == rules.yml" py crds
check "manifests vs wsgate: probes, ports, securityContext, grace period, mounts" py contract
check "wsgate configs use only keys of config/example-full.toml" py configs
if command -v kubectl >/dev/null 2>&1; then
    for variant in base standalone; do
        dir=deploy/kubernetes
        [ "$variant" = standalone ] && dir=deploy/kubernetes/standalone
        if kubectl kustomize "$dir" >"$TMP/build-$variant.yaml" 2>"$TMP/build-$variant.err"; then
            check "kubectl kustomize $dir" py kustomize-build "$TMP/build-$variant.yaml" "$variant"
        else
            check "kubectl kustomize $dir" bash -c 'cat "$1"; exit 1' _ "$TMP/build-$variant.err"
        fi
    done
else
    echo "skip  kubectl kustomize (kubectl not installed; the checks above do not need it)"
fi

# ---- wsgate itself (optional) -------------------------------------------------
if [ -n "${WSGATE_BIN:-}" ]; then
    check "wsgate check --config config/wsgate.toml" "$WSGATE_BIN" check --config config/wsgate.toml
    for f in "$TMP"/configmap-*.toml; do
        [ -e "$f" ] || continue
        check "wsgate check (ConfigMap $(basename "$f" .toml | sed 's/^configmap-//'))" \
            "$WSGATE_BIN" check --no-files --config "$f"   # its files exist only in the pod
    done
else
    echo "skip  wsgate check (set WSGATE_BIN to a built wsgate to run it)"
fi

# ---- systemd ----------------------------------------------------------------
check "wsgate.service directives" py systemd
if [ -f "$TMP/wsgate.service" ]; then
    # verify needs ExecStart to exist: the copy points at ${WSGATE_BIN:-/bin/true}.
    check "systemd-analyze verify wsgate.service" \
        bash -c '"$1" verify "$2" 2>&1 | tee "$3"; [ "${PIPESTATUS[0]}" -eq 0 ] && ! [ -s "$3" ]' _ \
        "$SYSTEMD_ANALYZE" "$TMP/wsgate.service" "$TMP/verify.log"
    # Exposure 0 (best) .. 10 (worst); --threshold is in tenths. Keep it "OK" (< 2.0).
    if "$SYSTEMD_ANALYZE" security --help 2>/dev/null | grep -q -- '--offline'; then
        check "systemd-analyze security --offline (exposure below 2.0)" \
            bash -c 'set -o pipefail; "$1" security --offline=yes --threshold=20 --no-pager "$2" | tail -n 1' _ \
            "$SYSTEMD_ANALYZE" "$TMP/wsgate.service"
    else
        echo "skip  systemd-analyze security --offline (systemd < 250)"
    fi
fi

# ---- Docker -----------------------------------------------------------------
check "Dockerfile and .dockerignore" py docker

echo
if [ "$failed" -gt 0 ]; then
    echo "validate-deploy: FAILED: $failed of $((passed + failed)) checks failed:"
    printf '  - %s\n' "${failed_names[@]}"
    exit 1
fi
echo "validate-deploy: OK: all $passed checks passed"
