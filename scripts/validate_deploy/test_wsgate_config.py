"""wsgate_config.py: durations, config keys, and how `wsgate check` is run."""

import json
import unittest

from . import wsgate_config as w
from .context import Invalid, MissingTool, Skip
from .fixture import TreeCase

CONFIGMAP = "deploy/kubernetes/base/configmap.yaml"
# A fake wsgate: appends its argv, the config it was given and its WSGATE__*
# environment to calls.jsonl, then exits with $FAKE_STATUS.
FAKE_WSGATE = """
from pathlib import Path
config = sys.argv[sys.argv.index("--config") + 1]
call = {"argv": sys.argv[1:], "config": Path(config).read_text(),
        "env": sorted(k for k in os.environ if k.startswith("WSGATE__"))}
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(call) + "\\n")
if os.environ.get("FAKE_STATUS", "0") != "0":
    print("error: upstreams[0].url: invalid URL", file=sys.stderr)
sys.exit(int(os.environ.get("FAKE_STATUS", "0")))
""".replace("from pathlib", "import json\nfrom pathlib")


class Durations(unittest.TestCase):
    def test_durations(self):
        """humantime and systemd spellings; junk is refused."""
        for text, seconds in [("500ms", 0.5), ("5s", 5), ("1m30s", 90), ("2min", 120), ("1h", 3600), ("1.5s", 1.5)]:
            with self.subTest(text):
                self.assertEqual(w.duration_s(text), seconds)
        for text in ("", "5", "5 sec", "s5", "1x"):
            with self.subTest(text):
                self.assertRaises(ValueError, w.duration_s, text)

    def test_key_paths(self):
        """Nested tables are dotted, array tables `[]`, headers free-form."""
        cfg = {"server": {"listen": "x"}, "upstreams": [{"name": "a", "headers": {"X-Any": "1"}}]}
        self.assertEqual(w.key_paths(cfg), {"server", "server.listen", "upstreams", "upstreams[].name",
                                            "upstreams[].headers"})


class ConfigKeys(TreeCase):
    def test_shipped_configs_pass(self):
        self.assertPasses(w.check_config_keys)

    def test_unknown_key_in_configmap_config_fails(self):
        """A typo in the ConfigMap's config is named with its path."""
        self.edit(CONFIGMAP, "    max_connections = 10000\n", "    max_conections = 10000\n")
        self.assertFinds(w.check_config_keys, "ConfigMap/wsgate-config key wsgate.toml: key"
                                              " 'subscribers.max_conections' is not in config/example-full.toml")

    def test_unknown_key_in_default_config_fails(self):
        self.edit(w.DEFAULT_CONFIG, 'level = "info"', 'level = "info"\ncolour = true')
        self.assertFinds(w.check_config_keys, "config/wsgate.toml: key 'log.colour'")

    def test_config_that_is_not_toml_is_reported(self):
        self.edit(w.DEFAULT_CONFIG, "[server]", "[server")
        with self.assertRaisesRegex(Invalid, "config/wsgate.toml: invalid TOML"):
            w.check_config_keys(self.ctx)


class WsgateCheck(TreeCase):
    def setUp(self):
        super().setUp()
        self.calls = self.base / "calls.jsonl"
        self.ctx.env.update(WSGATE_BIN=str(self.fake_tool("wsgate", FAKE_WSGATE)), FAKE_CALLS=str(self.calls),
                            WSGATE__SERVER__LISTEN="0.0.0.0:1")

    def recorded(self) -> list:
        return [json.loads(line) for line in self.calls.read_text().splitlines()]

    def test_default_config_is_checked_with_its_files(self):
        """config/wsgate.toml: plain `wsgate check`, no WSGATE__* override."""
        self.assertPasses(w.check_wsgate_default_config)
        (call,) = self.recorded()
        self.assertEqual(call["argv"], ["check", "--config", "config/wsgate.toml"])
        self.assertEqual(call["env"], [])

    def test_configmap_config_is_checked_without_files(self):
        """The ConfigMap's config, verbatim, with --no-files: its token file
        exists only in the pod."""
        self.assertPasses(w.check_wsgate_configmaps)
        (call,) = self.recorded()
        self.assertEqual(call["argv"][:2], ["check", "--no-files"])
        self.assertIn('token_file = "/var/run/secrets/feed/token"', call["config"])
        self.assertEqual(call["env"], [])

    def test_rejected_config_fails_with_wsgates_message(self):
        self.ctx.env["FAKE_STATUS"] = "2"
        self.assertFinds(w.check_wsgate_configmaps, "ConfigMap/wsgate-config key wsgate.toml:",
                         "upstreams[0].url: invalid URL", "exited with status 2")

    def test_wsgate_bin_that_is_not_there_fails(self):
        """Asked for and missing is an error, not a skip."""
        self.ctx.env["WSGATE_BIN"] = str(self.base / "no-such-wsgate")
        with self.assertRaisesRegex(MissingTool, "WSGATE_BIN=.* is not an executable file: fix or unset WSGATE_BIN"):
            w.check_wsgate_configmaps(self.ctx)

    def test_without_wsgate_it_is_a_skip(self):
        del self.ctx.env["WSGATE_BIN"]
        self.ctx.env["PATH"] = str(self.base / "empty")
        with self.assertRaisesRegex(Skip, "WSGATE_BIN"):
            w.check_wsgate_default_config(self.ctx)
