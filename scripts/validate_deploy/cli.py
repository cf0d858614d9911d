"""The list of checks, the runner, and `main()` (see ENVIRONMENT for the
command line's settings)."""

import argparse
import functools
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import contract, docker, docs, kubernetes, lint, prometheus, systemd, wsgate_config
from .context import PROMTOOL, Context, Invalid, MissingTool, Skip

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT = """\
environment:
  PROMTOOL, SYSTEMD_ANALYZE, KUBECTL, HADOLINT, YAMLLINT
               the tools, else found on PATH
  WSGATE_BIN   a built wsgate, for `wsgate check` and as the ExecStart that
               systemd-analyze verifies; else `wsgate` on PATH; else skipped
  WSGATE_SPEC  SPEC.md, else shared/SPEC.md beside the repository; else skipped
  K8S_VERSION  the Kubernetes schemas to validate against (default 1.33)

Install the tools with scripts/install-test-tools.sh (as root).
Exit status: 0 when no check failed (skipped ones say why), 1 otherwise.
"""


@dataclass(frozen=True)
class Check:
    """A line of the report: what is checked, and the function that does it."""

    name: str
    run: Callable[[Context], list]


CHECKS = [
    # ---- Prometheus
    Check("promtool check rules deploy/prometheus/rules.yml", prometheus.check_rules),
    Check("promtool test rules deploy/prometheus/rules_test.yml", prometheus.check_rules_tests),
    Check("promtool check config deploy/prometheus/scrape-config.yml", prometheus.check_scrape_config),
    Check("promtool check config (a full prometheus.yml from scrape-config.yml)", prometheus.check_generated_config),
    Check("every alert: a runbook section in deploy/RUNBOOK.md and a promtool test where it fires",
          prometheus.check_runbooks),
    Check("metric and label names in rules and dashboard are SPEC §8's; a panel for each", prometheus.check_metric_names),
    Check("SPEC §8 matches metrics.py's metric list", prometheus.check_spec_metrics),
    # ---- Grafana
    Check("deploy/grafana/dashboard.json is JSON", prometheus.check_dashboard_json),
    Check("dashboard structure", prometheus.check_dashboard_structure),
    Check("dashboard queries parse (promtool)", prometheus.check_dashboard_queries_parse),
    # ---- Kubernetes
    Check("kustomizations and components: resources exist, no orphan manifests", kubernetes.check_kustomizations),
    Check("kubernetes-validate --strict", kubernetes.check_kubernetes_validate),
    Check("PodMonitor and PrometheusRule structure; PrometheusRule == rules.yml", kubernetes.check_operator_resources),
    Check("builds vs wsgate: probes, ports, securityContext, grace period, mounts, Secret keys",
          contract.check_contract),
    Check("wsgate configs use only keys of config/example-full.toml", wsgate_config.check_config_keys),
    *(
        Check(f"kubectl kustomize {directory}", functools.partial(kubernetes.check_kustomize_build, variant=variant))
        for variant, (directory, _) in kubernetes.VARIANTS.items()
    ),
    Check("components/sidecar on a Deployment it has never seen", kubernetes.check_sidecar_component),
    Check("NetworkPolicy: only named sources reach port 9750 (sidecar, standalone)",
          kubernetes.check_network_policies),
    Check("PodDisruptionBudget covers the standalone gateway", kubernetes.check_disruption_budget),
    Check("yamllint --strict deploy/", lint.check_yamllint),
    # ---- wsgate itself
    Check("wsgate check --config config/wsgate.toml", wsgate_config.check_wsgate_default_config),
    Check("wsgate check --no-files (every ConfigMap config)", wsgate_config.check_wsgate_configmaps),
    # ---- systemd
    Check("wsgate.service directives", systemd.check_unit_directives),
    Check("systemd-analyze verify wsgate.service", systemd.check_systemd_verify),
    Check("systemd-analyze security --offline (exposure below 2.0)", systemd.check_systemd_security),
    # ---- Docker
    Check("Dockerfile", docker.check_dockerfile),
    Check("hadolint deploy/docker/Dockerfile", lint.check_hadolint),
    Check(".dockerignore", docker.check_dockerignore),
    # ---- the docs
    Check("paths named in README.md, deploy/README.md and deploy/RUNBOOK.md exist", docs.check_doc_paths),
]


@dataclass
class Outcome:
    status: str  # "ok", "FAIL" or "skip"
    lines: list


def run_check(check: Check, ctx: Context) -> Outcome:
    """Runs one check; whatever goes wrong becomes a FAIL with a reason."""
    try:
        problems = check.run(ctx)
    except Skip as e:
        return Outcome("skip", [str(e)])
    except (MissingTool, Invalid) as e:
        return Outcome("FAIL", [str(e)])
    except FileNotFoundError as e:
        return Outcome("FAIL", [f"{ctx.rel(Path(e.filename)) if e.filename else e}: file not found"])
    except Exception:  # a check that crashes has found something it did not expect
        return Outcome("FAIL", ["the check crashed:"] + traceback.format_exc().splitlines())
    return Outcome("FAIL" if problems else "ok", list(dict.fromkeys(problems)))  # each once, in order


def tool_versions(ctx: Context) -> str:
    """The versions that matter when a check's verdict changes."""
    try:
        done = ctx.run([ctx.tool(PROMTOOL), "--version"])
        found = re.search(r"version (\S+)", done.stdout + done.stderr)
        promtool = f"promtool {found.group(1) if found else '(version unknown)'}"
    except MissingTool:
        promtool = "promtool missing"
    return f"{promtool}, Kubernetes schemas {ctx.k8s_version}"


def run_all(ctx: Context, checks=CHECKS, out=None) -> bool:
    """Runs every check and prints the report (to stdout by default); True
    when none failed."""
    out = out or sys.stdout
    print(f"validate-deploy: {tool_versions(ctx)}", file=out)
    failed, passed = [], 0
    for check in checks:
        outcome = run_check(check, ctx)
        if outcome.status == "skip":
            print(f"skip  {check.name} ({outcome.lines[0]})", file=out)
            continue
        print(f"{outcome.status:<5} {check.name}", file=out)
        for line in outcome.lines:
            print(f"      | {line}", file=out)
        if outcome.status == "ok":
            passed += 1
        else:
            failed.append(check.name)
    print(file=out)
    if failed:
        print(f"validate-deploy: FAILED: {len(failed)} of {passed + len(failed)} checks failed:", file=out)
        for name in failed:
            print(f"  - {name}", file=out)
        return False
    print(f"validate-deploy: OK: all {passed} checks passed", file=out)
    return True


def main(argv: list | None = None, root: Path = ROOT, env: dict | None = None) -> int:
    """The command line; `root` and `env` let the tests point it elsewhere."""
    parser = argparse.ArgumentParser(
        prog="python3 scripts/validate_deploy",
        description="Validates everything under deploy/ offline: no cluster, no container engine, no network.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--regen", action="store_true",
                        help=f"rewrite {kubernetes.PROMETHEUSRULE} from {prometheus.RULES} first")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="validate-deploy.") as tmp:
        ctx = Context.from_env(root, Path(tmp), env)
        if args.regen:
            print(f"validate-deploy: wrote {kubernetes.regen(ctx)}")
        return 0 if run_all(ctx) else 1
