//! `wsgate demo`: a simulated market feed on loopback, and the gateway wired
//! to it, from a built-in config. No file, no network.
//!
//! The feed sends trades and book updates for a few symbols at market-like
//! rates (bursty, ~30 messages/s in all) and closes every link after a
//! minute with 1012 "service restart", so reconnects show in `/status`,
//! `/metrics` and the page. It uses actix-web-actors as a *server*, the only
//! place that does (the `/ws` session is written on actix-http's codec,
//! `subscriber/session.rs` and `outbound.rs`).

use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use anyhow::Context as _;

use crate::config::{self, ConfigSource, Settings};
use crate::model::close;

/// How long the feed keeps a link before it drops it.
const LINK_LIFETIME: Duration = Duration::from_secs(60);
/// Tick of the simulation.
const TICK: Duration = Duration::from_millis(50);

/// The symbols and their starting prices.
const SYMBOLS: [(&str, f64); 3] = [("BTCUSD", 97_000.0), ("ETHUSD", 3_400.0), ("SOLUSD", 190.0)];

/// The built-in config; `{feed}` is the feed's URL. Env overrides apply.
const DEMO_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:9750"
shutdown_timeout = "5s"

[subscribers]
# The demo stays open even when WSGATE__SERVER__LISTEN moves it off loopback.
anonymous = true

[[upstreams]]
name = "demo"
url = "{feed}"
on_connect = ['{"type":"subscribe","channels":["trades","book"]}']

[upstreams.heartbeat]
interval = "5s"
timeout = "10s"

[upstreams.reconnect]
initial = "500ms"
max = "5s"
"#;

/// A tiny deterministic PRNG (xorshift64*): the demo needs no crypto.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One simulated link.
struct FeedSession {
    rng: Rng,
    prices: Vec<f64>,
    subscribed: bool,
}

impl FeedSession {
    fn new() -> Self {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
        FeedSession { rng: Rng(seed), prices: SYMBOLS.iter().map(|(_, p)| *p).collect(), subscribed: false }
    }

    fn tick(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        for (i, (symbol, _)) in SYMBOLS.iter().enumerate() {
            // A random walk; trades come in bursts, the book moves more often.
            let step = (self.rng.next_f64() - 0.5) * self.prices[i] * 0.0004;
            self.prices[i] = (self.prices[i] + step).max(0.01);
            let price = self.prices[i];
            if self.rng.next_f64() < 0.25 {
                let burst = 1 + (self.rng.next_f64() * 3.0) as usize;
                for _ in 0..burst {
                    let side = if self.rng.next_f64() < 0.5 { "buy" } else { "sell" };
                    let size = (self.rng.next_f64() * 2.0).max(0.001);
                    ctx.text(format!(
                        r#"{{"type":"trade","symbol":"{symbol}","price":{price:.2},"size":{size:.4},"side":"{side}","ts":{ts}}}"#
                    ));
                }
            }
            if self.rng.next_f64() < 0.35 {
                let spread = price * 0.0001;
                let (bid, ask) = (price - spread, price + spread);
                let (bs, az) = (self.rng.next_f64() * 5.0, self.rng.next_f64() * 5.0);
                ctx.text(format!(
                    r#"{{"type":"book","symbol":"{symbol}","bids":[[{bid:.2},{bs:.3}]],"asks":[[{ask:.2},{az:.3}]],"ts":{ts}}}"#
                ));
            }
        }
    }
}

impl Actor for FeedSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, ctx| {
            if act.subscribed {
                act.tick(ctx);
            }
        });
        ctx.run_later(LINK_LIFETIME, |_, ctx| {
            ctx.close(Some(ws::CloseReason {
                code: close::RESTART.into(),
                description: Some("demo: the feed restarts every minute".into()),
            }));
            ctx.stop();
        });
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for FeedSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Text(t)) if t.contains("subscribe") => {
                self.subscribed = true;
                ctx.text(r#"{"type":"subscribed","channels":["trades","book"]}"#);
            }
            Ok(ws::Message::Close(_)) | Err(_) => ctx.stop(),
            _ => {}
        }
    }
}

async fn feed(req: HttpRequest, stream: web::Payload) -> Result<HttpResponse, actix_web::Error> {
    ws::start(FeedSession::new(), &req, stream)
}

/// Where `wsgate demo --feed-only` serves the feed: the address the shipped
/// `config/wsgate.toml` connects to.
pub const FEED_ONLY_ADDR: &str = "127.0.0.1:9751";

/// Starts the simulated feed on `bind` (`127.0.0.1:0` for a free port);
/// returns its URL.
pub fn start_feed(bind: &str) -> anyhow::Result<String> {
    let listener = TcpListener::bind(bind).with_context(|| format!("cannot bind the demo feed on {bind}"))?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(|| App::new().route("/feed", web::get().to(feed)))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
    actix_rt::spawn(server);
    Ok(format!("ws://{addr}/feed"))
}

/// The demo's settings for a feed at `feed_url`, with env overrides.
pub fn settings(feed_url: &str) -> Result<Settings, config::ConfigError> {
    config::load(&ConfigSource::BuiltIn(DEMO_CONFIG.replace("{feed}", feed_url)))
}

/// `wsgate demo`: the feed, the gateway, a banner; until SIGTERM/SIGINT.
pub async fn run() -> i32 {
    let feed_url = match start_feed("127.0.0.1:0") {
        Ok(u) => u,
        Err(e) => {
            eprintln!("wsgate demo: {e:#}");
            return 1;
        }
    };
    let settings = match settings(&feed_url) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wsgate: invalid config: {e}");
            return 2;
        }
    };
    crate::telemetry::init_logging(&settings.log);
    let listen = settings.server.listen.clone();
    let host = listen.replace("0.0.0.0", "127.0.0.1");
    eprintln!(
        "\nwsgate demo: a simulated market feed on {feed_url}, the gateway on http://{listen}\n\
         \n  status page   http://{host}/\
         \n  subscribe     websocat 'ws://{host}/ws?topic=trade'   (any WebSocket client)\
         \n  raw frames    websocat 'ws://{host}/ws?format=raw'\
         \n  status        curl http://{host}/status\
         \n  metrics       curl http://{host}/metrics\
         \n\nThe feed drops its link every minute, so you will see reconnects. Ctrl-C stops.\n"
    );
    crate::app::serve(settings, None).await
}

/// `wsgate demo --feed-only`: only the simulated feed, on
/// [`FEED_ONLY_ADDR`], until SIGTERM/SIGINT; `wsgate run` with the shipped
/// config connects to it.
pub async fn run_feed_only() -> i32 {
    let feed_url = match start_feed(FEED_ONLY_ADDR) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("wsgate demo: {e:#}");
            return 1;
        }
    };
    eprintln!(
        "wsgate demo --feed-only: a simulated market feed on {feed_url}\n\
         In another terminal: wsgate run   (the shipped config/wsgate.toml connects to it). Ctrl-C stops."
    );
    crate::app::wait_for_terminate().await;
    0
}
