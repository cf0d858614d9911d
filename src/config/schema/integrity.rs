//! Feed integrity (SPEC §13): `[[upstreams.handshake]]` steps,
//! `[upstreams.secrets]`, `[upstreams.token_command]`,
//! `[upstreams.sequence]`, `[upstreams.freshness]` and the top-level
//! `[reconnect_governor]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::upstream::Matcher;
use crate::config::secret::{Secret, SecretSource};
use crate::config::units::Dur;

/// One `[[upstreams.handshake]]` step, replayed at every (re)connect:
/// send a text (a template), then wait for a reply matching `expect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandshakeStep {
    /// The step's name, shown in `/status` `handshake_step` and in
    /// `last_error` when it fails; `step N` when unset. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The text sent; may hold `{{token}}`, `{{secret:NAME}}`, `{{unix_s}}`,
    /// `{{unix_ms}}`, `{{uuid}}`, `{{hmac_sha256_hex:NAME:TEXT}}`,
    /// `{{hmac_sha256_base64:NAME:TEXT}}`. Required.
    pub send: String,
    /// The reply that completes the step (not delivered); without it the
    /// next step follows at once. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Matcher>,
    /// A reply that fails the step (not delivered). Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<Matcher>,
    /// How long to wait for `expect`. Greater than 0. Default: `"5s"`.
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    /// A failure of this step is reason `auth` (else `handshake`).
    /// Default: `false`.
    #[serde(default)]
    pub auth: bool,
}

const fn default_step_timeout() -> Dur {
    Dur::secs(5)
}

impl HandshakeStep {
    /// The name to show: `name`, or `step N` (1-based).
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("step {}", index + 1))
    }
}

/// One named secret of `[upstreams.secrets]`: exactly one of `value`,
/// `env`, `file` (re-read at every connect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// The secret inline (prefer `env` or `file`). Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Secret>,
    /// Environment variable holding it. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// File holding it, trimmed, re-read at every connect. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl SecretSpec {
    /// Where the secret comes from.
    pub fn source(&self) -> SecretSource<'_> {
        SecretSource { inline: self.value.as_ref(), env: self.env.as_deref(), file: self.file.as_ref() }
    }
}

/// `[upstreams.token_command]`: `{{token}}` (and every auth kind's token)
/// is the trimmed stdout of this command; its output is never logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCommand {
    /// The program and its arguments (no shell). Required.
    pub command: Vec<String>,
    /// A run past this is killed and fails the connect (reason `auth`).
    /// Greater than 0. Default: `"5s"`.
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    /// Run again before a connect once this long has passed; `0s` = at
    /// every connect. Default: `"0s"`.
    #[serde(default)]
    pub refresh: Dur,
}

/// `sequence.on_gap` and `freshness.on_stale`: what a detected problem does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnProblem {
    /// Tell envelope subscribers (and count).
    #[default]
    Event,
    /// Also replace the link (a new link replays the handshake: a resync).
    Reconnect,
}

/// `[upstreams.sequence]`: gap and duplicate detection on a number the feed
/// carries in every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceConfig {
    /// JSON pointer of an integer that grows by 1 per message. Required.
    pub pointer: String,
    /// JSON pointer of a key with a sequence of its own (per symbol, per
    /// channel); `""` = one sequence. Default: `""`.
    #[serde(default)]
    pub key: String,
    /// `event` or `reconnect`. Default: `"event"`.
    #[serde(default)]
    pub on_gap: OnProblem,
    /// Keys tracked at most (later ones are not tracked). Default: `10000`.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// The feed numbers every connection from scratch: the first message of
    /// each key after a new link sets the expectation. Default: `false`.
    #[serde(default)]
    pub reset_on_reconnect: bool,
}

const fn default_max_keys() -> usize {
    10_000
}

/// `[upstreams.freshness]`: a quiet channel told apart from a dead link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreshnessConfig {
    /// Above zero: a watched topic with no message within this is stale.
    /// Default: `"0s"`.
    pub max_age: Dur,
    /// The watched topics (with metrics); `[]` = every topic seen, up to
    /// `max_topics` (events only). Default: `[]`.
    pub topics: Vec<String>,
    /// `event` or `reconnect`. Default: `"event"`.
    pub on_stale: OnProblem,
    /// With `topics = []`: topics watched at most (the first ones seen).
    /// Default: `1000`.
    pub max_topics: usize,
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        FreshnessConfig { max_age: Dur::secs(0), topics: Vec::new(), on_stale: OnProblem::Event, max_topics: 1000 }
    }
}

/// `[reconnect_governor]`: connects across all upstreams are rationed, so a
/// network blip never becomes a reconnect storm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernorConfig {
    /// Connects in progress at once (dial to upgrade). At least 1.
    /// Default: `16`.
    pub max_in_flight: usize,
    /// New connects per second per host:port, as `"N/s"` (a token bucket
    /// with a burst of N). Default: `"10/s"`.
    pub per_host_rate: String,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig { max_in_flight: 16, per_host_rate: "10/s".into() }
    }
}

impl GovernorConfig {
    /// `per_host_rate` as connects per second, if it parses (`"10/s"`, `"2.5/s"`, `"600/m"`).
    pub fn rate_per_second(&self) -> Option<f64> {
        let (n, unit) = self.per_host_rate.trim().split_once('/')?;
        let n: f64 = n.trim().parse().ok()?;
        let per = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            _ => return None,
        };
        (n.is_finite() && n > 0.0).then_some(n / per)
    }
}
