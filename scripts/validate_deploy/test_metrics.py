"""metrics.py: the PromQL name reader and the SPEC §8 table parser."""

import unittest

from .metrics import (
    ADDED_METRICS,
    SPEC_METRICS,
    grafana_to_promql,
    name_problems,
    promql_names,
    spec_added,
    spec_table,
)


def spec_text(metrics: dict, added: dict = ADDED_METRICS) -> str:
    """A SPEC.md with a §8 table of `metrics` and the "Added by" list of
    `added`, as SPEC.md writes them."""
    rows = "".join(
        f"| `{n}` | {kind} | {', '.join(sorted(labels)) or '—'} |\n" for n, (kind, labels) in metrics.items()
    )
    items = ", ".join(f"`{n}{{{','.join(sorted(labels))}}}`" if labels else f"`{n}` ({kind})"
                      for n, (kind, labels) in added.items())
    return (f"# SPEC\n\n## 7. HTTP\n\n## 8. Metrics\n\n| name | type | labels |\n|---|---|---|\n{rows}\n"
            f"Added by §12-§15 (same rules): {items};\n`wsgate_subscribers{{kind}}` gains `nats`.\n\n## 9. Signals\n")


class PromqlNames(unittest.TestCase):
    def test_reads_metrics_and_labels_not_functions_or_strings(self):
        """Functions, keywords, strings and ranges are not metric names."""
        metrics, labels = promql_names(
            'sum by (upstream) (rate(wsgate_upstream_messages_total{job=~"$job",reason="x y"}[$__rate_interval]))'
            " and on (job) wsgate_build_info offset 5m"
        )
        self.assertEqual(metrics, {"wsgate_upstream_messages_total", "wsgate_build_info"})
        self.assertEqual(labels, {"upstream", "job", "reason"})

    def test_grafana_variables_become_promql(self):
        """$__rate_interval becomes a duration, $var a regex."""
        self.assertEqual(grafana_to_promql('x{a=~"$job"}[$__rate_interval]'), 'x{a=~".*"}[5m]')
        self.assertEqual(grafana_to_promql('x{a=~"${job:regex}"}[${__range}]'), 'x{a=~".*"}[5m]')

    def test_spec_names_pass(self):
        """Every series of a SPEC §8 histogram, process_* and up are allowed."""
        self.assertEqual(name_problems("t", "rate(wsgate_fanout_latency_seconds_bucket[5m]) and up"), [])

    def test_histogram_without_suffix_is_caught(self):
        """A histogram family name alone is not a series: the hint says so."""
        problems = name_problems("t", "wsgate_upstream_ping_rtt_seconds")
        self.assertEqual(len(problems), 1)
        self.assertIn("a histogram: use _bucket, _sum or _count", problems[0])

    def test_unknown_metric_and_label_are_caught(self):
        """A metric or label that SPEC §8 does not have is named."""
        problems = "\n".join(name_problems("t", 'wsgate_bogus_total{colour="red"}'))
        self.assertIn("metric 'wsgate_bogus_total' is not in SPEC §8", problems)
        self.assertIn("label 'colour' is not a label of SPEC §8", problems)

    def test_expression_without_metric_is_caught(self):
        self.assertIn("no metric", name_problems("t", "vector(1)")[0])


class SpecTable(unittest.TestCase):
    def test_parses_the_table_of_section_8(self):
        """Type, labels, '—' for none and '(values)' dropped."""
        text = (
            "## 8. Metrics\n| name | type | labels |\n|---|---|---|\n"
            "| `wsgate_a_total` | counter | kind, reason (overflow, error) |\n"
            "| `wsgate_b` | gauge 0/1 | upstream |\n"
            "| `wsgate_c_seconds` | histogram | — (receive to write) |\n"
            "| `process_*` | standard | — |\n## 9. Next\n| `wsgate_not_here` | gauge | x |\n"
        )
        self.assertEqual(
            spec_table(text),
            {
                "wsgate_a_total": ("counter", {"kind", "reason"}),
                "wsgate_b": ("gauge", {"upstream"}),
                "wsgate_c_seconds": ("histogram", set()),
            },
        )

    def test_round_trips_spec_metrics(self):
        self.assertEqual(spec_table(spec_text(SPEC_METRICS)), SPEC_METRICS)

    def test_no_section_8(self):
        self.assertIsNone(spec_table("## 7. HTTP\n"))

    def test_parses_the_added_list(self):
        """`name{labels}` and a bare `name` (histogram); wsgate_subscribers is a note, not new."""
        text = ("## 8. Metrics\n| `wsgate_a` | gauge | x |\n\nAdded by §12-§15 (same rules): `wsgate_b_total{upstream}`,\n"
                "`wsgate_c{upstream,topic}`, `wsgate_d_seconds`\n(histogram); `wsgate_subscribers{kind}` gains `nats`.\n\n"
                "## 9. Next\n")
        self.assertEqual(spec_added(text), {"wsgate_b_total": {"upstream"}, "wsgate_c": {"upstream", "topic"},
                                            "wsgate_d_seconds": set()})

    def test_round_trips_added_metrics(self):
        self.assertEqual(spec_added(spec_text(SPEC_METRICS)), {n: labels for n, (_, labels) in ADDED_METRICS.items()})
