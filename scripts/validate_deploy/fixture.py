"""For the unit tests: a fresh copy of the repository's deploy inputs in a
temp dir, so each test breaks one thing and asserts the check says so.

The shipped files are the good input: every test module first asserts that
its checks pass on the untouched copy, so a failure after an edit is caused by
that edit."""

import os
import shutil
import stat
import sys
import tempfile
import unittest
from pathlib import Path

from .context import Context

REPO = Path(__file__).resolve().parents[2]
# What the checks read: deploy/, the configs, .dockerignore, the README and
# the scripts it names.
COPIED = ("deploy", "config", ".dockerignore", "README.md", "scripts")
# The caller's settings that would change a verdict; tests set their own.
UNSET = ("WSGATE_BIN", "WSGATE_SPEC", "K8S_VERSION", "KUBECTL")


class TreeCase(unittest.TestCase):
    """A test over `self.root`, a copy of the repo's deploy inputs, and
    `self.ctx`, a Context over it that finds tools as the caller does."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="validate-deploy-test.")
        self.addCleanup(tmp.cleanup)
        self.base = Path(tmp.name)
        self.root = self.base / "repo"
        self.root.mkdir()
        for name in COPIED:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, self.root / name)
            else:
                shutil.copy2(src, self.root / name)
        scratch = self.base / "scratch"
        scratch.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith("WSGATE__")}
        self.ctx = Context(root=self.root, tmp=scratch, spec=None, env=env)

    def edit(self, rel: str, old: str, new: str):
        """Replaces the one occurrence of `old` in a copied file."""
        path = self.root / rel
        text = path.read_text()
        self.assertEqual(text.count(old), 1, f"{rel}: {old!r} should occur exactly once")
        path.write_text(text.replace(old, new))

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def fake_tool(self, name: str, body: str) -> Path:
        """An executable Python script standing in for a tool."""
        path = self.base / "bin" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"#!{sys.executable}\nimport os, sys\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    def assertPasses(self, check):
        self.assertEqual(check(self.ctx), [], f"{check.__name__} should pass on the shipped files")

    def assertFinds(self, check, *fragments: str) -> list:
        """The check fails, and its problems mention every fragment."""
        problems = check(self.ctx)
        self.assertTrue(problems, f"{check.__name__} should fail")
        text = "\n".join(problems)
        for fragment in fragments:
            self.assertIn(fragment, text)
        return problems
