//! Logging with `tracing`: always to stderr (the stdout sink owns stdout),
//! text or JSON, level from config unless `RUST_LOG` is set.
//!
//! The libraries below us (actix-server, actix-http, awc, rustls) log
//! through the `log` crate; tracing-subscriber's `tracing-log` feature makes
//! `try_init` install a `LogTracer` as well, so their lines reach the same
//! output, with the same filter and format (SPEC §11).
//!
//! Secrets and library logs: at trace level awc and actix-http print no
//! request line, URI or header on the HTTP/1.1 path every upstream and
//! webhook uses (checked in awc 3.11 and actix-http 3.20: their `trace!`
//! and `debug!` lines carry header *names*, lengths, timers and error kinds).
//! The one exception is awc's HTTP/2 client, which traces the whole request
//! head (URI with its query, `Authorization`); we never negotiate h2 (ALPN
//! is `http/1.1` only), and its target is switched off below all the same,
//! so a future h2 path cannot leak a token at `RUST_LOG=trace`.

use tracing_subscriber::filter::Directive;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Library log targets that would print a request's URI or headers, kept
/// off whatever the configured level is (see the module docs).
const SILENCED: &[&str] = &["awc::client::h2proto=off"];

/// Installs the global subscriber and the `log` bridge. A second call (tests) is a no-op.
pub fn init_logging(cfg: &LogConfig) {
    let mut filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&cfg.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    for d in SILENCED {
        if let Ok(d) = d.parse::<Directive>() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_target(false);
    let _ = match cfg.format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
