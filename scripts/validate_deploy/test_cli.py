"""cli.py: the runner and main(): exit status, report, --regen."""

import contextlib
import io

from . import cli, kubernetes
from .fixture import TreeCase


class Main(TreeCase):
    def main(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = cli.main(list(argv), root=self.root, env=self.ctx.env)
        return status, out.getvalue()

    def test_shipped_files_exit_0(self):
        """Every check on the good input: exit 0."""
        status, out = self.main()
        self.assertEqual(status, 0, out)
        self.assertRegex(out, r"validate-deploy: OK: all \d+ checks passed\n$")

    def test_one_fault_exits_1_and_is_named(self):
        """A fault fails its check with the reason, and the summary lists it."""
        self.edit("deploy/kubernetes/standalone/deployment.yaml", "path: /readyz", "path: /ready")
        status, out = self.main()
        self.assertEqual(status, 1, out)
        self.assertIn("FAIL  builds vs wsgate", out)
        self.assertIn("      | deploy/kubernetes/standalone Deployment/wsgate container wsgate:"
                      " readinessProbe must GET /readyz, not /ready", out)
        self.assertIn("validate-deploy: FAILED: 1 of", out)

    def test_regen_rewrites_the_prometheusrule_first(self):
        """rules.yml changed (a comment in a group): only --regen passes."""
        self.edit("deploy/prometheus/rules.yml", "      - alert: WsgateUpstreamDown\n",
                  "      # Paged.\n      - alert: WsgateUpstreamDown\n")
        status, out = self.main()
        self.assertEqual(status, 1, out)
        status, out = self.main("--regen")
        self.assertEqual(status, 0, out)
        self.assertIn(f"wrote {kubernetes.PROMETHEUSRULE}", out)
        self.assertIn("        # Paged.\n", (self.root / kubernetes.PROMETHEUSRULE).read_text())


class RunCheck(TreeCase):
    def test_missing_file_is_a_failure_naming_it(self):
        (self.root / "deploy/docker/Dockerfile").unlink()
        outcome = cli.run_check(cli.Check("Dockerfile", cli.docker.check_dockerfile), self.ctx)
        self.assertEqual((outcome.status, outcome.lines), ("FAIL", ["deploy/docker/Dockerfile: file not found"]))

    def test_crash_is_a_failure_with_its_traceback(self):
        def broken(ctx):
            raise KeyError("spec")

        outcome = cli.run_check(cli.Check("broken", broken), self.ctx)
        self.assertEqual(outcome.status, "FAIL")
        self.assertIn("KeyError: 'spec'", outcome.lines[-1])

    def test_problems_are_reported_once_each(self):
        outcome = cli.run_check(cli.Check("twice", lambda ctx: ["a", "b", "a"]), self.ctx)
        self.assertEqual((outcome.status, outcome.lines), ("FAIL", ["a", "b"]))
