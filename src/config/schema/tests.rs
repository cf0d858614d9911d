//! The schema's docs are the operator reference: every key says its
//! default (or that it is required or unset), and every default written in
//! a doc is the one serde really applies.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;

/// The schema sources, read as text.
const SOURCES: [(&str, &str); 7] = [
    ("continuity.rs", include_str!("continuity.rs")),
    ("cluster.rs", include_str!("cluster.rs")),
    ("reach.rs", include_str!("reach.rs")),
    ("mod.rs", include_str!("mod.rs")),
    ("integrity.rs", include_str!("integrity.rs")),
    ("upstream.rs", include_str!("upstream.rs")),
    ("sink.rs", include_str!("sink.rs")),
];

/// One documented key: the struct (or sink variant) it belongs to, its
/// name, its `///` text joined into one line, and its attributes.
#[derive(Debug)]
struct DocKey {
    /// The struct or sink variant, e.g. `ServerConfig`, `Stdout`.
    owner: String,
    /// The key, e.g. `listen`.
    field: String,
    /// The `///` lines, trimmed and joined with spaces.
    doc: String,
    /// The attribute lines between doc and field (`#[serde(skip)]`).
    attrs: String,
}

/// Every field in `source` that has a `///` doc, with the struct or enum
/// variant it sits in. Code in fn bodies is never preceded by docs, so it
/// is not mistaken for a field.
fn doc_keys(source: &str) -> Vec<DocKey> {
    let mut keys = Vec::new();
    let (mut owner, mut doc, mut attrs) = (String::new(), Vec::<&str>::new(), String::new());
    for line in source.lines().map(str::trim) {
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim());
            continue;
        }
        if line.starts_with("#[") {
            attrs.push_str(line);
            continue;
        }
        let decl = line.strip_prefix("pub struct ").or_else(|| line.strip_prefix("pub enum "));
        if let Some(name) = decl.and_then(|d| d.split_whitespace().next()) {
            owner = name.to_string();
        } else if let Some(name) =
            line.strip_suffix(" {").filter(|n| !doc.is_empty() && n.chars().all(char::is_alphanumeric))
        {
            owner = name.to_string(); // a sink variant with fields
        } else if let Some((field, _)) = line.strip_prefix("pub ").unwrap_or(line).split_once(": ") {
            if !doc.is_empty() && field.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.push(DocKey {
                    owner: owner.clone(),
                    field: field.into(),
                    doc: doc.join(" "),
                    attrs: attrs.clone(),
                });
            }
        }
        doc.clear();
        attrs.clear();
    }
    keys
}

/// The keys of `T` as serde fills them in from `text`, serialized back.
fn defaults<T: DeserializeOwned + Serialize>(text: &str) -> toml::Table {
    let value: T = toml::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    toml::Table::try_from(value).unwrap()
}

/// Every key's doc says its default, required or unset (sections point to their table).
#[test]
fn every_key_says_its_default() {
    let mut checked = 0;
    for (file, source) in SOURCES {
        for key in doc_keys(source) {
            if key.attrs.contains("serde(skip)") {
                continue; // not a key
            }
            let says = ["Default: `", "Default: unset.", "Required."].iter().any(|w| key.doc.contains(w))
                || key.doc.starts_with("`[");
            assert!(says, "{file}: {}.{} says no default: {:?}", key.owner, key.field, key.doc);
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} keys found: is the doc parser still right?");
}

/// Each `Default: `x`` in a doc is what serde fills in when the key is absent.
#[test]
fn written_defaults_are_the_real_ones() {
    let instances: BTreeMap<&str, toml::Table> = [
        ("Settings", defaults::<Settings>("")),
        ("ServerConfig", defaults::<ServerConfig>("")),
        ("LogConfig", defaults::<LogConfig>("")),
        ("SubscribersConfig", defaults::<SubscribersConfig>("")),
        ("UpstreamConfig", defaults::<UpstreamConfig>("name = \"a\"\nurl = \"wss://h/\"")),
        ("AuthConfig", defaults::<AuthConfig>("")),
        ("TlsConfig", defaults::<TlsConfig>("")),
        ("HeartbeatConfig", defaults::<HeartbeatConfig>("")),
        ("ReconnectConfig", defaults::<ReconnectConfig>("")),
        ("DecodeConfig", defaults::<DecodeConfig>("")),
        ("HandshakeStep", defaults::<HandshakeStep>("send = \"x\"")),
        ("SecretSpec", defaults::<SecretSpec>("")),
        ("TokenCommand", defaults::<TokenCommand>("command = [\"x\"]")),
        ("SequenceConfig", defaults::<SequenceConfig>("pointer = \"/s\"")),
        ("FreshnessConfig", defaults::<FreshnessConfig>("")),
        ("GovernorConfig", defaults::<GovernorConfig>("")),
        ("ProxyConfig", defaults::<ProxyConfig>("")),
        ("ClusterConfig", defaults::<ClusterConfig>("")),
        ("Stdout", defaults::<SinkConfig>("kind = \"stdout\"")),
        ("File", defaults::<SinkConfig>("kind = \"file\"\npath = \"/x\"")),
        ("WebhookConfig", defaults::<SinkConfig>("kind = \"webhook\"\nurl = \"https://h/\"")),
        ("NatsConfig", defaults::<SinkConfig>("kind = \"nats\"")),
        ("RedisConfig", defaults::<SinkConfig>("kind = \"redis\"")),
    ]
    .into_iter()
    .collect();
    let mut checked = 0;
    for (file, source) in SOURCES {
        for key in doc_keys(source) {
            let Some((_, rest)) = key.doc.split_once("Default: `") else { continue };
            let Some((written, _)) = rest.split_once('`') else { panic!("{file}: {}: unclosed `", key.field) };
            let instance = instances.get(key.owner.as_str()).unwrap_or_else(|| panic!("no instance for {}", key.owner));
            let real = instance.get(&key.field).map(ToString::to_string);
            assert_eq!(real.as_deref(), Some(written), "{file}: {}.{}", key.owner, key.field);
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} defaults checked");
}
