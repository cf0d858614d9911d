"""Reading deploy/kubernetes: its YAML documents, kustomizations, pod
templates, label selectors. No checks here; kubernetes.py and contract.py
use these."""

from pathlib import Path

import yaml

from .context import KUBECTL, Context, Invalid

K8S_DIR = "deploy/kubernetes"
KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"
COMPONENT_API = "kustomize.config.k8s.io/v1alpha1"
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


def patch_files(ctx: Context) -> set[Path]:
    """The files that kustomizations name as patches (partial objects)."""
    out = set()
    for k in kustomizations(ctx):
        for d in load_docs(ctx, k):
            for patch in d.get("patches") or []:
                if isinstance(patch, dict) and "path" in patch:
                    out.add((k.parent / patch["path"]).resolve())
    return out


def manifest_files(ctx: Context) -> list[Path]:
    """Every YAML file under deploy/kubernetes but the kustomizations and
    the patches: the complete objects."""
    patches = patch_files(ctx)
    return [f for f in sorted(ctx.path(K8S_DIR).rglob("*.y*ml"))
            if f.name != "kustomization.yaml" and f.resolve() not in patches]


def render(ctx: Context, directory: str) -> list[dict]:
    """`kubectl kustomize directory`: the objects it builds (cached per run);
    Invalid with kubectl's message when the build fails."""
    cache = ctx.cache.setdefault("render", {})
    if directory not in cache:
        done = ctx.run([ctx.tool(KUBECTL), "kustomize", directory])
        if done.returncode != 0:
            raise Invalid(f"kubectl kustomize {directory} exited with status {done.returncode}: "
                          + " ".join(done.stderr.split()))
        cache[directory] = [d for d in yaml.safe_load_all(done.stdout) if d]
    return cache[directory]


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
