//! wsbench: the wsgate benchmark tool (issue 7). See bench/README.md.

mod common;
mod deflate_feed;
mod dedupe_report;
mod feed;
mod lossless;
mod matrix;
mod relay;
mod scale;
mod swarm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "wsbench", about = "Benchmarks for wsgate: feed server, subscriber swarm, reference relay, matrix.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// WebSocket feed server: stamped ~200-byte JSON messages at a rate.
    Feed(feed::FeedArgs),
    /// Reference relay: tokio-tungstenite + broadcast channel, same /ws shape.
    Relay(relay::RelayArgs),
    /// Subscriber swarm: N clients, HDR latency, deliveries/s, gaps.
    Swarm(swarm::SwarmArgs),
    /// Runs the whole matrix against wsgate and the reference; writes results.
    Matrix(matrix::MatrixArgs),
    /// Rewrites results.md from results.json (no measurement).
    Report {
        #[arg(long, default_value = "docs/bench")]
        out: std::path::PathBuf,
    },
    /// Drives a fan-out load against an already running gateway (for profiling).
    Load(matrix::LoadArgs),
    /// Lossless bursts: deliveries per relay CPU-second, peak RSS; invalid on any loss (issue 16).
    Lossless(lossless::LosslessArgs),
    /// The scale run: many upstreams into many subscribers following a few each (issue 16).
    Scale(scale::ScaleArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Feed(a) => current_thread()?.block_on(feed::run(a)),
        Cmd::Relay(a) => tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(relay::run(a)),
        Cmd::Swarm(a) => {
            let threads = a.threads.max(1);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?
                .block_on(swarm::run(a))
        }
        Cmd::Matrix(a) => current_thread()?.block_on(matrix::run(a)),
        Cmd::Report { out } => {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json"))?)?;
            std::fs::write(out.join("results.md"), matrix::report::markdown(&v))?;
            Ok(())
        }
        Cmd::Load(a) => current_thread()?.block_on(matrix::load(a)),
        Cmd::Lossless(a) => current_thread()?.block_on(lossless::run(a)),
        Cmd::Scale(a) => current_thread()?.block_on(scale::run(a)),
    }
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}
