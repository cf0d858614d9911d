"""docs.py: the paths the READMEs name exist."""

from . import docs as d
from .fixture import TreeCase


class Docs(TreeCase):
    def test_shipped_files_pass(self):
        self.assertPasses(d.check_doc_paths)

    def test_a_moved_manifest_directory_fails(self):
        """The old layout's `kubectl apply -k deploy/kubernetes/common` would fail for a newcomer."""
        self.edit("deploy/README.md", "kubectl apply -k deploy/kubernetes/standalone   #",
                  "kubectl apply -k deploy/kubernetes/common   #")
        self.assertFinds(d.check_doc_paths, "deploy/README.md:", "deploy/kubernetes/common does not exist")

    def test_placeholders_are_left_alone(self):
        self.write("README.md", "see `deploy/kubernetes/...` and `config/*.toml`\n")
        self.assertPasses(d.check_doc_paths)
