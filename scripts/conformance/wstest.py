# Runs the Autobahn TestSuite's `wstest` (Python 2.7) from the folder that
# scripts/conformance.sh installed it into. `zope` is a namespace package,
# so the folder is loaded with site.addsitedir (its .pth files run), not
# only put on sys.path.
#
# Usage: python wstest.py SITE_DIR [wstest options...]
import site
import sys

site.addsitedir(sys.argv[1])
from autobahntestsuite import wstest  # noqa: E402

sys.argv = ["wstest"] + sys.argv[2:]
sys.exit(wstest.run())
