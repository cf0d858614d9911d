"""`python3 scripts/validate_deploy [--regen]`: runs every deploy check.

Python runs a directory's __main__.py with the directory itself as
sys.path[0]; that entry becomes its parent (scripts/), so the package is
imported as a package and its modules (docker, kubernetes, ...) never shadow
libraries of the same name.
"""
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
if sys.version_info < (3, 11):
    sys.exit("validate-deploy: FAILED: needs Python >= 3.11 (tomllib)")
HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    sys.path[0] = str(HERE.parent)
else:
    sys.path.insert(0, str(HERE.parent))

try:
    from validate_deploy.cli import main
except ModuleNotFoundError as e:
    sys.exit(
        f"validate-deploy: FAILED: Python module {e.name!r} is missing:"
        " run scripts/install-test-tools.sh (as root) first"
    )

sys.exit(main())
