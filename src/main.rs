//! The `wsgate` command: CLI, config loading, logging, signals. Nothing else.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wsgate::config::{self, ConfigSource, DEFAULT_PATH};
use wsgate::subscriber::auth::{refuse_open, SubscriberSettings};

/// How every config key can be set from the environment (the same for run and check).
macro_rules! env_rule {
    () => {
        "\
Environment overrides:
  Any config key can be set as WSGATE__SECTION__KEY (prefix WSGATE, sections
  and keys joined by double underscores); the environment wins over the file:
    WSGATE__SERVER__LISTEN=0.0.0.0:9000
    WSGATE__LOG__FORMAT=json
    WSGATE__SUBSCRIBERS__ALLOWED_ORIGINS=https://a.example,https://b.example
  [[upstreams]] and [[sinks]] live in the file only. Secrets are never
  needed inline: every secret key has *_env and *_file variants
  (WSGATE_SUBSCRIBER_TOKEN is read by the shipped configs' auth_token_env)."
    };
}

/// The exit codes of run and check.
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0  clean shutdown (run, demo) or a valid config (check)
  1  any other fatal error, including a shutdown that overran
     server.shutdown_timeout
  2  invalid config or usage; the message names the file, the key and what
     is wrong, e.g. config/wsgate.toml: upstreams[1].heartbeat.interval:
     invalid duration \"5 parsecs\""
    };
}

const MAIN_HELP: &str = concat!(
    "\
Examples:
  wsgate demo                                  a simulated feed and the gateway: open http://127.0.0.1:9750/
  wsgate demo --feed-only                      only the feed, on 127.0.0.1:9751 (what config/wsgate.toml connects to)
  wsgate check --config config/wsgate.toml     validate a config, print it with secrets as ***
  wsgate run --config config/wsgate.toml       the daemon; SIGHUP reloads, SIGTERM shuts down
  wsgate tail --gateway http://127.0.0.1:9750 --topic trade --count 3

Logs go to stderr (text or JSON, [log] format); data to subscribers on
ws://HOST:9750/ws, metrics on /metrics, health on /healthz and /readyz.
Each command has its own help: wsgate help run, wsgate run --help.

",
    "\
Environment overrides:
  Any config key as WSGATE__SECTION__KEY, e.g. WSGATE__SERVER__LISTEN=0.0.0.0:9000
  (see wsgate help run).

Exit codes: 0 clean shutdown; 1 any other fatal error; 2 invalid config or
usage (the message names the file and the key)."
);

const RUN_HELP: &str = concat!(
    "\
Examples:
  wsgate run                                   uses config/wsgate.toml
  wsgate run --config /etc/wsgate/wsgate.toml
  WSGATE__LOG__FORMAT=json WSGATE__SERVER__LISTEN=0.0.0.0:9750 \\
    WSGATE_SUBSCRIBER_TOKEN=s3cret wsgate run --config /etc/wsgate/wsgate.toml

Signals: SIGHUP reloads the config file (applied by difference; an invalid
file is rejected and the running config stays). SIGTERM or SIGINT: /readyz
turns 503, HTTP serves on for server.shutdown_delay, then subscribers and
upstreams are closed and sinks flushed within server.shutdown_timeout.

A listen address that is not loopback needs a subscriber token
(subscribers.auth_token, _env or _file), or subscribers.anonymous = true;
otherwise run refuses to start (exit 2).

",
    env_rule!(),
    "\n\n",
    exit_codes!()
);

const CHECK_HELP: &str = concat!(
    "\
Examples:
  wsgate check --config config/wsgate.toml            also opens every file it names
  wsgate check --no-files --config config/examples/okx.toml
  WSGATE__SERVER__LISTEN=0.0.0.0:9000 wsgate check    the override shows in the output

Prints the effective config (file plus environment, defaults filled in) as
TOML, every secret as ***; problems go to stderr, one line each, naming the
key.

",
    env_rule!(),
    "\n\n",
    exit_codes!()
);

const DEMO_HELP: &str = "\
Examples:
  wsgate demo                  then open http://127.0.0.1:9750/ (status page) or
                               subscribe: wsgate tail --gateway http://127.0.0.1:9750
  wsgate demo --feed-only      in one terminal, and in another:
  wsgate run                   (the shipped config/wsgate.toml connects to the demo feed)

Needs no file and no network: the simulated feed serves trades and book
updates for three symbols on loopback and drops its link every minute, so
reconnects show. Ctrl-C stops it.

Exit codes: 0 after Ctrl-C; 1 when a port is taken or another fatal error.";

const TAIL_HELP: &str = "\
Examples:
  wsgate tail --gateway http://127.0.0.1:9750 --topic trade --count 5   a running gateway's /ws
  wsgate tail --config my.toml btcusd          the upstream btcusd of my.toml, with its auth, proxy, TLS
  wsgate tail wss://feed.example.com/ws -H 'Authorization: Bearer T' --send '{\"op\":\"subscribe\"}' -v
  wsgate tail ws://127.0.0.1:9001/echo --echo   send every message back (see docs/conformance.md)

Lines typed on stdin are sent as text frames.

Exit codes: 0 on a close 1000 (either side) or after --count messages; 1
otherwise (a failed connect, another close, --timeout passed; the reason is
printed); 2 usage.";

#[derive(Parser)]
#[command(
    name = "wsgate",
    version,
    about = "Keeps WebSocket feeds alive and fans them out to many subscribers.",
    long_about = "Keeps WebSocket connections to upstream feeds alive whatever the network does \
(reconnecting with backoff, detecting dead and silent links, re-authenticating and \
re-subscribing) and fans every decoded message out to any number of subscribers: \
WebSocket clients on /ws, stdout, files and webhooks.",
    after_help = MAIN_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    #[command(after_help = RUN_HELP, long_about = "Run the daemon: connect every upstream of the config, \
serve /ws, /metrics, /healthz, /readyz, /status and the status page on server.listen, and deliver to \
the configured sinks until SIGTERM or SIGINT.")]
    Run {
        /// The config file (.toml, .yaml, .yml or .json).
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Run a built-in simulated market feed and the gateway wired to it (no file, no network).
    #[command(after_help = DEMO_HELP)]
    Demo {
        /// Serve only the simulated feed, on 127.0.0.1:9751 (what the shipped config/wsgate.toml connects to).
        #[arg(long)]
        feed_only: bool,
    },
    /// Dump a feed (a URL, an upstream of a config file, or a running gateway); stdin lines are sent.
    #[command(after_help = TAIL_HELP)]
    Tail(Box<wsgate::cli::tail::TailArgs>),
    /// Validate the config, open every file it names, and print it, secrets redacted.
    #[command(after_help = CHECK_HELP)]
    Check {
        /// The config file (.toml, .yaml, .yml or .json).
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Do not open the files the config names (certificates, tokens, sink
        /// directories): for CI on a machine that does not have them.
        #[arg(long)]
        no_files: bool,
    },
}

fn main() -> ExitCode {
    // Usage errors exit 2, --help and --version exit 0 (clap's convention).
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Tail(args) => ExitCode::from(wsgate::cli::tail::run(*args)),
        Command::Check { config, no_files } => {
            let source = ConfigSource::File(config);
            match config::load(&source) {
                Ok(settings) => match if no_files { Ok(()) } else { config::check_files(&settings, &source) } {
                    Ok(()) => {
                        print!("{}", settings.to_redacted_toml());
                        ExitCode::SUCCESS
                    }
                    Err(problems) => {
                        problems.iter().for_each(|e| eprintln!("wsgate: invalid config: {e}"));
                        ExitCode::from(2)
                    }
                },
                Err(e) => invalid(&e),
            }
        }
        Command::Demo { feed_only: false } => {
            ExitCode::from(actix_rt::System::new().block_on(wsgate::demo::run()) as u8)
        }
        Command::Demo { feed_only: true } => {
            ExitCode::from(actix_rt::System::new().block_on(wsgate::demo::run_feed_only()) as u8)
        }
        Command::Run { config } => match config::load(&ConfigSource::File(config.clone())) {
            Ok(settings) => {
                wsgate::telemetry::init_logging(&settings.log);
                // Fail closed (SPEC §11): never open /ws to the network without a token by accident.
                match SubscriberSettings::resolve(&settings.subscribers) {
                    Ok(resolved) => {
                        if let Some(refusal) = refuse_open(&settings, &resolved) {
                            eprintln!("wsgate: {refusal}");
                            return ExitCode::from(2);
                        }
                    }
                    Err(e) => {
                        eprintln!("wsgate: invalid config: {}: {e:#}", config.display());
                        return ExitCode::from(2);
                    }
                }
                let source = Some(ConfigSource::File(config));
                let code = actix_rt::System::new().block_on(wsgate::app::serve(settings, source));
                ExitCode::from(code as u8)
            }
            Err(e) => invalid(&e),
        },
    }
}

fn invalid(e: &config::ConfigError) -> ExitCode {
    eprintln!("wsgate: invalid config: {e}");
    ExitCode::from(2)
}
