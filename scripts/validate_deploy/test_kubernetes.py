"""kubernetes.py: kustomizations, kubernetes-validate, the Prometheus
Operator resources and the generated PrometheusRule."""

import unittest

from . import kubernetes as k
from .context import Invalid, Skip, kubernetes_validate
from .fixture import TreeCase

APP = "deploy/kubernetes/example-app.yaml"
STANDALONE = "deploy/kubernetes/standalone/deployment.yaml"
PODMONITOR = "deploy/kubernetes/common/podmonitor.yaml"


class Kubernetes(TreeCase):
    def test_shipped_files_pass(self):
        """The good input: every Kubernetes check passes."""
        for check in (k.check_kustomizations, k.check_kubernetes_validate, k.check_operator_resources):
            with self.subTest(check.__name__):
                self.assertPasses(check)

    def test_unknown_field_fails_kubernetes_validate(self):
        """Strict validation: a misspelt field is an error, not ignored."""
        self.edit(STANDALONE, "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  replica: 3\n")
        self.assertFinds(k.check_kubernetes_validate, "Deployment/wsgate", "'replica' was unexpected")

    def test_wrong_type_fails_kubernetes_validate(self):
        self.edit(STANDALONE, "  replicas: 2\n", "  replicas: two\n")
        self.assertFinds(k.check_kubernetes_validate, "Deployment/wsgate", "spec.replicas")

    def test_object_without_name_fails(self):
        self.write("deploy/kubernetes/extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
        self.assertFinds(k.check_kubernetes_validate, "needs apiVersion, kind and metadata.name")

    def test_unknown_kubernetes_version_fails(self):
        self.ctx.k8s_version = "0.1"
        self.assertFinds(k.check_kubernetes_validate, "no schemas for Kubernetes 0.1")

    def test_kustomization_naming_a_missing_resource_fails(self):
        self.edit("deploy/kubernetes/kustomization.yaml", "  - service.yaml\n", "  - service.yaml\n  - missing.yaml\n")
        self.assertFinds(k.check_kustomizations, "resource 'missing.yaml' does not exist")

    def test_manifest_in_no_kustomization_fails(self):
        self.write("deploy/kubernetes/standalone/orphan.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
        self.assertFinds(k.check_kustomizations, "standalone/orphan.yaml: not listed in any kustomization.yaml")

    def test_invalid_yaml_is_reported(self):
        self.write("deploy/kubernetes/service.yaml", "kind: [Service\n")
        with self.assertRaisesRegex(Invalid, "service.yaml: invalid YAML"):
            k.check_kubernetes_validate(self.ctx)

    def test_podmonitor_port_the_pods_lack_fails(self):
        self.edit(PODMONITOR, "    - port: wsgate\n", "    - port: metrics\n")
        self.assertFinds(k.check_operator_resources, "have no port named 'metrics'")

    def test_podmonitor_selecting_no_pod_fails(self):
        self.edit(PODMONITOR, "wsgate-metrics: enabled", "wsgate-metrics: on")
        self.assertFinds(k.check_operator_resources, "the selector matches no pod template")

    def test_podmonitor_wrong_path_and_unknown_key_fail(self):
        self.edit(PODMONITOR, "      path: /metrics\n", "      path: /stats\n      pathh: /x\n")
        self.assertFinds(k.check_operator_resources, "not /stats", "unknown endpoint keys ['pathh']")

    def test_prometheusrule_out_of_date_fails_until_regen(self):
        """rules.yml changed, the PrometheusRule not: --regen is the fix."""
        self.edit("deploy/prometheus/rules.yml", "for: 1m\n", "for: 2m\n")
        self.assertFinds(k.check_operator_resources, "spec.groups differ", k.REGEN_COMMAND)
        k.regen(self.ctx)
        self.assertPasses(k.check_operator_resources)

    def test_prometheusrule_edited_by_hand_fails(self):
        """Same groups, other bytes (a comment): still not what --regen writes."""
        self.edit(k.PROMETHEUSRULE, "spec:\n", "spec:\n  # tuned by hand\n")
        self.assertFinds(k.check_operator_resources, "not byte-for-byte")

    def test_kubectl_absent_is_a_skip(self):
        """kubectl is optional: the other checks cover what it would."""
        self.ctx.env["PATH"] = str(self.base / "empty")
        with self.assertRaisesRegex(Skip, "kubectl not found on PATH"):
            k.check_kustomize_build(self.ctx, "base")


class BuildOutput(unittest.TestCase):
    """What `kubectl kustomize` produced, without kubectl."""

    def setUp(self):
        self.kv = kubernetes_validate()

    def docs(self, *objects):
        out = []
        for kind, name in objects:
            api = "monitoring.coreos.com/v1" if kind in ("PodMonitor", "PrometheusRule") else "v1"
            out.append({"apiVersion": api, "kind": kind, "metadata": {"name": name}})
        return out

    def test_complete_standalone_build_passes(self):
        docs = self.docs(("ConfigMap", "wsgate-config"), ("Secret", "wsgate-feed"), ("PodMonitor", "wsgate"),
                         ("PrometheusRule", "wsgate"), ("Service", "wsgate"))
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "wsgate"},
                     "spec": {"selector": {}, "template": {}}})
        self.assertEqual(k.build_problems(self.kv, "standalone", docs, "1.33"), [])

    def test_build_lacking_objects_or_keeping_the_app_fails(self):
        docs = self.docs(("ConfigMap", "wsgate-config"), ("Deployment", "example-app"))
        problems = "\n".join(k.build_problems(self.kv, "standalone", docs, "1.33"))
        self.assertIn("the build lacks Secret/wsgate-feed", problems)
        self.assertIn("still has the example app", problems)
