"""systemd.py: the unit's directives, systemd-analyze verify and security."""

from . import systemd as s
from .fixture import TreeCase


class Systemd(TreeCase):
    def test_shipped_unit_passes(self):
        """The good input: directives, verify and an exposure below 2.0."""
        for check in (s.check_unit_directives, s.check_systemd_verify, s.check_systemd_security):
            with self.subTest(check.__name__):
                self.assertPasses(check)

    def test_missing_hardening_fails(self):
        self.edit(s.UNIT, "NoNewPrivileges=yes\n", "")
        self.assertFinds(s.check_unit_directives, "expected NoNewPrivileges=yes")

    def test_proc_subset_fails(self):
        """ProcSubset=pid would hide /proc/stat from the process_* metrics."""
        self.edit(s.UNIT, "ProtectProc=invisible\n", "ProtectProc=invisible\nProcSubset=pid\n")
        self.assertFinds(s.check_unit_directives, "ProcSubset=pid hides /proc/stat")

    def test_stop_timeout_below_shutdown_budget_fails(self):
        self.edit(s.UNIT, "TimeoutStopSec=30s", "TimeoutStopSec=10")
        self.assertFinds(s.check_unit_directives, "TimeoutStopSec=10 must be above")

    def test_setting_systemd_cannot_parse_fails_verify(self):
        """verify only warns (and exits 0) on a bad value: any output fails."""
        self.edit(s.UNIT, "KillMode=mixed\n", "KillMode=gentle\n")
        self.assertFinds(s.check_systemd_verify, "kill mode", "gentle")

    def test_unit_without_sandboxing_fails_security(self):
        text = (self.root / s.UNIT).read_text()
        start, end = text.index("# ---- Sandboxing ----"), text.index("[Install]")
        self.write(s.UNIT, text[:start] + text[end:])
        self.assertFinds(s.check_systemd_security, "Overall exposure level", "exposure above 2.0")

    def test_verify_runs_the_given_wsgate(self):
        """$WSGATE_BIN replaces ExecStart in the copy that is verified."""
        fake = self.fake_tool("wsgate", "sys.exit(0)")
        self.ctx.env["WSGATE_BIN"] = str(fake)
        self.assertIn(f"ExecStart={fake} run --config", s.unit_copy(self.ctx).read_text())
