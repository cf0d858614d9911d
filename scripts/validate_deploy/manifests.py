"""Reading deploy/kubernetes: its YAML documents, kustomizations, pod
templates, label selectors. No checks here; kubernetes.py and contract.py
use these."""

from pathlib import Path

import yaml

from .context import Context, Invalid

K8S_DIR = "deploy/kubernetes"
# The Prometheus Operator's API group: kubernetes-validate has no schema for it.
OPERATOR_GROUP = "monitoring.coreos.com/"


def load_docs(ctx: Context, path: Path) -> list[dict]:
    """The non-empty documents of a YAML file; Invalid unless each is a mapping."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as e:
        raise Invalid(f"{ctx.rel(path)}: invalid YAML: {e}") from e
    for d in docs:
        if not isinstance(d, dict):
            raise Invalid(f"{ctx.rel(path)}: a document is a {type(d).__name__}, not a mapping")
    return docs


def kustomizations(ctx: Context) -> list[Path]:
    return sorted(ctx.path(K8S_DIR).rglob("kustomization.yaml"))


def manifest_files(ctx: Context) -> list[Path]:
    """Every YAML file under deploy/kubernetes but the kustomizations."""
    return [f for f in sorted(ctx.path(K8S_DIR).rglob("*.y*ml")) if f.name != "kustomization.yaml"]


def all_manifests(ctx: Context) -> list[tuple[Path, dict]]:
    """(file, document) for every Kubernetes object under deploy/kubernetes."""
    return [(f, d) for f in manifest_files(ctx) for d in load_docs(ctx, f)]


def describe(ctx: Context, path: Path, doc: dict) -> str:
    """How messages name an object: `file Kind/name`."""
    return f"{ctx.rel(path)} {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def pod_templates(manifests):
    """(file, workload, pod template) of every Deployment, StatefulSet, DaemonSet."""
    for f, d in manifests:
        if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            yield f, d, d["spec"]["template"]


def pod_labels(template: dict) -> dict:
    return (template.get("metadata") or {}).get("labels") or {}


def selector_matches(sel: dict, labels: dict) -> bool:
    """A label selector (matchLabels and matchExpressions) against labels."""
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


def container_ports(template: dict):
    """(container, port) of every container and init container of a pod template."""
    spec = template["spec"]
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in c.get("ports") or []:
            yield c, p
