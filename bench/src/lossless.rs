//! Lossless bursts (issue 16): a fixed number of messages, sent as fast as
//! the relay takes them once every subscriber is connected, and a run
//! counts only if every subscriber received every message (no sequence gap,
//! no `gap` event, no drop counted, no early close). Anything else is
//! reported as invalid, never as a throughput.
//!
//! The relay under test (wsgate with a queue large enough to lose nothing,
//! or the reference relay in `--lossless` mode, where a full subscriber
//! channel pauses its upstream read) is pinned to one core with `taskset`;
//! the feed and the swarm share the other. Reported: deliveries per relay
//! CPU-second (user + system, from go to the last delivery), deliveries/s
//! (from go to the last message received), peak RSS (VmHWM), p99 latency.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::common::{http_get, metric_sum, now_ns};
use crate::matrix::{cpu_secs, free_port, loadavg, wait_conns, Proc};
use crate::swarm::SwarmResult;

#[derive(clap::Args, Debug, Clone)]
pub struct LosslessArgs {
    /// The wsgate release binary.
    #[arg(long)]
    pub wsgate: PathBuf,
    /// Where lossless.json and lossless.md go.
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
    /// Rounds per cell (alternating which target goes first); median of the valid ones.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Scenarios as `subscribers:messages`, comma separated.
    #[arg(long, default_value = "1:500000,10:120000,100:12000")]
    pub scenarios: String,
    /// Formats, comma separated.
    #[arg(long, default_value = "raw,envelope")]
    pub formats: String,
    /// Targets, comma separated: wsgate, reference; and for the cost of
    /// de-duplication (issue 14): wsgate-seq (one link, `[upstreams.sequence]`
    /// on `/fseq`), wsgate-redundant (two feeds of the same stream,
    /// `urls` + `redundancy = "all"`, de-duplicated by `/fseq`).
    #[arg(long, default_value = "wsgate,reference")]
    pub targets: String,
    /// The core the relay under test is pinned to.
    #[arg(long, default_value = "0")]
    pub relay_cpu: String,
    /// The core(s) the feed and the swarm run on.
    #[arg(long, default_value = "1")]
    pub load_cpu: String,
    /// Time limit of one burst, seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Where the children's logs and configs go.
    #[arg(long, default_value = "/tmp/wsbench")]
    pub work: PathBuf,
    /// Print only; do not write lossless.json / lossless.md.
    #[arg(long)]
    pub no_write: bool,
}

/// One burst.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Burst {
    pub round: usize,
    pub target: String,
    pub format: String,
    pub subscribers: usize,
    pub messages: u64,
    /// Every subscriber got every message; nothing dropped or skipped.
    pub valid: bool,
    /// Why not, when not.
    pub invalid_because: String,
    pub deliveries: u64,
    pub wall_s: f64,
    pub deliveries_per_s: f64,
    pub relay_cpu_s: f64,
    pub deliveries_per_cpu_s: f64,
    pub peak_rss_kib: u64,
    pub lat_us_p99: f64,
    /// wsgate only: drops counted for any reason.
    pub dropped: f64,
    /// 1-minute load average when the burst started.
    pub load: String,
}

fn pinned(cpu: &str, program: &std::path::Path) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", cpu]).arg(program);
    c
}

/// VmHWM (peak resident set) of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn wsgate_config(port: u16, feeds: &[String], messages: u64, sequence: bool) -> String {
    // A queue that holds the whole burst: any drop is a failed run.
    let endpoints = if feeds.len() == 1 {
        format!("url = \"{}\"\n", feeds[0])
    } else {
        let list: Vec<String> = feeds.iter().map(|f| format!("\"{f}\"")).collect();
        format!("urls = [{}]\nredundancy = \"all\"\n", list.join(", "))
    };
    // Both feeds number their messages alike (`fseq`) but stamp their own
    // send time: the copies are told by the sequence, not the payload.
    let sequence = if sequence { "\n[upstreams.sequence]\npointer = \"/fseq\"\n" } else { "" };
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_timeout = \"5s\"\n\n[log]\nlevel = \"warn\"\n\n\
         [subscribers]\nmax_connections = 20000\nqueue_capacity = {}\nqueue_bytes = \"4GiB\"\n\
         overflow = \"drop_newest\"\n\n[[upstreams]]\nname = \"feed\"\n{endpoints}\
         \n[upstreams.decode]\nformat = \"json\"\ntopic = \"/type\"\n{sequence}",
        messages + 4096
    )
}

#[allow(clippy::too_many_arguments)]
async fn burst(
    a: &LosslessArgs,
    exe: &std::path::Path,
    seq: &mut u32,
    target: &str,
    format: &str,
    subs: usize,
    messages: u64,
    round: usize,
) -> anyhow::Result<Burst> {
    let mut log = |what: &str| {
        *seq += 1;
        a.work.join(format!("lossless-{:03}-{what}.log", *seq))
    };
    let load = loadavg();
    let mut cmd = pinned(&a.load_cpu, exe);
    cmd.args(["feed", "--port", "0", "--rate", "0", "--wait-go", "--count", &messages.to_string()]);
    cmd.args(["--duration", &(a.timeout + 60).to_string()]);
    let mut feed = Proc::spawn("feed", cmd, &log("feed")).await?;
    let v = feed.expect("listening", Duration::from_secs(10)).await?;
    let furl = format!("ws://127.0.0.1:{}/", v["port"].as_u64().unwrap_or(0));
    // wsgate-redundant: a second feed of the same numbered stream.
    let mut second = None;
    let mut furls = vec![furl.clone()];
    if target == "wsgate-redundant" {
        let mut cmd = pinned(&a.load_cpu, exe);
        cmd.args(["feed", "--port", "0", "--rate", "0", "--wait-go", "--count", &messages.to_string()]);
        cmd.args(["--duration", &(a.timeout + 60).to_string()]);
        let mut f = Proc::spawn("feed2", cmd, &log("feed2")).await?;
        let v = f.expect("listening", Duration::from_secs(10)).await?;
        furls.push(format!("ws://127.0.0.1:{}/", v["port"].as_u64().unwrap_or(0)));
        second = Some(f);
    }

    let (relay, port) = if target.starts_with("wsgate") {
        let port = free_port()?;
        let cfg = a.work.join(format!("lossless-wsgate-{port}.toml"));
        std::fs::write(&cfg, wsgate_config(port, &furls, messages, target != "wsgate"))?;
        let mut cmd = pinned(&a.relay_cpu, &a.wsgate);
        cmd.arg("run").arg("--config").arg(&cfg);
        let p = Proc::spawn("wsgate", cmd, &log("wsgate")).await?;
        let mut ready = false;
        for _ in 0..1000 {
            if let Ok((200, _)) = http_get(port, "/readyz", Duration::from_secs(5)).await {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !ready {
            bail!("wsgate not ready");
        }
        (p, port)
    } else {
        let mut cmd = pinned(&a.relay_cpu, exe);
        cmd.args(["relay", "--lossless", "--upstream", &furl, "--duration", &(a.timeout + 60).to_string()]);
        let mut p = Proc::spawn("reference", cmd, &log("reference")).await?;
        let v = p.expect("listening", Duration::from_secs(10)).await?;
        let port = v["port"].as_u64().unwrap_or(0) as u16;
        (p, port)
    };
    wait_conns(&mut feed, 1).await?;
    if let Some(f) = second.as_mut() {
        wait_conns(f, 1).await?;
    }
    let mut cmd = pinned(&a.load_cpu, exe);
    cmd.args(["swarm", "--url", &format!("ws://127.0.0.1:{port}/ws?format={format}")]);
    cmd.args(["--clients", &subs.to_string(), "--expect", &messages.to_string()]);
    cmd.args(["--measure", &a.timeout.to_string(), "--threads", "1"]);
    let mut swarm = Proc::spawn("swarm", cmd, &log("swarm")).await?;
    let c = swarm.expect("connected", Duration::from_secs(60)).await?;
    if c["connected"].as_u64() != Some(subs as u64) {
        bail!("only {} of {subs} subscribers connected", c["connected"]);
    }
    let cpu0 = cpu_secs(relay.pid);
    let go_ns = now_ns();
    feed.send("go").await?;
    if let Some(f) = second.as_mut() {
        f.send("go").await?;
    }
    let res = swarm.expect("result", Duration::from_secs(a.timeout + 30)).await?;
    let cpu1 = cpu_secs(relay.pid);
    let peak = peak_rss_kib(relay.pid);
    let sw: SwarmResult = serde_json::from_value(res)?;
    let dropped = if target.starts_with("wsgate") {
        let m = http_get(port, "/metrics", Duration::from_secs(5)).await.map(|(_, b)| b).unwrap_or_default();
        metric_sum(&m, "wsgate_subscriber_dropped_total", &[])
    } else {
        0.0
    };
    swarm.stop().await;
    relay.stop().await;
    feed.stop().await;
    if let Some(f) = second {
        f.stop().await;
    }

    let mut why = Vec::new();
    if sw.complete != subs {
        why.push(format!("{} of {subs} subscribers complete", sw.complete));
    }
    if sw.missed > 0 {
        why.push(format!("{} skipped", sw.missed));
    }
    if sw.repeated > 0 {
        why.push(format!("{} duplicated or out of order", sw.repeated));
    }
    if sw.gap_events > 0 {
        why.push(format!("{} gap events", sw.gap_events));
    }
    if sw.closed_early > 0 {
        why.push(format!("{} closed early", sw.closed_early));
    }
    if dropped > 0.0 {
        why.push(format!("{dropped} dropped"));
    }
    let wall_s = sw.last_recv_ns.saturating_sub(go_ns) as f64 / 1e9;
    let cpu = cpu1 - cpu0;
    if cpu < 0.2 {
        // /proc counts CPU in 10 ms ticks: a shorter burst measures nothing.
        why.push(format!("{cpu:.2} s of relay CPU is too short to measure (more messages)"));
    }
    let valid = why.is_empty();
    let b = Burst {
        round,
        target: target.into(),
        format: format.into(),
        subscribers: subs,
        messages,
        valid,
        invalid_because: why.join(", "),
        deliveries: sw.deliveries,
        wall_s,
        deliveries_per_s: if valid && wall_s > 0.0 { sw.deliveries as f64 / wall_s } else { 0.0 },
        relay_cpu_s: cpu,
        deliveries_per_cpu_s: if valid && cpu > 0.0 { sw.deliveries as f64 / cpu } else { 0.0 },
        peak_rss_kib: peak,
        lat_us_p99: sw.lat_us_p99,
        dropped,
        load,
    };
    if b.valid {
        eprintln!(
            "  {:9} {:8} {:3} x {:6}: {:>9.0} deliveries/s, {:>9.0} per relay CPU-s ({:.2} s CPU), peak RSS {} MiB, p99 {:.0} us",
            b.target,
            b.format,
            subs,
            messages,
            b.deliveries_per_s,
            b.deliveries_per_cpu_s,
            cpu,
            peak / 1024,
            b.lat_us_p99
        );
    } else {
        eprintln!("  {:9} {:8} {:3} x {:6}: INVALID ({})", b.target, b.format, subs, messages, b.invalid_because);
    }
    Ok(b)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(a: LosslessArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.work)?;
    let exe = std::env::current_exe()?;
    let mut scenarios = Vec::new();
    for s in a.scenarios.split(',') {
        let (n, m) = s.split_once(':').context("scenario is subscribers:messages")?;
        scenarios.push((n.trim().parse::<usize>()?, m.trim().parse::<u64>()?));
    }
    let formats: Vec<&str> = a.formats.split(',').map(str::trim).collect();
    let targets: Vec<&str> = a.targets.split(',').map(str::trim).collect();
    let started_load = loadavg();
    let mut seq = 0;
    let mut runs = Vec::new();
    for &(subs, messages) in &scenarios {
        for format in &formats {
            for round in 0..a.rounds {
                let mut order = targets.clone();
                if round % 2 == 1 {
                    order.reverse();
                }
                for target in order {
                    match burst(&a, &exe, &mut seq, target, format, subs, messages, round).await {
                        Ok(b) => runs.push(b),
                        Err(e) => {
                            eprintln!("  {target} {format} {subs} x {messages}: failed: {e:#}");
                            runs.push(Burst {
                                round,
                                target: target.into(),
                                format: format.to_string(),
                                subscribers: subs,
                                messages,
                                invalid_because: format!("{e:#}"),
                                ..Default::default()
                            });
                        }
                    }
                }
            }
        }
    }
    let summary = summarize(&runs, &scenarios, &formats, &targets);
    let doc = json!({ "load_at_start": started_load, "load_at_end": loadavg(), "runs": runs, "summary": summary });
    let md = markdown(&doc);
    print!("{md}");
    if !a.no_write {
        // The de-duplication runs (issue 14) have a file of their own.
        let stem = if targets.contains(&"reference") { "lossless" } else { "dedupe" };
        std::fs::write(a.out.join(format!("{stem}.json")), serde_json::to_string_pretty(&doc)?)?;
        std::fs::write(a.out.join(format!("{stem}.md")), md)?;
    }
    Ok(())
}

fn summarize(runs: &[Burst], scenarios: &[(usize, u64)], formats: &[&str], targets: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for &(subs, messages) in scenarios {
        for format in formats {
            for target in targets {
                let cell: Vec<&Burst> = runs
                    .iter()
                    .filter(|b| b.subscribers == subs && b.messages == messages && b.format == *format)
                    .filter(|b| b.target == *target)
                    .collect();
                let valid: Vec<&&Burst> = cell.iter().filter(|b| b.valid).collect();
                out.push(json!({
                    "target": target, "format": format, "subscribers": subs, "messages": messages,
                    "runs": cell.len(), "valid": valid.len(),
                    "deliveries_per_s": median(valid.iter().map(|b| b.deliveries_per_s).collect()),
                    "deliveries_per_cpu_s": median(valid.iter().map(|b| b.deliveries_per_cpu_s).collect()),
                    "peak_rss_kib": median(valid.iter().map(|b| b.peak_rss_kib as f64).collect()),
                    "lat_us_p99": median(valid.iter().map(|b| b.lat_us_p99).collect()),
                }));
            }
        }
    }
    out
}

/// The table: per scenario and format, wsgate and the reference side by side.
pub fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    let cells = doc["summary"].as_array().cloned().unwrap_or_default();
    if cells.iter().any(|c| c["target"] == "wsgate-redundant" || c["target"] == "wsgate-seq") {
        s += &crate::dedupe_report::dedupe_table(doc, &cells);
    }
    if !cells.iter().any(|c| c["target"] == "reference") {
        return s;
    }
    s += "## Lossless bursts (issue 16)\n\n";
    s += &format!(
        "Relay pinned to one core (`taskset`), feed and swarm on the other; ~200-byte JSON messages; \
         median of the valid runs; a run with any drop, gap or incomplete subscriber is invalid and \
         not counted. Load average (1, 5, 15 min) at start: {}, at end: {}.\n\n",
        doc["load_at_start"].as_str().unwrap_or("?"),
        doc["load_at_end"].as_str().unwrap_or("?")
    );
    s += "| scenario | format | wsgate deliveries/CPU-s | reference | ratio | wsgate deliveries/s | reference | wsgate peak RSS | reference | valid runs (wsgate / ref) |\n";
    s += "|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
    let find = |t: &str, f: &Value, n: &Value, m: &Value| {
        cells
            .iter()
            .find(|c| c["target"] == t && &c["format"] == f && &c["subscribers"] == n && &c["messages"] == m)
            .cloned()
    };
    for c in cells.iter().filter(|c| c["target"] == "wsgate") {
        let Some(r) = find("reference", &c["format"], &c["subscribers"], &c["messages"]) else { continue };
        let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        let ok = |v: &Value| v["valid"].as_u64().unwrap_or(0) > 0;
        let show = |v: &Value, k: &str| if ok(v) { format!("{:.0}", num(v, k)) } else { "invalid".into() };
        let mib = |v: &Value| if ok(v) { format!("{:.0} MB", num(v, "peak_rss_kib") / 1024.0) } else { "—".into() };
        let ratio = if ok(c) && ok(&r) && num(&r, "deliveries_per_cpu_s") > 0.0 {
            format!("{:.2}x", num(c, "deliveries_per_cpu_s") / num(&r, "deliveries_per_cpu_s"))
        } else {
            "—".into()
        };
        s += &format!(
            "| {} x {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} / {}/{} |\n",
            c["subscribers"],
            c["messages"],
            c["format"].as_str().unwrap_or(""),
            show(c, "deliveries_per_cpu_s"),
            show(&r, "deliveries_per_cpu_s"),
            ratio,
            show(c, "deliveries_per_s"),
            show(&r, "deliveries_per_s"),
            mib(c),
            mib(&r),
            c["valid"],
            c["runs"],
            r["valid"],
            r["runs"]
        );
    }
    s
}
