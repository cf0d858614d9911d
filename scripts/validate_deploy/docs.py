"""The READMEs as a newcomer uses them: every repository path they name
(deploy/..., config/..., scripts/...) exists, so a command copied from them
does not fail on a file that moved."""

import re

from .context import Context

DOCS = ("README.md", "deploy/README.md", "deploy/RUNBOOK.md")
# A path of the repository as the docs write it; placeholders (<...>, ...,
# *) are left alone.
PATH = re.compile(r"(?<![\w/.-])((?:deploy|config|scripts)/[\w./-]*[\w/])")


def check_doc_paths(ctx: Context) -> list[str]:
    """Every deploy/, config/ and scripts/ path in the docs exists."""
    problems = []
    for doc in DOCS:
        for n, line in enumerate(ctx.read(doc).splitlines(), 1):
            for m in PATH.finditer(line):
                rel = m.group(1).rstrip("/.")
                if "..." in rel or "*" in rel:
                    continue
                if not ctx.path(rel).exists():
                    problems.append(f"{doc}:{n}: {rel} does not exist")
    return problems
