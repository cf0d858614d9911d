//! The table of the de-duplication runs of `wsbench lossless` (issue 14):
//! one link, one link with the sequence check, two redundant links.

use serde_json::Value;

/// Issue 14: the cost of de-duplication on the hot path, one link against
/// two redundant links of the same stream (and one link with the sequence
/// check that the de-duplicator's identity uses).
pub fn dedupe_table(doc: &Value, cells: &[Value]) -> String {
    let mut s = String::from("## Redundant links: the cost of de-duplication (issue 14)\n\n");
    s += &format!(
        "wsgate pinned to one core, feeds and swarm on the other; ~200-byte JSON messages; median of the valid \
         runs (any loss, gap or duplicate makes a run invalid). `wsgate`: one link; `wsgate-seq`: one link with \
         `[upstreams.sequence]` on `/fseq`; `wsgate-redundant`: two feeds of the same stream, \
         `redundancy = \"all\"`, each message received twice and delivered once (de-duplicated by `/fseq`). \
         Load average (1, 5, 15 min) at start: {}, at end: {}.\n\n",
        doc["load_at_start"].as_str().unwrap_or("?"),
        doc["load_at_end"].as_str().unwrap_or("?")
    );
    s += "| scenario | format | target | deliveries/CPU-s | vs one link | deliveries/s | peak RSS | valid runs |\n";
    s += "|---|---|---|---:|---:|---:|---:|---|\n";
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    for c in cells.iter().filter(|c| c["target"].as_str().is_some_and(|t| t.starts_with("wsgate"))) {
        let base = cells.iter().find(|b| {
            b["target"] == "wsgate"
                && b["format"] == c["format"]
                && b["subscribers"] == c["subscribers"]
                && b["messages"] == c["messages"]
        });
        let ok = c["valid"].as_u64().unwrap_or(0) > 0;
        let vs = match base {
            Some(b) if ok && num(b, "deliveries_per_cpu_s") > 0.0 => {
                format!("{:.2}x", num(c, "deliveries_per_cpu_s") / num(b, "deliveries_per_cpu_s"))
            }
            _ => "—".into(),
        };
        let show = |k: &str| if ok { format!("{:.0}", num(c, k)) } else { "invalid".into() };
        s += &format!(
            "| {} x {} | {} | {} | {} | {} | {} | {} | {}/{} |\n",
            c["subscribers"],
            c["messages"],
            c["format"].as_str().unwrap_or(""),
            c["target"].as_str().unwrap_or(""),
            show("deliveries_per_cpu_s"),
            vs,
            show("deliveries_per_s"),
            if ok { format!("{:.0} MB", num(c, "peak_rss_kib") / 1024.0) } else { "—".into() },
            c["valid"],
            c["runs"]
        );
    }
    s + "\n"
}
