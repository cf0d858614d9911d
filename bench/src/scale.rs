//! The scale run (issue 16, item 5): many upstreams at a steady rate into
//! many subscribers that each follow a few of them. Feed, wsgate and swarm
//! are separate processes sharing the machine (no pinning: this is the
//! whole-daemon figure, not a per-core one). Reported: deliveries/s over
//! the window, what was offered, messages lost (sequence gaps per followed
//! stream) and drops counted by wsgate, wsgate's CPU (cores) and RSS
//! (current and peak), and feed-to-subscriber latency percentiles.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::common::{http_get, metric_sum};
use crate::matrix::{cpu_secs, free_port, loadavg, wait_conns, Proc};
use crate::swarm::SwarmResult;

#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// The wsgate release binary.
    #[arg(long)]
    pub wsgate: PathBuf,
    /// Upstreams (each one link to the feed, its own numbered stream).
    #[arg(long, default_value_t = 100)]
    pub upstreams: usize,
    /// Messages per second per upstream.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Upstreams each subscriber follows.
    #[arg(long, default_value_t = 5)]
    pub follow: usize,
    /// raw or envelope.
    #[arg(long, default_value = "raw")]
    pub format: String,
    /// Seconds before the window (every link and subscriber up, queues settled).
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Window length, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub measure: f64,
    /// Swarm worker threads.
    #[arg(long, default_value_t = 2)]
    pub swarm_threads: usize,
    /// Where scale.json and scale.md (scale-deflate.* with `--deflate`) go.
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
    /// Where the children's logs and configs go.
    #[arg(long, default_value = "/tmp/wsbench")]
    pub work: PathBuf,
    /// Print only; do not write scale.json / scale.md.
    #[arg(long)]
    pub no_write: bool,
    /// The feed compresses (permessage-deflate, context takeover); wsgate
    /// offers it by default (`compression = "deflate"`).
    #[arg(long)]
    pub deflate: bool,
}

fn wsgate_config(port: u16, feed: &str, upstreams: usize) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_timeout = \"5s\"\n\n[log]\nlevel = \"warn\"\n\n\
         [subscribers]\nmax_connections = 20000\n\n[reconnect_governor]\nmax_in_flight = 64\nper_host_rate = \"1000/s\"\n\n"
    );
    for i in 0..upstreams {
        s += &format!(
            "[[upstreams]]\nname = \"u{i}\"\nurl = \"{feed}?u={i}\"\n[upstreams.decode]\nformat = \"json\"\ntopic = \"/type\"\n\n"
        );
    }
    s
}

/// RSS and peak RSS (VmRSS, VmHWM) of a process, KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return (0, 0) };
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub async fn run(a: ScaleArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.work)?;
    let exe = std::env::current_exe()?;
    let load_start = loadavg();
    let log = |what: &str| a.work.join(format!("scale-{what}.log"));
    let name = if a.deflate { "scale-deflate" } else { "scale" };

    let mut cmd = Command::new(&exe);
    cmd.args(["feed", "--port", "0", "--rate", &a.rate.to_string(), "--run-per-conn"]);
    if a.deflate {
        cmd.arg("--deflate");
    }
    cmd.args(["--duration", &(a.warmup + a.measure + 240.0).ceil().to_string()]);
    let mut feed = Proc::spawn("feed", cmd, &log("feed")).await?;
    let v = feed.expect("listening", Duration::from_secs(10)).await?;
    let furl = format!("ws://127.0.0.1:{}/", v["port"].as_u64().unwrap_or(0));

    let port = free_port()?;
    let cfg = a.work.join("scale-wsgate.toml");
    std::fs::write(&cfg, wsgate_config(port, &furl, a.upstreams))?;
    let mut cmd = Command::new(&a.wsgate);
    cmd.arg("run").arg("--config").arg(&cfg);
    let wsgate = Proc::spawn("wsgate", cmd, &log("wsgate")).await?;
    wait_conns(&mut feed, a.upstreams as u64).await?;
    let mut ready = false;
    for _ in 0..1500 {
        if let Ok((200, _)) = http_get(port, "/readyz", Duration::from_secs(5)).await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !ready {
        bail!("wsgate not ready with {} upstreams", a.upstreams);
    }

    let mut cmd = Command::new(&exe);
    cmd.args(["swarm", "--url", &format!("ws://127.0.0.1:{port}/ws?format={}", a.format)]);
    cmd.args(["--clients", &a.subscribers.to_string(), "--follow", &a.follow.to_string()]);
    cmd.args(["--upstreams", &a.upstreams.to_string(), "--prefix", "u"]);
    cmd.args(["--warmup", &a.warmup.to_string(), "--measure", &a.measure.to_string()]);
    cmd.args(["--threads", &a.swarm_threads.to_string()]);
    let mut swarm = Proc::spawn("swarm", cmd, &log("swarm")).await?;
    let c = swarm.expect("connected", Duration::from_secs(120)).await?;
    if c["connected"].as_u64() != Some(a.subscribers as u64) {
        bail!("only {} of {} subscribers connected", c["connected"], a.subscribers);
    }
    // The window opens `warmup` after this; CPU and drops are read at its edges.
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let dropped_of = |m: &str| metric_sum(m, "wsgate_subscriber_dropped_total", &[]);
    let m0 = http_get(port, "/metrics", Duration::from_secs(5)).await.map(|(_, b)| b).unwrap_or_default();
    let cpu0 = cpu_secs(wsgate.pid);
    tokio::time::sleep(Duration::from_secs_f64(a.measure)).await;
    let cpu1 = cpu_secs(wsgate.pid);
    let (rss, peak) = rss_kib(wsgate.pid);
    let m1 = http_get(port, "/metrics", Duration::from_secs(5)).await.map(|(_, b)| b).unwrap_or_default();
    let res = swarm.expect("result", Duration::from_secs(60)).await?;
    let sw: SwarmResult = serde_json::from_value(res)?;
    swarm.stop().await;
    wsgate.stop().await;
    feed.stop().await;

    let offered = a.upstreams as f64 * a.rate as f64 * (a.subscribers * a.follow) as f64 / a.upstreams as f64;
    let doc = json!({
        "load_at_start": load_start,
        "load_at_end": loadavg(),
        "upstreams": a.upstreams, "rate": a.rate, "subscribers": a.subscribers, "follow": a.follow,
        "format": a.format, "measure_s": a.measure, "deflate": a.deflate,
        "offered_deliveries_per_s": offered,
        "deliveries_per_s": sw.deliveries_per_s,
        "missed": sw.missed,
        "dropped_in_window": dropped_of(&m1) - dropped_of(&m0),
        // Bytes on the wire / bytes decoded: below 1 when permessage-deflate is on.
        "wire_ratio": (metric_sum(&m1, "wsgate_upstream_wire_bytes_total", &[]) - metric_sum(&m0, "wsgate_upstream_wire_bytes_total", &[]))
            / (metric_sum(&m1, "wsgate_upstream_bytes_total", &[]) - metric_sum(&m0, "wsgate_upstream_bytes_total", &[])).max(1.0),
        "wsgate_cores": (cpu1 - cpu0) / a.measure,
        "wsgate_rss_kib": rss, "wsgate_peak_rss_kib": peak,
        "lat_us_p50": sw.lat_us_p50, "lat_us_p99": sw.lat_us_p99, "lat_us_p999": sw.lat_us_p999,
        "closed_early": sw.closed_early,
    });
    let md = markdown(&doc);
    print!("{md}");
    if !a.no_write {
        std::fs::write(a.out.join(format!("{name}.json")), serde_json::to_string_pretty(&doc)?)?;
        std::fs::write(a.out.join(format!("{name}.md")), md)?;
    }
    Ok(())
}

fn markdown(d: &Value) -> String {
    let n = |k: &str| d[k].as_f64().unwrap_or(0.0);
    format!(
        "## Scale run (issue 16, item 5){}\n\n\
         {} upstreams x {} msg/s into {} {} subscribers each following {} (feed, wsgate and swarm as separate \
         processes on the same 2 cores, no pinning). Load average (1, 5, 15 min) at start: {}, at end: {}.\n\n\
         | offered deliveries/s | delivered/s | lost (gaps) | dropped by wsgate | wsgate CPU (cores) | RSS (peak) | p50 | p99 | p99.9 | wire / decoded bytes |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {:.0} | {:.0} | {} | {:.0} | {:.2} | {:.0} MB ({:.0} MB) | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} |\n",
        if d["deflate"].as_bool() == Some(true) { ", upstreams with permessage-deflate" } else { "" },
        d["upstreams"],
        d["rate"],
        d["subscribers"],
        d["format"].as_str().unwrap_or(""),
        d["follow"],
        d["load_at_start"].as_str().unwrap_or("?"),
        d["load_at_end"].as_str().unwrap_or("?"),
        n("offered_deliveries_per_s"),
        n("deliveries_per_s"),
        d["missed"],
        n("dropped_in_window"),
        n("wsgate_cores"),
        n("wsgate_rss_kib") / 1024.0,
        n("wsgate_peak_rss_kib") / 1024.0,
        n("lat_us_p50") / 1000.0,
        n("lat_us_p99") / 1000.0,
        n("lat_us_p999") / 1000.0,
        n("wire_ratio"),
    )
}
