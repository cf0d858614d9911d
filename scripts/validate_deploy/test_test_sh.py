"""scripts/test.sh on a machine that lacks tools: it names them and the tests
they skip, runs the rest (cargo is faked here), passes locally and fails
under CI=true. Nothing is installed: WSGATE_TEST_NO_INSTALL is set."""

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAKE_CARGO = """#!/bin/sh
printf '%s\\n' "$*" > "$FAKE_CARGO_LOG"
printf 'skip=%s\\n' "${WSGATE_TEST_SKIP_MISSING_TOOLS:-}" >> "$FAKE_CARGO_LOG"
exit "${FAKE_CARGO_EXIT:-0}"
"""


class TestSh(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="test-sh.")
        self.addCleanup(tmp.cleanup)
        self.bin = Path(tmp.name) / "bin"
        self.bin.mkdir()
        # Only what test.sh itself needs: no promtool, kubectl, linters, proxies.
        for tool in ("dirname", "sort", "sed", "id"):
            os.symlink(f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else f"/bin/{tool}",
                       self.bin / tool)
        os.symlink(sys.executable, self.bin / "python3")
        cargo = self.bin / "cargo"
        cargo.write_text(FAKE_CARGO)
        cargo.chmod(0o755)
        self.log = Path(tmp.name) / "cargo.log"

    def run_test_sh(self, *args, **env):
        full = {"PATH": str(self.bin), "HOME": str(self.bin.parent), "FAKE_CARGO_LOG": str(self.log),
                "WSGATE_TEST_NO_INSTALL": "1", "PROMTOOL": "/nonexistent/promtool",
                "PROMETHEUS": "/nonexistent/prometheus", "CHROMIUM": "/nonexistent/chromium", **env}
        return subprocess.run(["/bin/bash", str(REPO / "scripts/test.sh"), *args], env=full,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def test_names_missing_tools_and_skipped_tests_and_runs_the_rest(self):
        done = self.run_test_sh()
        self.assertEqual(done.returncode, 0, done.stderr)
        for tool in ("promtool", "prometheus", "kubectl", "yamllint", "hadolint", "chromium", "microsocks"):
            self.assertIn(tool, done.stderr.split("MISSING tools:")[1].splitlines()[0])
        self.assertIn("tests/deploy.rs", done.stderr)
        self.assertIn("tests/demo.rs status_page_renders_in_chromium", done.stderr)
        self.assertEqual(self.log.read_text().splitlines(),
                         ["test --all-targets -- --skip status_page_renders_in_chromium", "skip=1"])

    def test_ci_fails_when_a_tool_is_missing(self):
        done = self.run_test_sh(CI="true")
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertIn("CI=true: failing the run", done.stderr)
        self.assertTrue(self.log.exists(), "the other tests still ran")

    def test_failing_tests_fail_the_run(self):
        self.assertEqual(self.run_test_sh(FAKE_CARGO_EXIT="101").returncode, 101)

    def test_callers_harness_arguments_keep_one_separator(self):
        self.run_test_sh("--test", "deploy", "--", "--nocapture")
        self.assertEqual(self.log.read_text().splitlines()[0],
                         "test --all-targets --test deploy -- --nocapture --skip status_page_renders_in_chromium")
