//! Configuration (SPEC §3, §10a, §11): the `Settings` tree, typed and
//! `deny_unknown_fields`, with the defaults of the SPEC, loaded from
//! TOML/YAML/JSON plus `WSGATE__*` environment overrides, then validated.
//! Every error names the file and the key path, e.g.
//! `config/wsgate.toml: upstreams[1].heartbeat.interval: invalid duration "5 parsecs"`.
//!
//! One file per job:
//!
//! - `schema/`: the tree. Its `///` docs are the operator reference: what
//!   each key does, its unit and its default.
//! - `load`: file + environment -> [`Settings`], exact key paths in
//!   [`ConfigError`]s.
//! - `validate`: what serde cannot check: ranges, uniqueness, consistency.
//! - `redact`: what of a URL, a header or the whole tree may be shown.
//! - `secret`: secret values and where they come from (inline, env, file).
//! - `units`: durations and sizes as written in a config.
//! - `names`: the broker sinks' subject and stream name templates (`NameTemplate`).
//! - `template`: handshake message templates (SPEC §13).
//! - `files`: `wsgate check` opens every file the config names.
//!
//! Architecture invariant: config sits below every other module and knows
//! no network client; URL and header syntax is checked with the `http`
//! crate. Config is passed to constructors; nothing reads it from a
//! global. Everything public is re-exported here: paths are
//! `crate::config::Name`, whichever file `Name` lives in.

mod files;
mod load;
mod names;
pub mod proxy;
mod redact;
mod schema;
mod secret;
pub mod template;
mod units;
mod validate;
mod validate_links;

pub use files::check_files;
pub use load::{load, load_with_env, ConfigError, ConfigSource, DEFAULT_PATH, ENV_PREFIX, ENV_SEPARATOR};
pub use names::NameTemplate;
pub use redact::{redact_url, redact_webhook_url, scrub, Redactor, DEFAULT_REDACT_QUERY};
pub use schema::{
    AuthConfig, AuthKind, ClusterConfig, Compression, DecodeConfig, DecodeFormat, FreshnessConfig, GovernorConfig,
    HandshakeStep, HeartbeatConfig, InvalidPolicy, LogConfig, LogFormat, Matcher, NatsConfig, OnProblem, Overflow,
    ProxyConfig, ReconnectConfig, RedisConfig, Redundancy, Rotate, SecretSpec, SequenceConfig, ServerConfig, Settings,
    SinkConfig, SinkFormat, SubscribersConfig, TlsConfig, TokenCommand, UpstreamConfig, WebhookConfig,
};
pub use secret::{Secret, SecretError, SecretSource, REDACTED};
pub use units::{parse_duration, parse_size, Dur, Size};
pub use validate::validate;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;
