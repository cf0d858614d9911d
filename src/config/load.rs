//! Loading: the file (TOML, YAML or JSON by extension) plus `WSGATE__*`
//! environment overrides, deserialized with exact key paths, then
//! validated. Every error is a [`ConfigError`] naming where the value came
//! from (the file, `<built-in>`, or `<environment> WSGATE__...`) and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{DeserializeOwned, Deserializer, Visitor};

use super::schema::{AuthKind, DecodeFormat, InvalidPolicy, LogFormat, Overflow, Settings, SinkFormat};
use super::validate::validate;

/// Environment prefix of overrides: `WSGATE__SERVER__LISTEN`.
pub const ENV_PREFIX: &str = "WSGATE";
/// Separator between prefix and key parts in override names.
pub const ENV_SEPARATOR: &str = "__";
/// Where `run` and `check` look when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/wsgate.toml";

// === errors ===

/// A configuration problem: which file, which key, what is wrong. Exit 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `<built-in>` for the demo, `<environment>` for overrides.
    pub source: String,
    /// The key path, e.g. `upstreams[1].heartbeat.interval`; empty for whole-file problems.
    pub key: String,
    /// What is wrong, never containing a secret value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// === loading ===

/// Where the text of a config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file; its extension picks the format.
    File(PathBuf),
    /// Text held in the binary (the demo), in TOML.
    BuiltIn(String),
}

impl ConfigSource {
    /// How errors name this source: the path, or `<built-in>`.
    pub(super) fn name(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::BuiltIn(_) => "<built-in>".into(),
        }
    }
}

/// Loads from `source` plus the process environment, then validates.
pub fn load(source: &ConfigSource) -> Result<Settings, ConfigError> {
    load_with_env(source, std::env::vars())
}

/// As [`load`], with the environment given explicitly (tests).
pub fn load_with_env(
    source: &ConfigSource,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let origin = source.name();
    let err = |key: &str, message: String| ConfigError { source: origin.clone(), key: key.into(), message };

    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let env: BTreeMap<String, String> = env.into_iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
    for name in env.keys() {
        let first = name[prefix.len()..].split(ENV_SEPARATOR).next().unwrap_or("").to_ascii_lowercase();
        if first == "upstreams" || first == "sinks" {
            return Err(ConfigError {
                source: "<environment>".into(),
                key: first,
                message: format!(
                    "{name}: arrays of tables (upstreams, sinks) cannot be overridden from the environment; edit the config file"
                ),
            });
        }
    }

    let file_source = match source {
        ConfigSource::File(path) => {
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => config::FileFormat::Toml,
                Some("yaml" | "yml") => config::FileFormat::Yaml,
                Some("json") => config::FileFormat::Json,
                _ => return Err(err("", "unknown file extension (expected .toml, .yaml, .yml or .json)".into())),
            };
            let text = std::fs::read_to_string(path).map_err(|e| err("", format!("cannot read: {e}")))?;
            config::File::from_str(&text, format)
        }
        ConfigSource::BuiltIn(text) => config::File::from_str(text.as_str(), config::FileFormat::Toml),
    };
    let environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .source(Some(env.clone().into_iter().collect()));
    let built = config::Config::builder()
        .add_source(file_source)
        .add_source(environment)
        .build()
        .map_err(|e| err("", format!("cannot parse: {e}")))?;
    let root: config::Value = built.try_deserialize().map_err(|e| err("", e.to_string()))?;
    let mut settings: Settings = serde_path_to_error::deserialize(root).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let (key, mut message) = friendly(key, e.into_inner().to_string());
        let env_name = env_name_for(&key);
        if env.contains_key(&env_name) {
            message.push_str(&format!(" (from environment variable {env_name})"));
        }
        ConfigError { source: origin.clone(), key, message }
    })?;
    settings.share_redactor();
    validate(&settings).map_err(|(key, message)| {
        let env_name = env_name_for(&key);
        let source = if env.contains_key(&env_name) { format!("<environment> {env_name}") } else { origin.clone() };
        ConfigError { source, key, message }
    })?;
    Ok(settings)
}

/// `server.listen` -> `WSGATE__SERVER__LISTEN`
fn env_name_for(key: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    for part in key.split('.') {
        name.push_str(ENV_SEPARATOR);
        name.push_str(&part.to_ascii_uppercase());
    }
    name
}

// === the config crate's messages, reworded ===

/// Rewords the three kinds of config crate message that need it, given the
/// key path serde_path_to_error found; every other message passes as is.
///
/// - The config crate appends its own copy of the key (`` for key `log.format` ``);
///   the key is named separately, so that is cut.
/// - `enum LogFormat does not have variant constructor xml` says neither
///   what the choices are nor the value as written: it becomes
///   `unknown variant "xml" (expected one of: text, json)`.
/// - `missing configuration field "upstreams[0]url"` names the field glued
///   to its parent: the key becomes `upstreams[0].url`, the message
///   `missing required key`.
fn friendly(key: String, message: String) -> (String, String) {
    let message = match message.find(" for key `") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    if let Some(field) = message.strip_prefix("missing configuration field ") {
        let field = field.trim_matches('"');
        let field = field.rsplit([']', '.']).next().unwrap_or(field);
        let key = if key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
        return (key, "missing required key".into());
    }
    let Some(rest) = message.strip_prefix("enum ") else { return (key, message) };
    let Some((name, value)) = rest.split_once(" does not have variant constructor ") else { return (key, message) };
    let message = match SCHEMA_ENUMS.iter().find_map(|choices| choices().filter(|(n, _)| *n == name)) {
        Some((_, variants)) => format!("unknown variant {value:?} (expected one of: {})", variants.join(", ")),
        None => format!("unknown variant {value:?}"),
    };
    (key, message)
}

/// Name and variants (as written in a file) of a schema enum.
type Choices = Option<(&'static str, &'static [&'static str])>;

/// Every unit enum of the schema. Only the list of enums is kept by hand
/// (a test compares it with the schema's source); their variant names come
/// from serde's derive, so a new variant is listed without a change here.
/// `SinkConfig` is absent: it is internally tagged, serde reads it without
/// the config crate's enum path, and serde's own message lists the kinds.
const SCHEMA_ENUMS: &[fn() -> Choices] = &[
    enum_choices::<LogFormat>,
    enum_choices::<Overflow>,
    enum_choices::<AuthKind>,
    enum_choices::<DecodeFormat>,
    enum_choices::<InvalidPolicy>,
    enum_choices::<SinkFormat>,
];

/// Asks `T`'s derived `Deserialize` for its name and variant names: it
/// calls `deserialize_enum` with both, which [`EnumProbe`] records.
fn enum_choices<T: DeserializeOwned>() -> Choices {
    match T::deserialize(EnumProbe) {
        Err(ProbeError(found)) => found,
        Ok(_) => None,
    }
}

/// A deserializer with no data: it fails every request, carrying what
/// `deserialize_enum` was told.
struct EnumProbe;

/// The failure of [`EnumProbe`]: the enum's name and variants, if asked.
#[derive(Debug)]
struct ProbeError(
    /// What `deserialize_enum` was told, if it was called.
    Choices,
);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("enum probe")
    }
}

impl std::error::Error for ProbeError {}

impl serde::de::Error for ProbeError {
    fn custom<T: fmt::Display>(_: T) -> Self {
        ProbeError(None)
    }
}

impl<'de> Deserializer<'de> for EnumProbe {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeError> {
        Err(ProbeError(None))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeError> {
        Err(ProbeError(Some((name, variants))))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown enum value lists the choices serde's derive knows, as written in a file.
    #[test]
    fn unknown_variant_lists_the_choices() {
        let cases = [
            ("LogFormat", "text, json"),
            ("Overflow", "drop_oldest, drop_newest, disconnect, conflate, block"),
            ("AuthKind", "none, bearer, basic, header, query, message"),
            ("DecodeFormat", "json, text, binary"),
            ("InvalidPolicy", "drop, pass"),
        ];
        for (name, choices) in cases {
            let said = format!("enum {name} does not have variant constructor xml for key `a.b`");
            let (key, message) = friendly("a.b".into(), said);
            assert_eq!(key, "a.b");
            assert_eq!(message, format!("unknown variant \"xml\" (expected one of: {choices})"));
        }
        let (_, message) = friendly("x".into(), "enum Nope does not have variant constructor y".into());
        assert_eq!(message, "unknown variant \"y\"");
    }

    /// A missing field is named as a key; other messages only lose the config crate's key copy.
    #[test]
    fn missing_field_and_other_messages() {
        let said = "missing configuration field \"upstreams[0]url\"".to_string();
        assert_eq!(friendly("upstreams[0]".into(), said), ("upstreams[0].url".into(), "missing required key".into()));
        let said = "missing configuration field \"url\"".to_string();
        assert_eq!(friendly(String::new(), said), ("url".into(), "missing required key".into()));
        let said = "invalid type: string \"x\", expected an integer for key `subscribers.queue_capacity`";
        let (key, message) = friendly("subscribers.queue_capacity".into(), said.into());
        assert_eq!(key, "subscribers.queue_capacity");
        assert_eq!(message, "invalid type: string \"x\", expected an integer");
    }

    /// Every enum in the schema's source is in `SCHEMA_ENUMS` (or is the tagged `SinkConfig`).
    #[test]
    fn every_schema_enum_is_covered() {
        let sources =
            [include_str!("schema/mod.rs"), include_str!("schema/upstream.rs"), include_str!("schema/sink.rs")];
        let mut declared: Vec<&str> = sources
            .iter()
            .flat_map(|s| s.lines())
            .filter_map(|l| l.trim().strip_prefix("pub enum "))
            .filter_map(|rest| rest.split_whitespace().next())
            .filter(|name| *name != "SinkConfig")
            .collect();
        let mut covered: Vec<&str> = SCHEMA_ENUMS.iter().filter_map(|choices| choices().map(|(n, _)| n)).collect();
        declared.sort_unstable();
        covered.sort_unstable();
        assert_eq!(declared, covered, "add the new enum to SCHEMA_ENUMS in config/load.rs");
        assert_eq!(enum_choices::<super::super::SinkConfig>(), None, "SinkConfig is tagged, not a config-crate enum");
    }
}
