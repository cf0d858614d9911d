"""Kubernetes: the kustomizations, every manifest against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict), the Prometheus Operator
resources (no schema there: a structural check), the PrometheusRule generated
from rules.yml, and `kubectl kustomize` builds when kubectl is there."""

import re

import yaml

from .context import KUBECTL, Context, kubernetes_validate
from .manifests import (
    K8S_DIR,
    OPERATOR_GROUP,
    all_manifests,
    container_ports,
    describe,
    kustomizations,
    load_docs,
    manifest_files,
    pod_labels,
    pod_templates,
    selector_matches,
)
from .prometheus import RULES, load_rules
from .wsgate_config import duration_s

PROMETHEUSRULE = "deploy/kubernetes/common/prometheusrule.yaml"
REGEN_COMMAND = "python3 scripts/validate_deploy --regen"
PROMETHEUSRULE_HEADER = f"""\
# GENERATED from deploy/prometheus/rules.yml by `{REGEN_COMMAND}`.
# Do not edit: change rules.yml and regenerate. The deploy check fails when
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

# What a kustomize build of each variant must contain: (kind, name).
COMMON_OBJECTS = {("ConfigMap", "wsgate-config"), ("Secret", "wsgate-feed"), ("PodMonitor", "wsgate"),
                  ("PrometheusRule", "wsgate")}
VARIANTS = {
    "base": (K8S_DIR, COMMON_OBJECTS | {("Deployment", "example-app"), ("Service", "example-app")}),
    "standalone": (f"{K8S_DIR}/standalone", COMMON_OBJECTS | {("Deployment", "wsgate"), ("Service", "wsgate")}),
}


# === kustomizations ===

def check_kustomizations(ctx: Context) -> list[str]:
    """Every kustomization names resources and patches that exist, and every
    manifest under deploy/kubernetes is listed in one."""
    problems, referenced = [], set()
    for k in kustomizations(ctx):
        where = ctx.rel(k)
        docs = load_docs(ctx, k)
        if len(docs) != 1 or docs[0].get("kind") != "Kustomization":
            problems.append(f"{where}: not a single Kustomization document")
            continue
        kz = docs[0]
        if kz.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
            problems.append(f"{where}: apiVersion should be kustomize.config.k8s.io/v1beta1")
        if not kz.get("resources"):
            problems.append(f"{where}: no resources")
        for r in kz.get("resources") or []:
            p = (k.parent / r).resolve()
            if p.is_dir():
                if not (p / "kustomization.yaml").is_file():
                    problems.append(f"{where}: resource {r!r} is a directory without kustomization.yaml")
            elif not p.is_file():
                problems.append(f"{where}: resource {r!r} does not exist")
            else:
                referenced.add(p)
        for patch in kz.get("patches") or []:
            if "path" in patch:
                p = (k.parent / patch["path"]).resolve()
                if not p.is_file():
                    problems.append(f"{where}: patch {patch['path']!r} does not exist")
                referenced.add(p)
            elif "patch" in patch:
                for d in yaml.safe_load_all(patch["patch"]):
                    if not d or "kind" not in d or "name" not in (d.get("metadata") or {}):
                        problems.append(f"{where}: an inline patch lacks kind or metadata.name")
    for f in manifest_files(ctx):
        if f.resolve() not in referenced:
            problems.append(f"{ctx.rel(f)}: not listed in any kustomization.yaml")
    return problems


# === schemas ===

def schema_problems(kv, where: str, doc: dict, version: str) -> list[str]:
    """kubernetes-validate (strict: unknown fields are errors) on one object."""
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{where}: invalid for Kubernetes {e.version}: {path}: {e.message}"]
    except kv.SchemaNotFoundError as e:
        return [f"{where}: {e.message}"]
    return []


def check_kubernetes_validate(ctx: Context) -> list[str]:
    """Every manifest but the Prometheus Operator's is valid for Kubernetes
    $K8S_VERSION, strictly."""
    kv = kubernetes_validate()
    version = ctx.k8s_version
    available = kv.all_versions()
    if not any(kv.major_minor(v) == kv.major_minor(version) for v in available):
        return [f"kubernetes-validate has no schemas for Kubernetes {version}; it has {', '.join(available)}"
                " (set K8S_VERSION)"]
    problems = []
    for f, d in all_manifests(ctx):
        where = describe(ctx, f, d)
        if not all(k in d for k in ("apiVersion", "kind", "metadata")) or not (d["metadata"] or {}).get("name"):
            problems.append(f"{where}: needs apiVersion, kind and metadata.name")
        elif not d["apiVersion"].startswith(OPERATOR_GROUP):  # no schema: check_operator_resources
            problems += schema_problems(kv, where, d, version)
    return problems


# === Prometheus Operator resources ===

OPERATOR_SPEC_KEYS = {
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


def generated_prometheusrule(ctx: Context) -> str:
    """The PrometheusRule that carries rules.yml's groups, byte for byte."""
    lines = ctx.read(RULES).splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    return PROMETHEUSRULE_HEADER + "".join(("  " + line) if line.strip() else line for line in lines[start:])


def regen(ctx: Context) -> str:
    """Rewrites the PrometheusRule from rules.yml; returns its path."""
    ctx.path(PROMETHEUSRULE).write_text(generated_prometheusrule(ctx))
    return PROMETHEUSRULE


def monitor_problems(ctx: Context, where: str, kind: str, spec: dict, manifests) -> list[str]:
    """A PodMonitor or ServiceMonitor: endpoints, and (PodMonitor) that it
    selects pods of deploy/kubernetes by a port name they have."""
    problems = []
    sel = spec.get("selector") or {}
    if not (sel.get("matchLabels") or sel.get("matchExpressions")):
        problems.append(f"{where}: spec.selector selects nothing")
    eps = spec.get("podMetricsEndpoints" if kind == "PodMonitor" else "endpoints") or []
    if not eps:
        problems.append(f"{where}: no endpoints")
    for ep in eps:
        if set(ep) - ENDPOINT_KEYS:
            problems.append(f"{where}: unknown endpoint keys {sorted(set(ep) - ENDPOINT_KEYS)}")
        if "path" in ep and ep["path"] != "/metrics":
            problems.append(f"{where}: wsgate serves its metrics at /metrics, not {ep['path']}")
        for k in ("interval", "scrapeTimeout"):
            if k in ep:
                try:
                    duration_s(ep[k])
                except ValueError:
                    problems.append(f"{where}: {k} {ep[k]!r} is not a duration")
    if kind == "PodMonitor":
        matched = [(f, t) for f, _, t in pod_templates(manifests) if selector_matches(sel, pod_labels(t))]
        if not matched:
            problems.append(f"{where}: the selector matches no pod template in deploy/kubernetes")
        for f, t in matched:
            names = {p.get("name") for _, p in container_ports(t)}
            for ep in eps:
                if "port" in ep and ep["port"] not in names:
                    problems.append(f"{where}: pods of {ctx.rel(f)} have no port named {ep['port']!r}")
    return problems


def prometheusrule_problems(ctx: Context, where: str, path, spec: dict) -> list[str]:
    """The PrometheusRule is exactly what --regen writes from rules.yml."""
    problems = []
    if spec.get("groups") != load_rules(ctx).get("groups"):
        problems.append(f"{where}: spec.groups differ from {RULES}; run {REGEN_COMMAND}")
    elif path.read_text() != generated_prometheusrule(ctx):
        problems.append(f"{where}: not byte-for-byte what --regen writes from rules.yml; run {REGEN_COMMAND}")
    for g in spec.get("groups") or []:
        for r in g.get("rules") or []:
            if not ("alert" in r or "record" in r) or "expr" not in r:
                problems.append(f"{where}: a rule in group {g.get('name')!r} lacks alert/record or expr")
    return problems


def check_operator_resources(ctx: Context) -> list[str]:
    """The PodMonitor and PrometheusRule: apiVersion, known spec keys, a
    selector that finds wsgate's pods and port, the rules of rules.yml."""
    manifests = all_manifests(ctx)
    problems, seen = [], set()
    for f, d in manifests:
        if not d.get("apiVersion", "").startswith(OPERATOR_GROUP):
            continue
        kind = d.get("kind")
        where = describe(ctx, f, d)
        seen.add(kind)
        if d["apiVersion"] != "monitoring.coreos.com/v1":
            problems.append(f"{where}: apiVersion should be monitoring.coreos.com/v1")
        if kind not in OPERATOR_SPEC_KEYS:
            problems.append(f"{where}: unexpected kind")
            continue
        extra_top = set(d) - {"apiVersion", "kind", "metadata", "spec"}
        if extra_top:
            problems.append(f"{where}: unexpected top-level keys {sorted(extra_top)}")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", (d.get("metadata") or {}).get("name", "")):
            problems.append(f"{where}: metadata.name is not a DNS subdomain")
        spec = d.get("spec")
        if not isinstance(spec, dict):
            problems.append(f"{where}: spec must be a mapping")
            continue
        extra = set(spec) - OPERATOR_SPEC_KEYS[kind]
        if extra:
            problems.append(f"{where}: unknown spec keys {sorted(extra)}")
        if kind in ("PodMonitor", "ServiceMonitor"):
            problems += monitor_problems(ctx, where, kind, spec, manifests)
        else:
            problems += prometheusrule_problems(ctx, where, f, spec)
    for kind in ("PodMonitor", "PrometheusRule"):
        if kind not in seen:
            problems.append(f"deploy/kubernetes: no {kind}")
    return problems


# === kubectl kustomize ===

def build_problems(kv, variant: str, docs: list[dict], version: str) -> list[str]:
    """A variant's build output: every object valid, the expected ones there."""
    problems = []
    names = {(d.get("kind"), (d.get("metadata") or {}).get("name")) for d in docs}
    for d in docs:
        if not d.get("apiVersion", "").startswith(OPERATOR_GROUP):
            problems += schema_problems(kv, f"{variant}: {d.get('kind')}/{d['metadata']['name']}", d, version)
    for kind, name in sorted(VARIANTS[variant][1] - names):
        problems.append(f"{variant}: the build lacks {kind}/{name}")
    if variant == "standalone" and ("Deployment", "example-app") in names:
        problems.append("standalone: the build still has the example app")
    return problems


def check_kustomize_build(ctx: Context, variant: str) -> list[str]:
    """`kubectl kustomize` builds the variant, and the result holds up."""
    kubectl = ctx.tool(KUBECTL)
    kv = kubernetes_validate()
    done = ctx.run([kubectl, "kustomize", VARIANTS[variant][0]])
    if done.returncode != 0:
        return done.stderr.splitlines() + [f"kubectl kustomize exited with status {done.returncode}"]
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    return build_problems(kv, variant, docs, ctx.k8s_version)
