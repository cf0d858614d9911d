//! The `wsgate` command: CLI, config loading, logging, signals. Nothing else.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wsgate::config::{self, ConfigSource, DEFAULT_PATH};
use wsgate::subscriber::auth::{refuse_open, SubscriberSettings};

#[derive(Parser)]
#[command(name = "wsgate", version, about = "Keeps WebSocket feeds alive and fans them out to many subscribers.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The config file (.toml, .yaml, .yml or .json).
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Run a built-in simulated market feed and the gateway wired to it (no file, no network).
    Demo {
        /// Serve only the simulated feed, on 127.0.0.1:9751 (what the shipped config/wsgate.toml connects to).
        #[arg(long)]
        feed_only: bool,
    },
    /// Dump a feed (a URL, an upstream of a config file, or a running gateway); stdin lines are sent.
    Tail(Box<wsgate::cli::tail::TailArgs>),
    /// Validate the config, open every file it names, and print it, secrets redacted.
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
