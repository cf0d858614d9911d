"""prometheus.py: promtool, and the rules and dashboard against SPEC §8."""

from . import prometheus as p
from .context import MissingTool, Skip
from .fixture import TreeCase
from .metrics import SPEC_METRICS
from .test_metrics import spec_text

DASHBOARD = "deploy/grafana/dashboard.json"


class Prometheus(TreeCase):
    def test_shipped_files_pass(self):
        """The good input: every Prometheus and Grafana check passes."""
        for check in (p.check_rules, p.check_rules_tests, p.check_scrape_config, p.check_generated_config,
                      p.check_metric_names, p.check_dashboard_json, p.check_dashboard_structure,
                      p.check_dashboard_queries_parse, p.check_runbooks):
            with self.subTest(check.__name__):
                self.assertPasses(check)

    def test_rule_with_bad_expression_fails_promtool(self):
        """promtool check rules rejects an expression that does not parse."""
        self.edit(p.RULES, "expr: wsgate_upstream_up == 0", "expr: wsgate_upstream_up ==")
        self.assertFinds(p.check_rules, "WsgateUpstreamDown", "could not parse expression")

    def test_rule_that_breaks_its_unit_test_fails_promtool(self):
        """promtool test rules catches an alert that fires later than its test expects."""
        self.edit(p.RULES, '== 1\n        for: 1m', '== 1\n        for: 5m')
        self.assertFinds(p.check_rules_tests, "WsgateUpstreamDown")

    def test_bad_scrape_config_fails_promtool(self):
        self.edit(p.SCRAPE_CONFIG, "  scrape_interval: 15s", "  scrape_interval: 15 seconds")
        self.assertFinds(p.check_scrape_config, "scrape-config.yml")

    def test_generated_config_needs_a_wsgate_job(self):
        """The rules match job=~".*wsgate.*": a job must carry that name."""
        self.edit(p.SCRAPE_CONFIG, "- job_name: wsgate\n", "- job_name: gateway\n")
        self.assertFinds(p.check_generated_config, "no job named after wsgate")

    def test_dashboard_metric_not_in_spec_fails(self):
        """A misspelt metric is named, and the one it replaced is missed."""
        text = (self.root / DASHBOARD).read_text()
        self.write(DASHBOARD, text.replace("rate(wsgate_upstream_bytes_total{", "rate(wsgate_upstream_byte_total{"))
        self.assertFinds(p.check_metric_names, "metric 'wsgate_upstream_byte_total' is not in SPEC §8",
                         "no panel shows wsgate_upstream_bytes_total")

    def test_rule_label_not_in_spec_fails(self):
        self.edit(p.RULES, 'expr: wsgate_upstream_state{state="stopped"}', 'expr: wsgate_upstream_state{phase="stopped"}')
        self.assertFinds(p.check_metric_names, "label 'phase' is not a label of SPEC §8")

    def test_dashboard_query_that_does_not_parse_fails_promtool(self):
        """promtool parses every query; the failure names the panel."""
        self.edit(DASHBOARD, '"expr": "wsgate_build_info{', '"expr": "sum by (instance (wsgate_build_info{')
        self.assertFinds(p.check_dashboard_queries_parse, "parse error", "is dashboard.json panel")

    def test_dashboard_that_is_not_json_fails(self):
        self.write(DASHBOARD, '{"title": "wsgate",}')
        self.assertFinds(p.check_dashboard_json, "invalid JSON")

    def test_dashboard_duplicate_panel_ids_fail(self):
        text = (self.root / DASHBOARD).read_text()
        self.write(DASHBOARD, text.replace('"id": 2,', '"id": 1,', 1))
        self.assertFinds(p.check_dashboard_structure, "panel ids are not unique")

    def test_spec_table_matches(self):
        self.ctx.spec = self.write("SPEC.md", spec_text(SPEC_METRICS))
        self.assertPasses(p.check_spec_metrics)

    def test_spec_table_drift_fails(self):
        """A metric SPEC §8 gained, or one whose labels changed, is named."""
        changed = dict(SPEC_METRICS, wsgate_new_total=("counter", {"upstream"}))
        changed["wsgate_upstream_up"] = ("gauge", {"upstream", "link"})
        self.ctx.spec = self.write("SPEC.md", spec_text(changed))
        self.assertFinds(p.check_spec_metrics, "SPEC §8 says wsgate_new_total", "SPEC §8 says wsgate_upstream_up",
                         "update SPEC_METRICS")

    def test_spec_added_list_drift_fails(self):
        self.ctx.spec = self.write("SPEC.md", spec_text(SPEC_METRICS, {"wsgate_topic_stale": ("gauge", {"topic"})}))
        self.assertFinds(p.check_spec_metrics, "(added by §12-§15) says wsgate_topic_stale: {'topic'}",
                         "says wsgate_upstream_rotations_total: None")

    def test_dashboard_without_a_panel_for_an_added_metric_fails(self):
        text = (self.root / DASHBOARD).read_text()
        self.write(DASHBOARD, text.replace("wsgate_cluster_lease_changes_total", "wsgate_upstream_connects_total"))
        self.assertFinds(p.check_metric_names, "no panel shows wsgate_cluster_lease_changes_total")

    def test_dashboard_not_naming_an_added_reason_fails(self):
        text = (self.root / DASHBOARD).read_text()
        self.write(DASHBOARD, text.replace("|rotate", ""))
        self.assertFinds(p.check_metric_names, "no query names the reason 'rotate'")

    def test_alert_without_runbook_url_fails(self):
        self.edit(p.RULES, '          runbook_url: "deploy/RUNBOOK.md#wsgatetargetdown"\n', "")
        self.assertFinds(p.check_runbooks, "WsgateTargetDown: runbook_url '' does not point at deploy/RUNBOOK.md")

    def test_runbook_url_to_another_section_fails(self):
        self.edit(p.RULES, 'runbook_url: "deploy/RUNBOOK.md#wsgatetargetdown"', 'runbook_url: "deploy/RUNBOOK.md#wsgaterestarting"')
        self.assertFinds(p.check_runbooks, "WsgateTargetDown: runbook_url points at #wsgaterestarting")

    def test_runbook_section_missing_or_incomplete_fails(self):
        self.edit(p.RUNBOOK, "## WsgateTopicStale\n", "## Topic stale\n")
        self.edit(p.RUNBOOK, "**What to do**: fix the config (`wsgate check", "Fix the config (`wsgate check")
        self.assertFinds(p.check_runbooks, "no section '## WsgateTopicStale'", "## WsgateTargetDown: no **What to do**")

    def test_alert_that_fires_in_no_test_fails(self):
        text = (self.root / p.RULES_TEST).read_text()
        start = text.index("  - name: stale topic while the link is up")
        end = text.index("  - name: scrape target down")
        self.write(p.RULES_TEST, text[:start] + text[end:])
        self.assertFinds(p.check_runbooks, "no test case in which WsgateTopicStale fires")

    def test_spec_absent_is_a_skip(self):
        with self.assertRaisesRegex(Skip, "WSGATE_SPEC"):
            p.check_spec_metrics(self.ctx)

    def test_missing_promtool_names_the_install_script(self):
        """No promtool (override or PATH): the check fails, naming the fix."""
        self.ctx.env["PROMTOOL"] = str(self.base / "no-such-promtool")
        with self.assertRaisesRegex(MissingTool, "scripts/install-test-tools.sh"):
            p.check_rules(self.ctx)
        del self.ctx.env["PROMTOOL"]
        self.ctx.env["PATH"] = str(self.base)
        with self.assertRaisesRegex(MissingTool, "promtool not found on PATH.*scripts/install-test-tools.sh"):
            p.check_rules(self.ctx)
