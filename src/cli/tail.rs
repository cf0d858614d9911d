//! `wsgate tail` (SPEC §12): the interactive dump client, like the seeds'
//! `wsdump`. Three ways to name the feed: a URL (with `-H`, `--proxy`, …),
//! `--config FILE UPSTREAM` (that upstream's auth, headers, proxy, TLS and
//! Unix socket, through the daemon's own attempt code,
//! [`crate::upstream::connect_once`]), or `--gateway URL` (the gateway's
//! `/ws`). Messages go to stdout as they arrive; stdin lines are sent as
//! text frames. Exit codes: 0 on a close 1000 (either side) or after
//! `--count` messages, 1 with the reason otherwise, 2 on usage errors.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use awc::ws::{CloseCode, CloseReason, Frame, Message};
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::config::{self, scrub, ConfigSource, LogConfig, Settings, UpstreamConfig};
use crate::transport::deflate::LinkCodec;
use crate::transport::reassembly::{Fragment, Kind, Reassembler};
use crate::upstream::{connect_once, LinkError};

/// The connect timeout when `--timeout` is not given.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for the server's close reply after our close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// `wsgate tail` arguments.
#[derive(clap::Args, Debug, Default)]
pub struct TailArgs {
    /// The feed's ws:// or wss:// URL; with --config, the upstream's name.
    pub target: Option<String>,
    /// A handshake header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A subprotocol to offer (repeatable).
    #[arg(long = "subprotocol", value_name = "P")]
    pub subprotocols: Vec<String>,
    /// `env` (the default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, NO_PROXY),
    /// `none`, or http://, socks5://, socks5h:// URL.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Extra PEM roots for wss:// (a private CA).
    #[arg(long, value_name = "F")]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (tests only).
    #[arg(long)]
    pub insecure: bool,
    /// A text frame to send after connecting (repeatable, in order).
    #[arg(long = "send", value_name = "TEXT")]
    pub send: Vec<String>,
    /// Exit 0 after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Give up (exit 1) when the session has not ended within this
    /// duration (e.g. `10s`); also bounds the connect.
    #[arg(long, value_name = "D", value_parser = config::parse_duration)]
    pub timeout: Option<Duration>,
    /// One JSON object per line: `ts`, `opcode`, `data`.
    #[arg(long)]
    pub json: bool,
    /// Also show the handshake headers (secrets `***`), pings, pongs and close codes.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Take the upstream named by the argument from this config file.
    #[arg(long, value_name = "FILE", conflicts_with = "gateway")]
    pub config: Option<PathBuf>,
    /// Follow a running gateway (its /ws), e.g. http://127.0.0.1:9750.
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,
    /// With --gateway: follow only this upstream (repeatable).
    #[arg(long = "upstream", value_name = "U", requires = "gateway")]
    pub upstreams: Vec<String>,
    /// With --gateway: follow only this topic (repeatable).
    #[arg(long = "topic", value_name = "T", requires = "gateway")]
    pub topics: Vec<String>,
    /// Send every text or binary message back unchanged instead of printing
    /// it (a debugging aid; the testee of scripts/conformance.sh). Pings,
    /// pongs and closes still show with -v; --count counts echoed messages.
    #[arg(long, conflicts_with = "gateway")]
    pub echo: bool,
}

/// How a session ended.
pub(super) enum End {
    /// Exit 0.
    Done,
    /// Exit 1 with this text.
    Failed(String),
}

/// Runs `wsgate tail`; returns the exit code.
pub fn run(args: TailArgs) -> u8 {
    let cfg = match upstream_for(&args) {
        Ok(cfg) => cfg,
        Err(usage) => {
            eprintln!("wsgate tail: {usage}");
            return 2;
        }
    };
    let level = if args.verbose { "warn,wsgate::upstream::trace=debug" } else { "error" };
    crate::telemetry::init_logging(&LogConfig { level: level.into(), ..LogConfig::default() });
    let end = actix_rt::System::new().block_on(session(Arc::new(cfg), args));
    match end {
        End::Done => 0,
        End::Failed(why) => {
            eprintln!("wsgate tail: {why}");
            1
        }
    }
}

/// The upstream config the session dials, or a usage error.
fn upstream_for(args: &TailArgs) -> Result<UpstreamConfig, String> {
    let mut cfg = match (&args.config, &args.gateway, &args.target) {
        (Some(file), None, Some(name)) => {
            let settings =
                config::load(&ConfigSource::File(file.clone())).map_err(|e| format!("invalid config: {e}"))?;
            let names: Vec<&str> = settings.upstreams.iter().map(|u| u.name.as_str()).collect();
            // With `urls`, tail dials the first endpoint.
            settings.upstreams.iter().find(|u| &u.name == name).map(|u| u.for_link(0)).ok_or_else(|| {
                format!("{}: no upstream named {name:?} (there are: {})", file.display(), names.join(", "))
            })?
        }
        (Some(_), None, None) => return Err("--config FILE needs the UPSTREAM name".into()),
        (None, Some(gateway), None) => UpstreamConfig::new("tail", gateway_url(gateway, args)?),
        (None, Some(_), Some(_)) => return Err("--gateway takes no URL argument (use --upstream and --topic)".into()),
        (None, None, Some(url)) => UpstreamConfig::new("tail", url.clone()),
        (None, None, None) => return Err("give a ws:// or wss:// URL, --config FILE UPSTREAM, or --gateway URL".into()),
        (Some(_), Some(_), _) => return Err("--config and --gateway exclude each other".into()),
    };
    for h in &args.headers {
        let (name, value) = h.split_once(':').ok_or_else(|| format!("-H {h:?}: expected 'Name: value'"))?;
        cfg.headers.insert(name.trim().to_string(), value.trim().to_string());
    }
    cfg.subprotocols.extend(args.subprotocols.iter().cloned());
    if let Some(p) = &args.proxy {
        cfg.proxy.url = p.clone();
    }
    if let Some(ca) = &args.ca_file {
        cfg.tls.ca_file = Some(ca.clone());
    }
    cfg.tls.insecure_skip_verify |= args.insecure;
    if let Some(t) = args.timeout {
        cfg.connect_timeout = config::Dur(t.min(CONNECT_TIMEOUT));
    }
    cfg.trace = args.verbose;
    let mut settings = Settings { upstreams: vec![cfg], ..Settings::default() };
    settings.share_redactor();
    config::validate(&settings).map_err(|(key, message)| {
        let key = key.strip_prefix("upstreams[0].").unwrap_or(&key).to_string();
        format!("{key}: {message}")
    })?;
    Ok(settings.upstreams.remove(0))
}

/// `--gateway http://host:port` -> `ws://host:port/ws?upstream=…&topic=…`.
fn gateway_url(gateway: &str, args: &TailArgs) -> Result<String, String> {
    let base = gateway.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_string()
    } else {
        return Err(format!("--gateway {gateway:?}: expected http://HOST:PORT"));
    };
    let ws = if ws.ends_with("/ws") { ws } else { format!("{ws}/ws") };
    let pairs: Vec<String> = args
        .upstreams
        .iter()
        .map(|u| format!("upstream={}", enc(u)))
        .chain(args.topics.iter().map(|t| format!("topic={}", enc(t))))
        .collect();
    Ok(if pairs.is_empty() { ws } else { format!("{ws}?{}", pairs.join("&")) })
}

fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Prints what arrives; the one place that writes stdout.
pub(super) struct Out {
    json: bool,
    verbose: bool,
    secrets: Vec<String>,
}

impl Out {
    /// A message (text as is, binary as hex). `false` when stdout is gone.
    fn message(&self, kind: Kind, data: &[u8]) -> bool {
        let (opcode, text) = match kind {
            Kind::Text => ("text", String::from_utf8_lossy(data).into_owned()),
            Kind::Binary => ("binary", hex(data)),
        };
        let line = if self.json { json!({"ts": now(), "opcode": opcode, "data": text}).to_string() } else { text };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    }

    /// With `-v`: a control frame (to stdout as JSON with `--json`, else to stderr).
    pub(super) fn control(&self, dir: &str, opcode: &str, data: &str, code: Option<u16>) {
        if !self.verbose {
            return;
        }
        let data = scrub(data, &self.secrets);
        if self.json {
            let mut v = json!({"ts": now(), "opcode": opcode, "data": data, "dir": dir});
            if let Some(c) = code {
                v["code"] = json!(c);
            }
            let _ = writeln!(std::io::stdout().lock(), "{v}");
        } else {
            let code = code.map(|c| format!(" {c}")).unwrap_or_default();
            eprintln!("{dir} {opcode}{code} {data}");
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(super) fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads stdin lines on a thread of its own; the channel ends at EOF.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Connects, sends what goes first, then dumps until the session ends.
async fn session(cfg: Arc<UpstreamConfig>, args: TailArgs) -> End {
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let connect = connect_once(Arc::clone(&cfg));
    let connected = match deadline {
        Some(d) => match tokio::time::timeout_at(d, connect).await {
            Ok(r) => r,
            Err(_) => {
                return End::Failed(format!("timeout: not connected within {:?}", args.timeout.unwrap_or_default()))
            }
        },
        None => connect.await,
    };
    let mut conn = match connected {
        Ok(c) => c,
        Err(e) => return End::Failed(failure(&e)),
    };
    let out = Out { json: args.json, verbose: args.verbose, secrets: conn.secrets.clone() };
    for text in conn.first.drain(..).chain(args.send.iter().cloned()) {
        if let Err(e) = conn.framed.send(Message::Text(ByteString::from(text))).await {
            return End::Failed(format!("tcp: sending failed: {e}"));
        }
    }
    if args.echo {
        let max = cfg.max_message_size.bytes();
        return super::echo::run(&mut conn.framed, max, &out, args.count, deadline).await;
    }
    let mut stdin = Some(stdin_lines());
    let mut reasm = Reassembler::new(cfg.max_message_size.bytes());
    let mut seen = 0u64;
    let far = tokio::time::Instant::now() + Duration::from_secs(60 * 60 * 24 * 365);
    let timer = tokio::time::sleep_until(deadline.unwrap_or(far));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            item = conn.framed.next() => {
                let frame = match item {
                    None => return End::Failed("tcp: connection closed by the server without a close frame".into()),
                    Some(Err(e)) => return End::Failed(format!("protocol: {e}")),
                    Some(Ok(f)) => f,
                };
                let frag = match frame {
                    Frame::Ping(p) => {
                        out.control("<", "ping", &hex(&p), None);
                        let _ = conn.framed.send(Message::Pong(p)).await;
                        continue;
                    }
                    Frame::Pong(p) => {
                        out.control("<", "pong", &hex(&p), None);
                        continue;
                    }
                    Frame::Close(reason) => {
                        let code = reason.as_ref().map(|r| u16::from(r.code));
                        let text = reason.as_ref().and_then(|r| r.description.clone()).unwrap_or_default();
                        out.control("<", "close", &text, code);
                        let _ = conn.framed.send(Message::Close(reason)).await;
                        let _ = conn.framed.close().await;
                        return match code {
                            Some(1000) => End::Done,
                            Some(c) => End::Failed(format!("closed: the server closed with code {c} {text}")),
                            None => End::Failed("closed: the server closed without a code".into()),
                        };
                    }
                    Frame::Text(b) => Fragment::Whole(Kind::Text, b),
                    Frame::Binary(b) => Fragment::Whole(Kind::Binary, b),
                    Frame::Continuation(actix_http::ws::Item::FirstText(b)) => Fragment::First(Kind::Text, b),
                    Frame::Continuation(actix_http::ws::Item::FirstBinary(b)) => Fragment::First(Kind::Binary, b),
                    Frame::Continuation(actix_http::ws::Item::Continue(b)) => Fragment::Continue(b),
                    Frame::Continuation(actix_http::ws::Item::Last(b)) => Fragment::Last(b),
                };
                match reasm.push(frag) {
                    Ok(None) => {}
                    Ok(Some(msg)) => {
                        if !out.message(msg.kind, &msg.data) {
                            return goodbye(&mut conn.framed, &out).await;
                        }
                        seen += 1;
                        if args.count.is_some_and(|n| seen >= n) {
                            return goodbye(&mut conn.framed, &out).await;
                        }
                    }
                    Err(e) => return End::Failed(format!("protocol: {e}")),
                }
            }
            line = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => match line {
                Some(text) => {
                    if let Err(e) = conn.framed.send(Message::Text(ByteString::from(text))).await {
                        return End::Failed(format!("tcp: sending failed: {e}"));
                    }
                }
                // stdin ended (or is /dev/null): keep dumping.
                None => stdin = None,
            },
            () = &mut timer => {
                return End::Failed(format!("timeout: the session did not end within {:?}", args.timeout.unwrap_or_default()));
            }
            _ = tokio::signal::ctrl_c() => return goodbye(&mut conn.framed, &out).await,
        }
    }
}

/// Closes with 1000 and waits briefly for the server's reply.
pub(super) async fn goodbye(framed: &mut actix_codec::Framed<awc::BoxedSocket, LinkCodec>, out: &Out) -> End {
    let bye = CloseReason { code: CloseCode::Normal, description: None };
    out.control(">", "close", "", Some(1000));
    if framed.send(Message::Close(Some(bye))).await.is_err() {
        return End::Done;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(f)) = framed.next().await {
            if matches!(f, Frame::Close(_)) {
                break;
            }
        }
    })
    .await;
    End::Done
}

/// `reason: text` of a failed connect.
fn failure(e: &LinkError) -> String {
    format!("{}: {e}", e.reason().code())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// --gateway URLs become the gateway's /ws with the filters as query.
    #[test]
    fn gateway_urls() {
        let mut args = TailArgs::default();
        assert_eq!(gateway_url("http://127.0.0.1:9750", &args).unwrap(), "ws://127.0.0.1:9750/ws");
        args.upstreams = vec!["btc usd".into()];
        args.topics = vec!["trade".into()];
        assert_eq!(
            gateway_url("https://gw.example/", &args).unwrap(),
            "wss://gw.example/ws?upstream=btc%20usd&topic=trade"
        );
        assert!(gateway_url("gw:1", &args).is_err());
    }

    /// Usage problems are named; a bad header or URL is a usage error.
    #[test]
    fn usage_errors() {
        let args = |target: Option<&str>| TailArgs { target: target.map(String::from), ..TailArgs::default() };
        assert!(upstream_for(&args(None)).unwrap_err().contains("URL"));
        assert!(upstream_for(&args(Some("http://x/"))).unwrap_err().contains("url"));
        let mut bad = args(Some("ws://x/"));
        bad.headers = vec!["NoColon".into()];
        assert!(upstream_for(&bad).unwrap_err().contains("Name: value"));
        let mut ok = args(Some("ws://x/"));
        ok.headers = vec!["X-A: b".into()];
        ok.proxy = Some("none".into());
        let cfg = upstream_for(&ok).unwrap();
        assert_eq!(cfg.headers.get("X-A").map(String::as_str), Some("b"));
    }
}
