//! The matrix runner: starts the feed, the target (wsgate as its real binary,
//! or the reference relay) and the swarm as child processes on 127.0.0.1,
//! measures, stops every child it started (by its PID, through its handle),
//! and writes `results.json` and `results.md`.
//!
//! Every phase is bounded in time; every child also has its own `--duration`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{http_get, metric_sum, now_ns, parse_stamp, rss_kib};
use crate::swarm::SwarmResult;

#[derive(clap::Args, Debug, Clone)]
pub struct MatrixArgs {
    /// The wsgate release binary.
    #[arg(long)]
    pub wsgate: PathBuf,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
    /// Seconds of warm-up before each measurement window.
    #[arg(long, default_value_t = 1.5)]
    pub warmup: f64,
    /// Seconds of each throughput measurement window.
    #[arg(long, default_value_t = 4.0)]
    pub measure: f64,
    /// Rounds of the throughput matrix (alternating target order); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of each latency window (5 000 msg/s x 100 subscribers).
    #[arg(long, default_value_t = 6.0)]
    pub latency_measure: f64,
    /// Comma list of phases: throughput,latency,slow,rss,recovery,halfopen (or all).
    #[arg(long, default_value = "all")]
    pub only: String,
    /// Subscribers for the per-idle-subscriber memory run.
    #[arg(long, default_value_t = 10_000)]
    pub idle_subs: usize,
    /// Paced feed rate (msg/s) for the never-reading-subscriber run.
    #[arg(long, default_value_t = 5_000)]
    pub slow_rate: u64,
    /// Where the children's logs and configs go.
    #[arg(long, default_value = "/tmp/wsbench")]
    pub work: PathBuf,
}

// ---------------------------------------------------------------- children

/// A child process we started. Killed (SIGKILL to its own PID) on `stop` or drop.
pub(crate) struct Proc {
    name: String,
    child: Child,
    pub(crate) pid: u32,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Value>,
}

impl Proc {
    pub(crate) async fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let log_file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::from(log_file)).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name}: no pid"))?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    let _ = tx.send(v);
                }
            }
        });
        Ok(Proc { name: name.to_string(), child, pid, stdin, events })
    }

    /// The next stdout event named `event` (others are skipped), within `t`.
    pub(crate) async fn expect(&mut self, event: &str, t: Duration) -> anyhow::Result<Value> {
        let end = Instant::now() + t;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(v)) if v["event"] == event => return Ok(v),
                Ok(Some(_)) => continue,
                Ok(None) => bail!("{} exited while waiting for {event:?}", self.name),
                Err(_) => bail!("{}: no {event:?} within {t:?}", self.name),
            }
        }
    }

    pub(crate) async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("no stdin"))?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// SIGKILL to this child's PID, then reap it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// SIGTERM to this child's PID (graceful: wsgate exits 0, callgrind dumps).
    async fn terminate(mut self, t: Duration) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        match tokio::time::timeout(t, self.child.wait()).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                None
            }
        }
    }
}

/// User + system CPU seconds of a process so far.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let (u, s) = cpu_split(pid);
    u + s
}

/// (user, system) CPU seconds of a process so far.
fn cpu_split(pid: u32) -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return (0.0, 0.0) };
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else { return (0.0, 0.0) };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (ut / 100.0, st / 100.0)
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Ctx {
    exe: PathBuf,
    wsgate: PathBuf,
    work: PathBuf,
    seq: u32,
}

impl Ctx {
    fn log(&mut self, what: &str) -> PathBuf {
        self.seq += 1;
        self.work.join(format!("{:03}-{what}.log", self.seq))
    }

    async fn feed(
        &mut self,
        port: u16,
        rate: u64,
        idle: bool,
        run_id: u64,
        duration: u64,
    ) -> anyhow::Result<(Proc, u16, u64)> {
        let mut last_err = None;
        for _ in 0..20 {
            let mut cmd = Command::new(&self.exe);
            cmd.args(["feed", "--port", &port.to_string(), "--rate", &rate.to_string()]);
            cmd.args(["--run-id", &run_id.to_string(), "--duration", &duration.to_string()]);
            if idle {
                cmd.arg("--idle");
            }
            let log = self.log("feed");
            let mut p = Proc::spawn("feed", cmd, &log).await?;
            match p.expect("listening", Duration::from_secs(5)).await {
                Ok(v) => {
                    let port = v["port"].as_u64().unwrap_or(0) as u16;
                    return Ok((p, port, v["at_ns"].as_u64().unwrap_or(0)));
                }
                Err(e) => {
                    // Port still held: try again shortly.
                    last_err = Some(e);
                    p.stop().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("feed did not start")))
    }

    async fn swarm(
        &mut self,
        url: &str,
        clients: usize,
        never: usize,
        warmup: f64,
        measure: f64,
        idle: bool,
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["swarm", "--url", url, "--clients", &clients.to_string(), "--never-read", &never.to_string()]);
        cmd.args(["--warmup", &warmup.to_string(), "--measure", &measure.to_string()]);
        if idle {
            cmd.arg("--idle");
        }
        let log = self.log("swarm");
        Proc::spawn("swarm", cmd, &log).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Kind {
    Wsgate,
    Reference,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Wsgate => "wsgate",
            Kind::Reference => "reference",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct TargetOpts {
    heartbeat: Option<(&'static str, &'static str)>,
    stable_after: Option<&'static str>,
    valgrind: Option<PathBuf>,
}

struct Target {
    kind: Kind,
    proc: Proc,
    port: u16,
}

impl Target {
    fn url(&self, format: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?format={format}", self.port)
    }

    async fn metrics(&self) -> String {
        if self.kind != Kind::Wsgate {
            return String::new();
        }
        http_get(self.port, "/metrics", Duration::from_secs(5)).await.map(|(_, b)| b).unwrap_or_default()
    }
}

fn wsgate_config(port: u16, feeds: &[String], o: &TargetOpts) -> String {
    let mut c = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_timeout = \"5s\"\n\n[log]\nlevel = \"warn\"\n\n\
         [subscribers]\nmax_connections = 20000\nqueue_capacity = 1024\noverflow = \"drop_oldest\"\n"
    );
    for (i, url) in feeds.iter().enumerate() {
        let name = if i == 0 { "feed".to_string() } else { format!("feed{i}") };
        c += &format!("\n[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\n");
        if let Some((interval, timeout)) = o.heartbeat {
            c += &format!("\n[upstreams.heartbeat]\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\n");
        }
        c += "\n[upstreams.reconnect]\ninitial = \"100ms\"\n";
        if let Some(s) = o.stable_after {
            c += &format!("stable_after = \"{s}\"\n");
        }
        c += "\n[upstreams.decode]\nformat = \"json\"\ntopic = \"/type\"\n";
    }
    c
}

/// `program`, or `valgrind --tool=callgrind ... program` when profiling.
fn command(program: &Path, o: &TargetOpts) -> Command {
    match &o.valgrind {
        Some(out) => {
            let mut c = Command::new("valgrind");
            c.args(["--tool=callgrind", "--dump-instr=yes", "--compress-strings=no", "--compress-pos=no"]);
            c.arg(format!("--callgrind-out-file={}", out.display()));
            c.arg(program);
            c
        }
        None => Command::new(program),
    }
}

async fn start_target(ctx: &mut Ctx, kind: Kind, feeds: &[String], o: &TargetOpts) -> anyhow::Result<Target> {
    match kind {
        Kind::Wsgate => {
            let port = free_port()?;
            let cfg = ctx.work.join(format!("wsgate-{port}.toml"));
            std::fs::write(&cfg, wsgate_config(port, feeds, o))?;
            let mut cmd = command(&ctx.wsgate, o);
            cmd.arg("run").arg("--config").arg(&cfg);
            let log = ctx.log("wsgate");
            let proc = Proc::spawn("wsgate", cmd, &log).await?;
            let t = Target { kind, proc, port };
            // Ready = every upstream connected.
            let limit = if o.valgrind.is_some() { 120 } else { 20 };
            let end = Instant::now() + Duration::from_secs(limit);
            loop {
                if let Ok((200, _)) = http_get(port, "/readyz", Duration::from_secs(5)).await {
                    break;
                }
                if Instant::now() > end {
                    bail!("wsgate not ready within {limit}s (log: {})", log.display());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(t)
        }
        Kind::Reference => {
            let mut cmd = command(&ctx.exe, o);
            cmd.arg("relay");
            for f in feeds {
                cmd.args(["--upstream", f]);
            }
            let log = ctx.log("reference");
            let mut proc = Proc::spawn("reference", cmd, &log).await?;
            let limit = if o.valgrind.is_some() { 60 } else { 5 };
            let v = proc.expect("listening", Duration::from_secs(limit)).await?;
            let port = v["port"].as_u64().unwrap_or(0) as u16;
            Ok(Target { kind, proc, port })
        }
    }
}

/// Waits until the feed has accepted `n` connections in total.
pub(crate) async fn wait_conns(feed: &mut Proc, n: u64) -> anyhow::Result<()> {
    loop {
        let v = feed.expect("conn", Duration::from_secs(20)).await?;
        if v["n"].as_u64().unwrap_or(0) >= n {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------- runs

#[derive(Debug, Clone, Default, Serialize)]
struct FanoutRun {
    /// Round of the matrix (runs of the same round ran back to back: paired ratios).
    round: usize,
    target: String,
    format: String,
    subscribers: usize,
    never_read: usize,
    feed_rate: u64,
    swarm: SwarmResult,
    /// CPU seconds per second of the window.
    cpu_target: f64,
    /// The kernel's part of cpu_target (socket writes): invisible to callgrind.
    cpu_target_sys: f64,
    cpu_feed: f64,
    cpu_swarm: f64,
    rss_kib: u64,
    /// wsgate only: messages dropped on overflow (all subscribers), whole run.
    dropped_overflow: f64,
    /// wsgate only: upstream messages received, whole run.
    upstream_messages: f64,
}

#[allow(clippy::too_many_arguments)]
async fn fanout_run(
    ctx: &mut Ctx,
    kind: Kind,
    format: &str,
    subs: usize,
    never: usize,
    rate: u64,
    warmup: f64,
    measure: f64,
) -> anyhow::Result<FanoutRun> {
    let (mut feed, fport, _) = ctx.feed(0, rate, false, 1, 90).await?;
    let target = start_target(ctx, kind, &[format!("ws://127.0.0.1:{fport}/")], &TargetOpts::default()).await?;
    wait_conns(&mut feed, 1).await?;
    let mut swarm = ctx.swarm(&target.url(format), subs, never, warmup, measure, false).await?;
    swarm.expect("connected", Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let pids = [target.proc.pid, feed.pid, swarm.pid];
    let c0: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
    let sys0 = cpu_split(target.proc.pid).1;
    tokio::time::sleep(Duration::from_secs_f64(measure)).await;
    let c1: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
    let sys1 = cpu_split(target.proc.pid).1;
    let res = swarm.expect("result", Duration::from_secs(30)).await?;
    let swarm_res: SwarmResult = serde_json::from_value(res)?;
    let metrics = target.metrics().await;
    let run = FanoutRun {
        round: 0,
        target: kind.name().into(),
        format: format.into(),
        subscribers: subs,
        never_read: never,
        feed_rate: rate,
        swarm: swarm_res,
        cpu_target: (c1[0] - c0[0]) / measure,
        cpu_target_sys: (sys1 - sys0) / measure,
        cpu_feed: (c1[1] - c0[1]) / measure,
        cpu_swarm: (c1[2] - c0[2]) / measure,
        rss_kib: rss_kib(target.proc.pid).unwrap_or(0),
        dropped_overflow: metric_sum(&metrics, "wsgate_subscriber_dropped_total", &["reason=\"overflow\""]),
        upstream_messages: metric_sum(&metrics, "wsgate_upstream_messages_total", &[]),
    };
    swarm.stop().await;
    target.proc.stop().await;
    feed.stop().await;
    eprintln!(
        "  {:9} {:8} subs={:3} never={} rate={:5}: {:>10.0} deliveries/s, missed {}, p50 {:.0}us p99 {:.0}us p99.9 {:.0}us, cpu t/f/s {:.2}/{:.2}/{:.2}",
        run.target,
        run.format,
        subs,
        never,
        rate,
        run.swarm.deliveries_per_s,
        run.swarm.missed,
        run.swarm.lat_us_p50,
        run.swarm.lat_us_p99,
        run.swarm.lat_us_p999,
        run.cpu_target,
        run.cpu_feed,
        run.cpu_swarm
    );
    Ok(run)
}

#[derive(Debug, Clone, Default, Serialize)]
struct MemRun {
    target: String,
    upstreams: usize,
    subscribers: usize,
    connected: usize,
    rss_base_kib: u64,
    rss_kib: u64,
    per_subscriber_bytes: f64,
}

async fn rss_upstreams(ctx: &mut Ctx, kind: Kind, n: usize) -> anyhow::Result<MemRun> {
    let (mut feed, fport, _) = ctx.feed(0, 0, true, 1, 60).await?;
    let feeds: Vec<String> = (0..n).map(|_| format!("ws://127.0.0.1:{fport}/")).collect();
    let target = start_target(ctx, kind, &feeds, &TargetOpts::default()).await?;
    wait_conns(&mut feed, n as u64).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kib(target.proc.pid).unwrap_or(0);
    target.proc.stop().await;
    feed.stop().await;
    eprintln!("  {:9} idle, {n} upstreams: RSS {:.1} MiB", kind.name(), rss as f64 / 1024.0);
    Ok(MemRun { target: kind.name().into(), upstreams: n, rss_kib: rss, ..Default::default() })
}

async fn rss_subscribers(ctx: &mut Ctx, kind: Kind, n: usize) -> anyhow::Result<MemRun> {
    let (mut feed, fport, _) = ctx.feed(0, 0, true, 1, 200).await?;
    let target = start_target(ctx, kind, &[format!("ws://127.0.0.1:{fport}/")], &TargetOpts::default()).await?;
    wait_conns(&mut feed, 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = rss_kib(target.proc.pid).unwrap_or(0);
    let mut swarm = ctx.swarm(&target.url("envelope"), n, 0, 0.0, 60.0, true).await?;
    let v = swarm.expect("connected", Duration::from_secs(150)).await?;
    let connected = v["connected"].as_u64().unwrap_or(0) as usize;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kib(target.proc.pid).unwrap_or(0);
    swarm.stop().await;
    target.proc.stop().await;
    feed.stop().await;
    let per = (rss.saturating_sub(base) as f64 * 1024.0) / connected.max(1) as f64;
    eprintln!(
        "  {:9} {connected}/{n} idle subscribers: RSS {:.1} -> {:.1} MiB, {:.1} KiB each",
        kind.name(),
        base as f64 / 1024.0,
        rss as f64 / 1024.0,
        per / 1024.0
    );
    Ok(MemRun {
        target: kind.name().into(),
        upstreams: 1,
        subscribers: n,
        connected,
        rss_base_kib: base,
        rss_kib: rss,
        per_subscriber_bytes: per,
    })
}

/// What the in-process probe subscriber sees.
#[derive(Debug)]
enum Seen {
    Data { run: u64, at: u64 },
    State { state: String, at: u64 },
}

/// One subscriber inside this process, reconnecting, reporting what it sees.
fn probe(url: String) -> (mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let h = tokio::spawn(async move {
        loop {
            if let Ok((mut ws, _)) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await {
                while let Some(Ok(m)) = ws.next().await {
                    let at = now_ns();
                    let Message::Text(t) = m else { continue };
                    if let Some(s) = parse_stamp(t.as_bytes()) {
                        let _ = tx.send(Seen::Data { run: s.run, at });
                    } else if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                        if v["event"] == "upstream" {
                            let state = v["state"].as_str().unwrap_or("").to_string();
                            let _ = tx.send(Seen::State { state, at });
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (rx, h)
}

async fn wait_seen(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    t: Duration,
    mut f: impl FnMut(&Seen) -> bool,
) -> anyhow::Result<u64> {
    let end = Instant::now() + t;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(s)) if f(&s) => {
                return Ok(match s {
                    Seen::Data { at, .. } | Seen::State { at, .. } => at,
                })
            }
            Ok(Some(_)) => continue,
            _ => bail!("not seen within {t:?}"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
struct RecoveryRun {
    target: String,
    down_ms: u64,
    /// Restarted feed listening -> first message from it at the subscriber.
    restart_to_first_ms: Vec<f64>,
    /// Feed killed -> first message from the restarted feed.
    kill_to_first_ms: Vec<f64>,
    downtime_histogram_sum_s: f64,
}

async fn recovery(ctx: &mut Ctx, kind: Kind, down_ms: u64, trials: u64) -> anyhow::Result<RecoveryRun> {
    let (mut feed, fport, _) = ctx.feed(0, 1000, false, 1, 120).await?;
    let o = TargetOpts { stable_after: Some("300ms"), ..Default::default() };
    let target = start_target(ctx, kind, &[format!("ws://127.0.0.1:{fport}/")], &o).await?;
    wait_conns(&mut feed, 1).await?;
    let (mut rx, h) = probe(target.url("raw"));
    wait_seen(&mut rx, Duration::from_secs(10), |s| matches!(s, Seen::Data { run: 1, .. })).await?;
    let mut out = RecoveryRun { target: kind.name().into(), down_ms, ..Default::default() };
    for trial in 0..trials {
        let run = trial + 2;
        // Connected well past stable_after: the backoff is back at `initial`.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let killed = now_ns();
        feed.stop().await;
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        let (f, _, listening) = ctx.feed(fport, 1000, false, run, 120).await?;
        feed = f;
        let first =
            wait_seen(&mut rx, Duration::from_secs(15), |s| matches!(s, Seen::Data { run: r, .. } if *r == run))
                .await?;
        out.restart_to_first_ms.push((first.saturating_sub(listening)) as f64 / 1e6);
        out.kill_to_first_ms.push((first.saturating_sub(killed)) as f64 / 1e6);
    }
    let m = target.metrics().await;
    out.downtime_histogram_sum_s = metric_sum(&m, "wsgate_upstream_downtime_seconds_sum", &[]);
    h.abort();
    target.proc.stop().await;
    feed.stop().await;
    eprintln!("  {:9} recovery (down {down_ms} ms): restart->first {:?} ms", kind.name(), out.restart_to_first_ms);
    Ok(out)
}

#[derive(Debug, Clone, Default, Serialize)]
struct HalfOpenRun {
    target: String,
    interval: String,
    timeout: String,
    detect_ms: Vec<f64>,
    dead_link_disconnects: f64,
}

async fn halfopen(ctx: &mut Ctx, trials: u64) -> anyhow::Result<HalfOpenRun> {
    let (interval, timeout) = ("1s", "1s");
    let (mut feed, fport, _) = ctx.feed(0, 100, false, 1, 120).await?;
    let o = TargetOpts { heartbeat: Some((interval, timeout)), stable_after: Some("300ms"), ..Default::default() };
    let target = start_target(ctx, Kind::Wsgate, &[format!("ws://127.0.0.1:{fport}/")], &o).await?;
    wait_conns(&mut feed, 1).await?;
    let (mut rx, h) = probe(target.url("envelope"));
    let mut out = HalfOpenRun {
        target: "wsgate".into(),
        interval: interval.into(),
        timeout: timeout.into(),
        ..Default::default()
    };
    for trial in 0..trials {
        let run = trial + 1;
        wait_seen(&mut rx, Duration::from_secs(15), |s| matches!(s, Seen::Data { run: r, .. } if *r == run)).await?;
        // A random phase against wsgate's ping schedule (pings every `interval`).
        tokio::time::sleep(Duration::from_millis(1000 + (now_ns() / 1000) % 1000)).await;
        feed.send("halfopen").await?;
        let at = feed.expect("halfopen", Duration::from_secs(5)).await?["at_ns"].as_u64().unwrap_or(0);
        let seen = wait_seen(
            &mut rx,
            Duration::from_secs(15),
            |s| matches!(s, Seen::State { state, .. } if state != "connected"),
        )
        .await?;
        out.detect_ms.push(seen.saturating_sub(at) as f64 / 1e6);
        feed.stop().await;
        let (f, _, _) = ctx.feed(fport, 100, false, run + 1, 120).await?;
        feed = f;
    }
    let m = target.metrics().await;
    out.dead_link_disconnects = metric_sum(&m, "wsgate_upstream_disconnects_total", &["reason=\"dead_link\""]);
    h.abort();
    target.proc.stop().await;
    feed.stop().await;
    eprintln!("  wsgate    half-open detection ({interval}/{timeout}): {:?} ms", out.detect_ms);
    Ok(out)
}

// ---------------------------------------------------------------- matrix

#[derive(Debug, Clone, Default, Serialize)]
struct Results {
    started: String,
    machine: String,
    wsgate_version: String,
    /// `git describe --always --dirty` of the tree wsgate was built from (best effort).
    wsgate_commit: String,
    /// /proc/loadavg when the matrix started and ended (other work skews numbers).
    load_start: String,
    load_end: String,
    nice: i32,
    throughput: Vec<FanoutRun>,
    latency: Vec<FanoutRun>,
    slow: Vec<FanoutRun>,
    memory: Vec<MemRun>,
    recovery: Vec<RecoveryRun>,
    halfopen: Vec<HalfOpenRun>,
    notes: Vec<String>,
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Our nice value (field 19 of /proc/self/stat).
fn nice_level() -> i32 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(16).and_then(|v| v.parse().ok())))
        .unwrap_or(0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{n} cores, {cpu}")
}

pub async fn run(a: MatrixArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.work)?;
    std::fs::create_dir_all(&a.out)?;
    let mut ctx = Ctx { exe: std::env::current_exe()?, wsgate: a.wsgate.clone(), work: a.work.clone(), seq: 0 };
    let want = |p: &str| a.only == "all" || a.only.split(',').any(|x| x.trim() == p);
    let version = std::process::Command::new(&a.wsgate)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut r = Results {
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        machine: machine(),
        wsgate_version: version,
        wsgate_commit: std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        load_start: loadavg(),
        nice: nice_level(),
        ..Default::default()
    };
    let started = Instant::now();
    let kinds = [Kind::Wsgate, Kind::Reference];

    if want("throughput") {
        eprintln!("== fan-out throughput (feed as fast as possible, {} rounds)", a.rounds);
        for round in 0..a.rounds {
            for format in ["raw", "envelope"] {
                for subs in [1, 10, 100] {
                    // Alternate which target goes first, against drift.
                    let order = if round % 2 == 0 { kinds } else { [kinds[1], kinds[0]] };
                    for kind in order {
                        match fanout_run(&mut ctx, kind, format, subs, 0, 0, a.warmup, a.measure).await {
                            Ok(run) => r.throughput.push(FanoutRun { round, ..run }),
                            Err(e) => r.notes.push(format!("throughput {} {format} {subs}: {e:#}", kind.name())),
                        }
                    }
                }
            }
        }
    }
    if want("latency") {
        eprintln!("== latency at 5000 msg/s x 100 subscribers ({} rounds)", a.rounds);
        for round in 0..a.rounds {
            for format in ["raw", "envelope"] {
                let order = if round % 2 == 0 { kinds } else { [kinds[1], kinds[0]] };
                for kind in order {
                    match fanout_run(&mut ctx, kind, format, 100, 0, 5000, 2.0, a.latency_measure).await {
                        Ok(run) => r.latency.push(FanoutRun { round, ..run }),
                        Err(e) => r.notes.push(format!("latency {} {format}: {e:#}", kind.name())),
                    }
                }
            }
        }
    }
    if want("slow") {
        eprintln!("== one never-reading subscriber among 10");
        for kind in kinds {
            // Paced below saturation: the 9 readers must lose nothing.
            for never in [0, 1] {
                match fanout_run(&mut ctx, kind, "raw", 10, never, a.slow_rate, 4.0, a.measure).await {
                    Ok(run) => r.slow.push(run),
                    Err(e) => r.notes.push(format!("slow {} paced never={never}: {e:#}", kind.name())),
                }
            }
            // Saturated: the readers' throughput with and without it.
            for never in [0, 1] {
                match fanout_run(&mut ctx, kind, "raw", 10, never, 0, 4.0, a.measure).await {
                    Ok(run) => r.slow.push(run),
                    Err(e) => r.notes.push(format!("slow {} saturated never={never}: {e:#}", kind.name())),
                }
            }
        }
    }
    if want("rss") {
        eprintln!("== memory");
        for kind in kinds {
            match rss_upstreams(&mut ctx, kind, 10).await {
                Ok(m) => r.memory.push(m),
                Err(e) => r.notes.push(format!("rss 10 upstreams {}: {e:#}", kind.name())),
            }
        }
        for kind in kinds {
            match rss_subscribers(&mut ctx, kind, a.idle_subs).await {
                Ok(m) => r.memory.push(m),
                Err(e) => r.notes.push(format!("rss {} subscribers {}: {e:#}", a.idle_subs, kind.name())),
            }
        }
    }
    if want("recovery") {
        eprintln!("== recovery");
        for kind in kinds {
            for (down, trials) in [(0, 5), (1000, 2)] {
                match recovery(&mut ctx, kind, down, trials).await {
                    Ok(x) => r.recovery.push(x),
                    Err(e) => r.notes.push(format!("recovery {} down {down}: {e:#}", kind.name())),
                }
            }
        }
    }
    if want("halfopen") {
        eprintln!("== half-open detection");
        match halfopen(&mut ctx, 6).await {
            Ok(x) => r.halfopen.push(x),
            Err(e) => r.notes.push(format!("halfopen: {e:#}")),
        }
    }
    r.load_end = loadavg();
    for n in &r.notes {
        eprintln!("NOTE: {n}");
    }
    eprintln!("== matrix done in {:.0}s", started.elapsed().as_secs_f64());
    let json_path = a.out.join("results.json");
    // Merge with an earlier run's phases that were not re-run (--only).
    let mut v = serde_json::to_value(&r)?;
    if a.only != "all" {
        if let Ok(Ok(old)) = std::fs::read_to_string(&json_path).map(|s| serde_json::from_str::<Value>(&s)) {
            for key in ["throughput", "latency", "slow", "memory", "recovery", "halfopen"] {
                if v[key].as_array().is_some_and(|x| x.is_empty()) {
                    v[key] = old[key].clone();
                }
            }
        }
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&v)?)?;
    std::fs::write(a.out.join("results.md"), crate::matrix::report::markdown(&v))?;
    eprintln!("wrote {} and results.md", json_path.display());
    Ok(())
}

// ---------------------------------------------------------------- profiling load

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The wsgate binary (run under callgrind when --callgrind-out is given).
    #[arg(long)]
    pub wsgate: PathBuf,
    /// Write a callgrind profile here (wsgate runs under valgrind).
    #[arg(long)]
    pub callgrind_out: Option<PathBuf>,
    /// Subscribers.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// raw or envelope.
    #[arg(long, default_value = "raw")]
    pub format: String,
    /// Feed rate, msg/s.
    #[arg(long, default_value_t = 400)]
    pub rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    #[arg(long, default_value = "/tmp/wsbench")]
    pub work: PathBuf,
    /// Profile the reference relay instead of wsgate.
    #[arg(long)]
    pub reference: bool,
}

/// Feed + wsgate (optionally under callgrind) + swarm, then a graceful stop
/// (SIGTERM) so callgrind writes its profile.
pub async fn load(a: LoadArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.work)?;
    let mut ctx = Ctx { exe: std::env::current_exe()?, wsgate: a.wsgate.clone(), work: a.work.clone(), seq: 500 };
    let (mut feed, fport, _) = ctx.feed(0, a.rate, false, 1, 600).await?;
    let o = TargetOpts { valgrind: a.callgrind_out.clone(), ..Default::default() };
    let kind = if a.reference { Kind::Reference } else { Kind::Wsgate };
    let target = start_target(&mut ctx, kind, &[format!("ws://127.0.0.1:{fport}/")], &o).await?;
    wait_conns(&mut feed, 1).await?;
    let mut swarm = ctx.swarm(&target.url(&a.format), a.clients, 0, 1.0, a.seconds + 1.0, false).await?;
    swarm.expect("connected", Duration::from_secs(120)).await?;
    let profiling = a.callgrind_out.is_some();
    let control = |flag: &str| {
        // Steady state only: zero the counters when the window opens, dump when it closes.
        let out = std::process::Command::new("callgrind_control").arg(flag).arg(target.proc.pid.to_string()).output();
        if let Ok(o) = out {
            eprintln!("callgrind_control {flag}: {}", String::from_utf8_lossy(&o.stdout).trim());
        }
    };
    let m0 = target.metrics().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m1 = target.metrics().await;
    if profiling {
        control("-z");
    }
    tokio::time::sleep(Duration::from_secs_f64(a.seconds)).await;
    if profiling {
        control("-d");
    }
    let m2 = target.metrics().await;
    let _ = m0;
    let res = swarm.expect("result", Duration::from_secs_f64(a.seconds + 60.0)).await?;
    let delta = |name: &str| metric_sum(&m2, name, &[]) - metric_sum(&m1, name, &[]);
    let (mut window_up, mut window_sub) =
        (delta("wsgate_upstream_messages_total"), delta("wsgate_subscriber_messages_total"));
    if kind == Kind::Reference {
        // No metrics endpoint: the swarm's rate over the same span (paced loads lose nothing).
        window_sub = res["deliveries_per_s"].as_f64().unwrap_or(0.0) * a.seconds;
        window_up = window_sub / a.clients.max(1) as f64;
    }
    eprintln!("profile window: upstream messages {window_up}, subscriber messages {window_sub}");
    let metrics = target.metrics().await;
    eprintln!("load result: {res}");
    eprintln!(
        "wsgate: upstream messages {}, subscriber messages {}",
        metric_sum(&metrics, "wsgate_upstream_messages_total", &[]),
        metric_sum(&metrics, "wsgate_subscriber_messages_total", &[])
    );
    swarm.stop().await;
    let status = target.proc.terminate(Duration::from_secs(120)).await;
    eprintln!("wsgate exit: {status:?}");
    feed.stop().await;
    println!(
        "{}",
        json!({
            "event": "load",
            "target": kind.name(),
            "format": a.format,
            "clients": a.clients,
            "rate": a.rate,
            "seconds": a.seconds,
            "swarm": res,
            "window_upstream_messages": window_up,
            "window_subscriber_messages": window_sub,
        })
    );
    Ok(())
}

pub mod report;
