"""Kubernetes: the kustomizations and components, every manifest against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict), the Prometheus
Operator resources (no schema there: a structural check), the PrometheusRule
generated from rules.yml, and the `kubectl kustomize` build of each variant:
valid, complete, with a NetworkPolicy and (standalone) a PodDisruptionBudget,
no Secret; and the sidecar component applied to a Deployment it has never
seen."""

import os
import re

import yaml

from .context import Context, kubernetes_validate
from .manifests import (
    COMPONENT_API,
    K8S_DIR,
    KUSTOMIZE_API,
    OPERATOR_GROUP,
    all_manifests,
    container_ports,
    describe,
    kustomizations,
    load_docs,
    manifest_files,
    pod_labels,
    pod_templates,
    render,
    selector_matches,
)
from .prometheus import RULES, load_rules
from .wsgate_config import duration_s

PROMETHEUSRULE = "deploy/kubernetes/components/monitoring/prometheusrule.yaml"
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

# What a kustomize build of each variant must contain: (kind, name). No
# Secret anywhere: wsgate-feed is created out of band (deploy/README.md).
MONITORING = {("PodMonitor", "wsgate"), ("PrometheusRule", "wsgate")}
VARIANTS = {
    "base": (f"{K8S_DIR}/base", {("ConfigMap", "wsgate-config")}),
    "sidecar": (f"{K8S_DIR}/examples/sidecar", MONITORING | {
        ("ConfigMap", "wsgate-config"), ("Deployment", "example-app"), ("Service", "example-app"),
        ("NetworkPolicy", "wsgate-sidecar")}),
    "standalone": (f"{K8S_DIR}/standalone", MONITORING | {
        ("ConfigMap", "wsgate-config"), ("Deployment", "wsgate"), ("Service", "wsgate"),
        ("NetworkPolicy", "wsgate"), ("PodDisruptionBudget", "wsgate")}),
    "cluster": (f"{K8S_DIR}/examples/cluster", MONITORING | {
        ("ConfigMap", "wsgate-config"), ("StatefulSet", "wsgate"), ("Service", "wsgate"),
        ("Service", "wsgate-headless"), ("NetworkPolicy", "wsgate"), ("PodDisruptionBudget", "wsgate")}),
}
SIDECAR_COMPONENT = f"{K8S_DIR}/components/sidecar"
MONITORING_COMPONENT = f"{K8S_DIR}/components/monitoring"
WSGATE_PORT = 9750


# === kustomizations ===

def check_kustomizations(ctx: Context) -> list[str]:
    """Every kustomization names resources and patches that exist, and every
    manifest under deploy/kubernetes is listed in one."""
    problems, referenced = [], set()
    for k in kustomizations(ctx):
        where = ctx.rel(k)
        docs = load_docs(ctx, k)
        if len(docs) != 1 or docs[0].get("kind") not in ("Kustomization", "Component"):
            problems.append(f"{where}: not a single Kustomization or Component document")
            continue
        kz = docs[0]
        api = KUSTOMIZE_API if kz["kind"] == "Kustomization" else COMPONENT_API
        if kz.get("apiVersion") != api:
            problems.append(f"{where}: apiVersion of a {kz['kind']} should be {api}")
        if not kz.get("resources") and not kz.get("patches"):
            problems.append(f"{where}: no resources and no patches")
        for c in kz.get("components") or []:
            p = (k.parent / c).resolve() / "kustomization.yaml"
            if not p.is_file() or (load_docs(ctx, p) or [{}])[0].get("kind") != "Component":
                problems.append(f"{where}: component {c!r} is not a directory with a Component")
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
    """A variant's build output: every object valid, the expected ones there,
    no Secret (the credentials are never part of the manifests)."""
    problems = []
    names = {(d.get("kind"), (d.get("metadata") or {}).get("name")) for d in docs}
    for d in docs:
        if not d.get("apiVersion", "").startswith(OPERATOR_GROUP):
            problems += schema_problems(kv, f"{variant}: {d.get('kind')}/{d['metadata']['name']}", d, version)
        if d.get("kind") == "Secret":
            problems.append(f"{variant}: the build has Secret/{d['metadata']['name']}: create Secrets out of band"
                            " (kubectl create secret generic ...), never as a placeholder that overwrites the real one")
    for kind, name in sorted(VARIANTS[variant][1] - names):
        problems.append(f"{variant}: the build lacks {kind}/{name}")
    if variant == "standalone" and ("Deployment", "example-app") in names:
        problems.append("standalone: the build still has the example app")
    return problems


def check_kustomize_build(ctx: Context, variant: str) -> list[str]:
    """`kubectl kustomize` builds the variant, and the result holds up."""
    kv = kubernetes_validate()
    return build_problems(kv, variant, render(ctx, VARIANTS[variant][0]), ctx.k8s_version)


# === what the builds must hold: network policy, disruption budget ===

def wsgate_pods(docs: list[dict]):
    """(workload name, pod labels) of every workload that runs wsgate."""
    from .contract import is_wsgate
    for _, w, t in pod_templates([(None, d) for d in docs]):
        spec = t["spec"]
        if any(is_wsgate(c) for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])):
            yield w["metadata"]["name"], pod_labels(t)


def covers_port(port_list: list | None, port: int) -> bool:
    """A NetworkPolicy rule's ports admit `port` over TCP (no list: all ports)."""
    if not port_list:
        return True
    for p in port_list:
        if p.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in p:
            return True
        if isinstance(p["port"], str):
            if p["port"] == "wsgate":
                return True
            continue
        if p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def network_problems(variant: str, docs: list[dict]) -> list[str]:
    """Every wsgate pod is selected by a NetworkPolicy with Ingress, and each
    rule that admits port 9750 names its sources; none admits everyone."""
    problems = []
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    for name, labels in wsgate_pods(docs):
        mine = [p for p in policies if selector_matches(p["spec"].get("podSelector") or {}, labels)
                and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])]
        if not mine:
            problems.append(f"{variant}: no NetworkPolicy restricts ingress to the pods of Deployment/{name}")
        allowed = 0
        for p in mine:
            for rule in p["spec"].get("ingress") or []:
                if not covers_port(rule.get("ports"), WSGATE_PORT):
                    continue
                allowed += 1
                sources = rule.get("from") or []
                if not sources:
                    problems.append(f"{variant}: NetworkPolicy/{p['metadata']['name']} admits anyone to port"
                                    f" {WSGATE_PORT}")
                for src in sources:
                    if "ipBlock" in src or (src.get("namespaceSelector") == {} and not src.get("podSelector")):
                        problems.append(f"{variant}: NetworkPolicy/{p['metadata']['name']} admits a whole"
                                        f" network or every pod to port {WSGATE_PORT}")
        if mine and not allowed:
            problems.append(f"{variant}: the NetworkPolicy of Deployment/{name} lets nobody reach port"
                            f" {WSGATE_PORT} (Prometheus must)")
    return problems


def check_network_policies(ctx: Context) -> list[str]:
    """Sidecar and standalone: only named sources reach wsgate's port."""
    problems = []
    for variant in ("sidecar", "standalone"):
        problems += network_problems(variant, render(ctx, VARIANTS[variant][0]))
    return problems


def disruption_problems(variant: str, docs: list[dict]) -> list[str]:
    """A PodDisruptionBudget covers the standalone gateway's pods and lets
    a drain proceed (not maxUnavailable 0, not minAvailable = replicas)."""
    problems = []
    budgets = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
    deployments = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Deployment"}
    for name, labels in wsgate_pods(docs):
        mine = [b for b in budgets if selector_matches(b["spec"].get("selector") or {}, labels)]
        if not mine:
            problems.append(f"{variant}: no PodDisruptionBudget covers Deployment/{name}")
        replicas = deployments[name]["spec"].get("replicas", 1)
        for b in mine:
            spec = b["spec"]
            if spec.get("maxUnavailable") in (0, "0%") or (
                    isinstance(spec.get("minAvailable"), int) and spec["minAvailable"] >= replicas):
                problems.append(f"{variant}: PodDisruptionBudget/{b['metadata']['name']} blocks every drain"
                                f" of Deployment/{name} ({replicas} replicas)")
    return problems


def check_disruption_budget(ctx: Context) -> list[str]:
    return disruption_problems("standalone", render(ctx, VARIANTS["standalone"][0]))


# === the sidecar component on a Deployment it has never seen ===

FOREIGN_APP = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: someone-elses-app
spec:
  selector:
    matchLabels: {app: other}
  template:
    metadata:
      labels: {app: other}
    spec:
      initContainers:
        - name: migrate
          image: registry.example.com/migrate:2
      containers:
        - name: main
          image: registry.example.com/other:3
          ports:
            - {name: http, containerPort: 8080}
      volumes:
        - name: data
          emptyDir: {}
"""


def check_sidecar_component(ctx: Context) -> list[str]:
    """components/sidecar on an unrelated Deployment: the wsgate native
    sidecar is added, the app's containers, volumes and labels all stay."""
    kv = kubernetes_validate()
    overlay = ctx.tmp / "foreign-app"
    overlay.mkdir(exist_ok=True)
    (overlay / "app.yaml").write_text(FOREIGN_APP)
    def rel(d: str) -> str:  # kustomize wants relative paths to directories
        return os.path.relpath(ctx.path(d).resolve(), overlay.resolve())

    (overlay / "kustomization.yaml").write_text(
        f"apiVersion: {KUSTOMIZE_API}\nkind: Kustomization\nresources:\n  - app.yaml\n  - {rel(K8S_DIR + '/base')}\n"
        f"components:\n  - {rel(SIDECAR_COMPONENT)}\n  - {rel(MONITORING_COMPONENT)}\n")
    docs = render(ctx, str(overlay))
    problems = []
    apps = [d for d in docs if d.get("kind") == "Deployment"]
    if [d["metadata"]["name"] for d in apps] != ["someone-elses-app"]:
        return [f"sidecar component: the build has Deployments {[d['metadata']['name'] for d in apps]},"
                " not just the app's (the patch must take the target's name)"]
    spec = apps[0]["spec"]["template"]["spec"]
    inits = {c["name"]: c for c in spec.get("initContainers") or []}
    if "migrate" not in inits or [c["name"] for c in spec.get("containers") or []] != ["main"]:
        problems.append("sidecar component: the app's own containers or init containers changed")
    if "wsgate" not in inits or inits["wsgate"].get("restartPolicy") != "Always":
        problems.append("sidecar component: no wsgate init container with restartPolicy: Always")
    if "data" not in {v["name"] for v in spec.get("volumes") or []}:
        problems.append("sidecar component: the app's volumes were replaced")
    if pod_labels(apps[0]["spec"]["template"]).get("app") != "other":
        problems.append("sidecar component: the app's pod labels were replaced")
    for d in docs:
        if not d.get("apiVersion", "").startswith(OPERATOR_GROUP):
            problems += schema_problems(kv, f"sidecar component: {d['kind']}/{d['metadata']['name']}", d,
                                        ctx.k8s_version)
    problems += network_problems("sidecar component", docs)
    return problems
