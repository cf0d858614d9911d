"""contract.py: the kustomize builds against what wsgate needs."""

from . import contract as c
from .context import Invalid
from .fixture import TreeCase

APP = "deploy/kubernetes/examples/sidecar/app.yaml"
SIDECAR = "deploy/kubernetes/components/sidecar/sidecar.yaml"
STANDALONE = "deploy/kubernetes/standalone/deployment.yaml"
CONFIGMAP = "deploy/kubernetes/base/configmap.yaml"


class Contract(TreeCase):
    def test_shipped_files_pass(self):
        """The good input: sidecar and standalone both keep the contract."""
        self.assertPasses(c.check_contract)

    def test_probe_on_a_wrong_port_fails(self):
        self.edit(STANDALONE, "path: /healthz\n              port: wsgate", "path: /healthz\n              port: 8080")
        self.assertFinds(c.check_contract,
                         "Deployment/wsgate container wsgate: livenessProbe port 8080 is not port 9750")

    def test_probe_on_a_port_name_of_another_port_fails(self):
        """A named port counts only when it is containerPort 9750."""
        self.edit(STANDALONE, "containerPort: 9750", "containerPort: 9751")
        self.assertFinds(c.check_contract, "no containerPort 9750", "readinessProbe port 'wsgate' is not port 9750")

    def test_readiness_probe_on_healthz_fails(self):
        self.edit(STANDALONE, "path: /readyz", "path: /healthz")
        self.assertFinds(c.check_contract, "readinessProbe must GET /readyz, not /healthz")

    def test_grace_period_below_shutdown_timers_fails(self):
        """5s delay + 10s timeout need more than 15s before SIGKILL."""
        self.edit(STANDALONE, "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 15")
        self.assertFinds(c.check_contract, "terminationGracePeriodSeconds 15 must be above"
                                           " shutdown_delay + shutdown_timeout = 15s")

    def test_config_listening_on_loopback_fails(self):
        self.edit(CONFIGMAP, 'listen = "0.0.0.0:9750"', 'listen = "127.0.0.1:9750"')
        self.assertFinds(c.check_contract, "server.listen must be 0.0.0.0:9750")

    def test_config_without_shutdown_delay_fails(self):
        self.edit(CONFIGMAP, 'shutdown_delay = "5s"', 'shutdown_delay = "0s"')
        self.assertFinds(c.check_contract, "set server.shutdown_delay")

    def test_config_mounted_with_subpath_fails(self):
        self.edit(STANDALONE, "mountPath: /etc/wsgate\n",
                  "mountPath: /etc/wsgate\n              subPath: wsgate.toml\n")
        self.assertFinds(c.check_contract, "mounted with subPath, which never sees ConfigMap updates")

    def test_config_path_with_no_mount_fails(self):
        self.edit(STANDALONE, '"--config", "/etc/wsgate/wsgate.toml"', '"--config", "/config/wsgate.toml"')
        self.assertFinds(c.check_contract, "nothing is mounted at /config/wsgate.toml")

    def test_config_key_missing_from_configmap_fails(self):
        self.edit(CONFIGMAP, "  wsgate.toml: |", "  gateway.toml: |")
        self.assertFinds(c.check_contract, "ConfigMap wsgate-config has no key for wsgate.toml")

    def test_config_that_is_not_toml_is_reported(self):
        self.edit(CONFIGMAP, 'listen = "0.0.0.0:9750"', "listen = 0.0.0.0:9750")
        with self.assertRaisesRegex(Invalid, "ConfigMap wsgate-config key wsgate.toml: invalid TOML"):
            c.check_contract(self.ctx)

    def test_token_file_key_the_secret_lacks_fails(self):
        """The Secret is created by hand with the documented keys only."""
        self.edit(SIDECAR, "              - key: token\n", "              - key: feed-token\n")
        self.assertFinds(c.check_contract, "Secret wsgate-feed has no key 'feed-token' for /var/run/secrets/feed/token")

    def test_env_from_an_undocumented_secret_key_fails(self):
        self.edit(SIDECAR, "key: subscriber-token", "key: ws-token")
        self.assertFinds(c.check_contract, "refers to key 'ws-token' that Secret wsgate-feed is not documented to have")

    def test_token_file_not_on_a_secret_volume_fails(self):
        self.edit(CONFIGMAP, 'token_file = "/var/run/secrets/feed/token"', 'token_file = "/etc/feed/token"')
        self.assertFinds(c.check_contract, "token_file /etc/feed/token is not on a Secret volume")

    def test_env_from_an_unknown_secret_fails(self):
        self.edit(STANDALONE, "name: wsgate-feed\n                  key: subscriber-token",
                  "name: other-secret\n                  key: subscriber-token")
        self.assertFinds(c.check_contract, "refers to Secret 'other-secret'")

    def test_container_that_may_run_as_root_fails(self):
        """The app container too: every container is locked down."""
        text = (self.root / APP).read_text()
        app = text.index("        - name: app")  # the app's own, not the pod's
        self.write(APP, text[:app] + text[app:].replace("runAsNonRoot: true", "runAsNonRoot: false", 1))
        self.assertFinds(c.check_contract, "container app: runAsNonRoot must be true")

    def test_missing_limits_and_capabilities_fail(self):
        self.edit(STANDALONE, '              cpu: "2"\n', "")
        self.edit(STANDALONE, 'drop: ["ALL"]', 'drop: ["NET_RAW"]')
        self.assertFinds(c.check_contract, "resources.limits.cpu missing", "capabilities.drop must contain ALL")

    def test_sidecar_without_restart_policy_fails(self):
        """Without restartPolicy: Always the init container blocks the pod."""
        self.edit(SIDECAR, "          restartPolicy: Always\n", "")
        self.assertFinds(c.check_contract, "must be a native sidecar (restartPolicy: Always)")

    def test_service_target_port_the_pods_lack_fails(self):
        self.edit("deploy/kubernetes/standalone/service.yaml", "targetPort: wsgate", "targetPort: http")
        self.assertFinds(c.check_contract, "Service/wsgate: targetPort 'http' is not a port of the selected pods")

    def test_workload_selector_not_matching_its_pods_fails(self):
        self.edit(STANDALONE, "    matchLabels:\n      app.kubernetes.io/name: wsgate",
                  "    matchLabels:\n      app.kubernetes.io/name: gateway")
        self.assertFinds(c.check_contract, "spec.selector does not match the pod template's labels")
