"""The contract between deploy/kubernetes and wsgate: what the schemas cannot
see. Every container is locked down; the wsgate container (sidecar or
standalone) probes /healthz and /readyz on port 9750, reads its config from a
ConfigMap directory mount whose config listens on 0.0.0.0:9750, has a grace
period above shutdown_delay + shutdown_timeout, and finds its token files on
Secret directory mounts with the right keys; Services select pods by ports
they have. It reads what `kubectl kustomize` builds of each variant, so the
sidecar is checked as the component patches it into the app.

The Secret is not in the manifests (it is created out of band): its name and
keys are EXTERNAL_SECRETS, as deploy/README.md documents them."""

import re

from .context import Context
from .manifests import container_ports, pod_labels, pod_templates, render, selector_matches
from .wsgate_config import duration_s, parse_config, shutdown_budget

WSGATE_PORT = 9750
LISTEN = f"0.0.0.0:{WSGATE_PORT}"
# The Secret operators create (`kubectl create secret generic wsgate-feed
# --from-file=token=... --from-file=subscriber-token=...`): its keys.
EXTERNAL_SECRETS = {"wsgate-feed": {"token", "subscriber-token"}}
# The variants whose builds run wsgate.
BUILDS = ("deploy/kubernetes/examples/sidecar", "deploy/kubernetes/standalone", "deploy/kubernetes/examples/cluster")


def is_wsgate(container: dict) -> bool:
    """The image is wsgate (any registry, tag or digest)."""
    return re.match(r"^(.*/)?wsgate(:|@|$)", container.get("image", "")) is not None


def security_problems(cw: str, c: dict, pod_sc: dict, secrets: dict) -> list[str]:
    """Any container: non-root, read-only, no privileges, seccomp, resources,
    Secrets that exist."""
    problems = []
    sc = c.get("securityContext") or {}
    caps = sc.get("capabilities") or {}
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        problems.append(f"{cw}: runAsNonRoot must be true")
    if sc.get("runAsUser", pod_sc.get("runAsUser", 1)) == 0:
        problems.append(f"{cw}: runs as uid 0")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{cw}: readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{cw}: allowPrivilegeEscalation must be false")
    if sc.get("privileged"):
        problems.append(f"{cw}: privileged")
    if "ALL" not in (caps.get("drop") or []):
        problems.append(f"{cw}: capabilities.drop must contain ALL")
    if caps.get("add"):
        problems.append(f"{cw}: adds capabilities")
    if (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{cw}: seccompProfile must be RuntimeDefault")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                problems.append(f"{cw}: resources.{part}.{r} missing")
    for e in c.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["name"] not in secrets:
            problems.append(f"{cw}: env {e['name']} refers to Secret {ref['name']!r}, not one of the documented"
                            f" Secrets {sorted(secrets)}")
        elif ref and ref["key"] not in secrets[ref["name"]]:
            problems.append(f"{cw}: env {e['name']} refers to key {ref['key']!r} that Secret {ref['name']}"
                            " is not documented to have")
    return problems


def probe_problems(cw: str, c: dict, kind: str, path: str) -> list[str]:
    """The probe GETs `path` on port 9750, by number or by port name."""
    probe = c.get(kind)
    if not probe:
        return [f"{cw}: no {kind}"]
    problems = []
    ports = {p.get("name"): p for p in c.get("ports") or []}
    get = probe.get("httpGet") or {}
    if get.get("path") != path:
        problems.append(f"{cw}: {kind} must GET {path}, not {get.get('path')}")
    port = get.get("port")
    if not (port == WSGATE_PORT or (port in ports and ports[port].get("containerPort") == WSGATE_PORT)):
        problems.append(f"{cw}: {kind} port {port!r} is not port {WSGATE_PORT}")
    return problems


def mount_for(mounts: list, path: str) -> dict | None:
    """The volume mount a file path is under (the deepest one)."""
    best = None
    for m in mounts:
        mp = m["mountPath"].rstrip("/")
        if path.startswith(mp + "/") and (best is None or len(mp) > len(best["mountPath"].rstrip("/"))):
            best = m
    return best


def volume_key(source: dict, mount: dict, path: str) -> str | None:
    """The ConfigMap or Secret key a file under a directory mount shows."""
    name = path[len(mount["mountPath"].rstrip("/")) + 1:]
    items = {i["path"]: i["key"] for i in (source.get("items") or [])}
    return items.get(name, name if not items else None)


def token_file_problems(cw: str, cfg: dict, mounts: list, volumes: dict, secrets: dict) -> list[str]:
    """Every upstreams[].auth.token_file is on a Secret directory mount whose
    Secret has the key."""
    problems = []
    for i, u in enumerate(cfg.get("upstreams") or []):
        tf = (u.get("auth") or {}).get("token_file")
        if not tf:
            continue
        m = mount_for(mounts, tf)
        vol = volumes.get(m["name"]) if m else None
        if not vol or "secret" not in vol:
            problems.append(f"{cw}: upstreams[{i}].auth.token_file {tf} is not on a Secret volume")
            continue
        if "subPath" in m:
            problems.append(f"{cw}: {tf} is mounted with subPath, which never sees Secret rotation")
        name = vol["secret"]["secretName"]
        key = volume_key(vol["secret"], m, tf)
        if name not in secrets:
            problems.append(f"{cw}: Secret {name} is not one of the documented Secrets {sorted(secrets)}")
            continue
        if key not in secrets[name]:
            problems.append(f"{cw}: Secret {name} has no key {key!r} for {tf}")
    return problems


def wsgate_problems(cw: str, c: dict, pod_spec: dict, configmaps: dict, secrets: dict) -> list[str]:
    """The wsgate container: port, probes, args, its config and token files."""
    problems = []
    if not any(p.get("containerPort") == WSGATE_PORT for p in c.get("ports") or []):
        problems.append(f"{cw}: no containerPort {WSGATE_PORT}")
    problems += probe_problems(cw, c, "livenessProbe", "/healthz")
    problems += probe_problems(cw, c, "readinessProbe", "/readyz")
    args = c.get("args") or []
    if args[:2] != ["run", "--config"] or len(args) != 3:
        return problems + [f"{cw}: args should be [run, --config, PATH], not {args}"]
    config_path = args[2]
    mounts = c.get("volumeMounts") or []
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    m = mount_for(mounts, config_path)
    if not m:
        return problems + [f"{cw}: nothing is mounted at {config_path}"]
    if "subPath" in m:
        problems.append(f"{cw}: the config is mounted with subPath, which never sees ConfigMap updates")
    vol = volumes.get(m["name"]) or {}
    cm_name = (vol.get("configMap") or {}).get("name")
    if cm_name not in configmaps:
        return problems + [f"{cw}: {config_path} is not from a ConfigMap in deploy/kubernetes"]
    key = volume_key(vol["configMap"], m, config_path)
    data = configmaps[cm_name][1].get("data") or {}
    if key not in data:
        file_name = config_path[len(m["mountPath"].rstrip("/")) + 1:]
        return problems + [f"{cw}: ConfigMap {cm_name} has no key for {file_name}"]
    # Its keys are checked once per ConfigMap by wsgate_config.check_config_keys.
    cfg = parse_config(f"ConfigMap {cm_name} key {key}", data[key])
    server = cfg.get("server") or {}
    if not server.get("listen", "").startswith(LISTEN):
        problems.append(f"ConfigMap {cm_name}: server.listen must be {LISTEN} for the probes and Prometheus")
    if duration_s(server.get("shutdown_delay", "0s")) <= 0:
        problems.append(f"ConfigMap {cm_name}: set server.shutdown_delay (~5s) so Services drop the pod first")
    budget = shutdown_budget(cfg)
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    if not grace > budget:
        problems.append(f"{cw}: terminationGracePeriodSeconds {grace} must be above"
                        f" shutdown_delay + shutdown_timeout = {budget:g}s")
    return problems + token_file_problems(cw, cfg, mounts, volumes, secrets)


def service_problems(ctx: Context, manifests, services: dict) -> list[str]:
    """Every Service selects a pod template and targets a port name it has."""
    problems = []
    templates = [t for _, _, t in pod_templates(manifests)]
    for name, (f, svc) in services.items():
        sel = {"matchLabels": svc["spec"].get("selector") or {}}
        matched = [t for t in templates if selector_matches(sel, pod_labels(t))]
        if not matched:
            problems.append(f"{ctx.rel(f)} Service/{name}: the selector matches no pod template")
        for p in svc["spec"].get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            for t in matched:
                if isinstance(tp, str) and tp not in {pp.get("name") for _, pp in container_ports(t)}:
                    problems.append(f"{ctx.rel(f)} Service/{name}: targetPort {tp!r}"
                                    " is not a port of the selected pods")
    return problems


def check_contract(ctx: Context) -> list[str]:
    """The manifests against wsgate: probes, ports, securityContext, grace
    period, mounts; wsgate runs both as a native sidecar and standalone."""
    problems = []
    for build in BUILDS:
        problems += build_contract(ctx, build, [(ctx.path(build), d) for d in render(ctx, build)])
    return problems


def build_contract(ctx: Context, build: str, manifests: list) -> list[str]:
    """The contract on one build's objects."""
    by_kind = {}
    for f, d in manifests:
        by_kind.setdefault(d.get("kind"), {})[(d.get("metadata") or {}).get("name")] = (f, d)
    configmaps, secrets = by_kind.get("ConfigMap", {}), EXTERNAL_SECRETS
    problems = []
    saw_wsgate = False
    for f, workload, tmpl in pod_templates(manifests):
        where = f"{ctx.rel(f)} {workload['kind']}/{workload['metadata']['name']}"
        spec = tmpl["spec"]
        if not selector_matches(workload["spec"]["selector"], pod_labels(tmpl)):
            problems.append(f"{where}: spec.selector does not match the pod template's labels")
        containers = [(c, False) for c in spec.get("containers") or []]
        containers += [(c, True) for c in spec.get("initContainers") or []]
        for c, init in containers:
            cw = f"{where} container {c['name']}"
            problems += security_problems(cw, c, spec.get("securityContext") or {}, secrets)
            if not is_wsgate(c):
                continue
            if init:
                if c.get("restartPolicy") != "Always":
                    problems.append(f"{cw}: a wsgate init container must be a native sidecar (restartPolicy: Always)")
            saw_wsgate = True
            problems += wsgate_problems(cw, c, spec, configmaps, secrets)
    if not saw_wsgate:
        problems.append(f"{build}: no Deployment runs wsgate")
    return problems + service_problems(ctx, manifests, by_kind.get("Service", {}))
