//! Validation: what serde cannot check. Ranges, uniqueness, consistency
//! between keys, URL and header syntax. Each problem is `(key, message)`;
//! [`load`](super::load()) adds where the value came from.
//!
//! URLs and headers are checked with the `http` crate, the types the
//! upstream client parses them into later, so a config that passes here
//! cannot fail there on syntax; config itself knows no network client.

use std::collections::HashSet;
use std::net::SocketAddr;

use http::header::{HeaderName, HeaderValue};
use http::Uri;

use super::names::NameTemplate;
use super::redact::redact_webhook_url;
use super::schema::{
    AuthConfig, AuthKind, NatsConfig, Overflow, RedisConfig, Settings, SinkConfig, TlsConfig, UpstreamConfig,
};
use super::template::Template;

/// One problem: the key path and what is wrong with it.
type Invalid = (String, String);

fn bad(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

/// Checks what serde cannot: ranges, uniqueness, consistency between keys.
/// Returns the first problem as (key path, message).
pub fn validate(s: &Settings) -> Result<(), Invalid> {
    s.server.listen.parse::<SocketAddr>().map_err(|_| {
        bad("server.listen", format!("invalid address {:?} (expected e.g. \"0.0.0.0:9750\")", s.server.listen))
    })?;
    if s.server.shutdown_timeout.is_zero() {
        return Err(bad("server.shutdown_timeout", "must be greater than 0s"));
    }
    tracing_subscriber::EnvFilter::try_new(&s.log.level)
        .map_err(|e| bad("log.level", format!("invalid filter {:?}: {e}", s.log.level)))?;
    for (i, name) in s.log.redact_query.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(bad(format!("log.redact_query[{i}]"), "must not be empty"));
        }
    }

    let gov = &s.reconnect_governor;
    if gov.max_in_flight == 0 {
        return Err(bad("reconnect_governor.max_in_flight", "must be at least 1"));
    }
    if gov.rate_per_second().is_none() {
        return Err(bad(
            "reconnect_governor.per_host_rate",
            format!("invalid rate {:?} (expected e.g. \"10/s\" or \"300/m\")", gov.per_host_rate),
        ));
    }

    let sub = &s.subscribers;
    if sub.max_connections == 0 {
        return Err(bad("subscribers.max_connections", "must be at least 1"));
    }
    if sub.queue_capacity == 0 {
        return Err(bad("subscribers.queue_capacity", "must be at least 1"));
    }
    if sub.queue_bytes.0 == 0 {
        return Err(bad("subscribers.queue_bytes", "must be at least 1 byte"));
    }
    if sub.max_filters == 0 {
        return Err(bad("subscribers.max_filters", "must be at least 1"));
    }
    if sub.stall_timeout.is_zero() {
        return Err(bad("subscribers.stall_timeout", "must be greater than 0s"));
    }
    if sub.overflow == Overflow::Block {
        return Err(bad(
            "subscribers.overflow",
            "block is for sinks only ([[sinks]] overflow): a /ws subscriber cannot hold the upstreams back",
        ));
    }
    validate_pointer(&sub.conflate_key).map_err(|m| bad("subscribers.conflate_key", m))?;
    if sub.history > 0 && sub.history_bytes.0 == 0 {
        return Err(bad("subscribers.history_bytes", "must be at least 1 byte when history > 0"));
    }
    if sub.token_source().count() > 1 {
        return Err(bad("subscribers.auth_token", "set only one of auth_token, auth_token_env, auth_token_file"));
    }
    for (i, origin) in sub.allowed_origins.iter().enumerate() {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(bad(
                format!("subscribers.allowed_origins[{i}]"),
                format!("invalid origin {origin:?} (expected e.g. \"https://app.example.com\")"),
            ));
        }
    }

    let mut names = HashSet::new();
    for (i, u) in s.upstreams.iter().enumerate() {
        validate_upstream(u).map_err(|(k, m)| (format!("upstreams[{i}].{k}"), m))?;
        if !names.insert(u.name.as_str()) {
            return Err(bad(format!("upstreams[{i}].name"), format!("duplicate upstream name {:?}", u.name)));
        }
    }
    for (i, sink) in s.sinks.iter().enumerate() {
        validate_sink(sink, &names).map_err(|(k, m)| (format!("sinks[{i}].{k}"), m))?;
    }
    s.cluster.check().map_err(|(k, m)| (format!("cluster.{k}"), m))?;
    Ok(())
}

fn validate_upstream(u: &UpstreamConfig) -> Result<(), Invalid> {
    if u.name.is_empty()
        || u.name.len() > 64
        || !u.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(bad("name", format!("invalid name {:?} (1 to 64 characters of [a-z0-9_-])", u.name)));
    }
    let secure = super::validate_links::validate_links(u)?;
    for (name, value) in &u.headers {
        HeaderName::try_from(name.as_str()).map_err(|_| bad(format!("headers.{name}"), "invalid header name"))?;
        HeaderValue::try_from(value.as_str()).map_err(|_| bad(format!("headers.{name}"), "invalid header value"))?;
    }
    if u.connect_timeout.is_zero() {
        return Err(bad("connect_timeout", "must be greater than 0s"));
    }
    if u.max_message_size.0 == 0 {
        return Err(bad("max_message_size", "must be at least 1 byte"));
    }
    let token_used = validate_integrity(u)?;
    validate_auth(&u.auth, token_used || u.token_command.is_some()).map_err(|(k, m)| (format!("auth.{k}"), m))?;
    if u.close_timeout.is_zero() {
        return Err(bad("close_timeout", "must be greater than 0s"));
    }
    if let Some(origin) = &u.origin {
        HeaderValue::try_from(origin.as_str()).map_err(|_| bad("origin", "invalid header value"))?;
    }
    if let Some(agent) = &u.user_agent {
        HeaderValue::try_from(agent.as_str()).map_err(|_| bad("user_agent", "invalid header value"))?;
    }
    crate::config::proxy::check(&u.proxy).map_err(|(k, m)| (format!("proxy.{k}"), m))?;
    if !secure && u.tls != TlsConfig::default() {
        return Err(bad("tls", "tls settings apply to wss:// urls only (every url)"));
    }
    if u.tls.client_cert_file.is_some() != u.tls.client_key_file.is_some() {
        return Err(bad("tls.client_key_file", "client_cert_file and client_key_file go together"));
    }
    let hb = &u.heartbeat;
    if hb.interval.is_zero() {
        return Err(bad("heartbeat.interval", "must be greater than 0s"));
    }
    if hb.timeout.is_zero() {
        return Err(bad("heartbeat.timeout", "must be greater than 0s"));
    }
    let r = &u.reconnect;
    if r.initial.is_zero() {
        return Err(bad("reconnect.initial", "must be greater than 0s"));
    }
    if r.max < r.initial {
        return Err(bad("reconnect.max", format!("must be at least reconnect.initial ({})", r.initial)));
    }
    if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
        return Err(bad("reconnect.multiplier", format!("must be >= 1, got {}", r.multiplier)));
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        return Err(bad("reconnect.jitter", format!("must be in [0, 1], got {}", r.jitter)));
    }
    if r.stable_after.is_zero() {
        return Err(bad("reconnect.stable_after", "must be greater than 0s"));
    }
    if !(u.decode.topic.is_empty() || u.decode.topic.starts_with('/')) {
        return Err(bad(
            "decode.topic",
            format!("invalid JSON pointer {:?} (must be empty or start with /)", u.decode.topic),
        ));
    }
    Ok(())
}

/// SPEC §13: handshake steps (templates parsed here, once), secrets,
/// token_command, sequence, freshness. Returns whether a step uses `{{token}}`.
fn validate_integrity(u: &UpstreamConfig) -> Result<bool, Invalid> {
    if !u.handshake.is_empty() && (!u.on_connect.is_empty() || u.auth.kind == AuthKind::Message) {
        return Err(bad(
            "handshake",
            "[[upstreams.handshake]] excludes on_connect and auth.kind = \"message\" (write them as steps)",
        ));
    }
    for (name, spec) in &u.secrets {
        if spec.source().count() != 1 {
            return Err(bad(format!("secrets.{name}"), "set exactly one of value, env, file"));
        }
    }
    let has_token = u.auth.token_source().is_set() || u.token_command.is_some();
    let mut token_used = false;
    for (i, step) in u.handshake.iter().enumerate() {
        let key = |field: &str| format!("handshake[{i}].{field}");
        let t = Template::parse(&step.send).map_err(|e| bad(key("send"), e))?;
        if let Some(unknown) = t.secrets().into_iter().find(|n| !u.secrets.contains_key(*n)) {
            return Err(bad(key("send"), format!("unknown secret {unknown:?} (not in [upstreams.secrets])")));
        }
        if t.uses_token() && !has_token {
            return Err(bad(
                key("send"),
                "{{token}} needs one of auth.token, auth.token_env, auth.token_file or [upstreams.token_command]",
            ));
        }
        token_used |= t.uses_token();
        if step.timeout.is_zero() {
            return Err(bad(key("timeout"), "must be greater than 0s"));
        }
        for (field, m) in [("expect", &step.expect), ("fail", &step.fail)] {
            if m.as_ref().is_some_and(|m| !(m.pointer.is_empty() || m.pointer.starts_with('/'))) {
                return Err(bad(
                    key(&format!("{field}.pointer")),
                    "invalid JSON pointer (must be empty or start with /)",
                ));
            }
        }
    }
    if let Some(tc) = &u.token_command {
        if tc.command.first().is_none_or(|c| c.trim().is_empty()) {
            return Err(bad("token_command.command", "must name a program"));
        }
        if tc.timeout.is_zero() {
            return Err(bad("token_command.timeout", "must be greater than 0s"));
        }
    }
    if let Some(seq) = &u.sequence {
        if !seq.pointer.starts_with('/') {
            return Err(bad("sequence.pointer", "invalid JSON pointer (must start with /)"));
        }
        if !(seq.key.is_empty() || seq.key.starts_with('/')) {
            return Err(bad("sequence.key", "invalid JSON pointer (must be empty or start with /)"));
        }
        if seq.max_keys == 0 {
            return Err(bad("sequence.max_keys", "must be at least 1"));
        }
    }
    if u.freshness.max_topics == 0 {
        return Err(bad("freshness.max_topics", "must be at least 1"));
    }
    Ok(token_used)
}

fn validate_auth(a: &AuthConfig, token_used_elsewhere: bool) -> Result<(), Invalid> {
    let src = a.token_source();
    if src.count() > 1 {
        return Err(bad("token", "set only one of token, token_env, token_file"));
    }
    let needs_token = match a.kind {
        AuthKind::None => false,
        AuthKind::Bearer | AuthKind::Basic | AuthKind::Header | AuthKind::Query => true,
        AuthKind::Message => a.message.as_deref().is_some_and(|m| m.contains("{{token}}")),
    };
    if needs_token && !src.is_set() {
        return Err(bad(
            "token",
            format!("auth kind {:?} needs one of token, token_env, token_file", a.kind).to_lowercase(),
        ));
    }
    let only = |field: &str, present: bool, kind: AuthKind| -> Result<(), Invalid> {
        if present && a.kind != kind {
            return Err(bad(field, format!("only applies to auth kind {kind:?}").to_lowercase()));
        }
        if !present && a.kind == kind {
            return Err(bad(field, format!("required for auth kind {kind:?}").to_lowercase()));
        }
        Ok(())
    };
    if a.kind == AuthKind::None && src.is_set() && !token_used_elsewhere {
        return Err(bad("kind", "a token is configured but auth kind is none"));
    }
    only("username", a.username.is_some(), AuthKind::Basic)?;
    only("header_name", a.header_name.is_some(), AuthKind::Header)?;
    only("param", a.param.is_some(), AuthKind::Query)?;
    only("message", a.message.is_some(), AuthKind::Message)?;
    only("success", a.success.is_some(), AuthKind::Message)?;
    if a.failure.is_some() && a.kind != AuthKind::Message {
        return Err(bad("failure", "only applies to auth kind message"));
    }
    if let Some(h) = &a.header_name {
        HeaderName::try_from(h.as_str()).map_err(|_| bad("header_name", "invalid header name"))?;
    }
    for (field, m) in [("success", &a.success), ("failure", &a.failure)] {
        if let Some(m) = m {
            if !(m.pointer.is_empty() || m.pointer.starts_with('/')) {
                return Err(bad(format!("{field}.pointer"), "invalid JSON pointer (must be empty or start with /)"));
            }
        }
    }
    if a.timeout.is_zero() {
        return Err(bad("timeout", "must be greater than 0s"));
    }
    Ok(())
}

fn validate_sink(sink: &SinkConfig, upstreams: &HashSet<&str>) -> Result<(), Invalid> {
    let (ups, _) = sink.filters();
    for (i, u) in ups.iter().enumerate() {
        if !upstreams.contains(u.as_str()) {
            return Err(bad(format!("upstreams[{i}]"), format!("unknown upstream {u:?}")));
        }
    }
    if sink.queue_bytes().0 == 0 {
        return Err(bad("queue_bytes", "must be at least 1 byte"));
    }
    let (capacity, overflow, conflate_key) = sink.queue_policy();
    validate_pointer(conflate_key).map_err(|m| bad("conflate_key", m))?;
    if let SinkConfig::Stdout { .. } | SinkConfig::File { .. } = sink {
        validate_broker_queue(capacity, overflow)?;
    }
    match sink {
        SinkConfig::Stdout { .. } => {}
        SinkConfig::File { path, .. } => {
            if path.as_os_str().is_empty() {
                return Err(bad("path", "must not be empty"));
            }
        }
        SinkConfig::Webhook(w) => {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) || w.url.parse::<Uri>().is_err() {
                return Err(bad(
                    "url",
                    format!("invalid url {:?} (must start with http:// or https://)", redact_webhook_url(&w.url)),
                ));
            }
            if w.batch_size == 0 {
                return Err(bad("batch_size", "must be at least 1"));
            }
            if w.batch_timeout.is_zero() {
                return Err(bad("batch_timeout", "must be greater than 0s"));
            }
            if w.queue_capacity < w.batch_size {
                return Err(bad("queue_capacity", "must be at least batch_size"));
            }
            if !matches!(w.overflow, Overflow::DropOldest | Overflow::Block) {
                return Err(bad("overflow", "a webhook sink takes drop_oldest or block"));
            }
            if w.token_source().count() > 1 {
                return Err(bad("auth_token", "set only one of auth_token, auth_token_env, auth_token_file"));
            }
        }
        SinkConfig::Nats(n) => validate_nats(n)?,
        SinkConfig::Redis(r) => validate_redis(r)?,
    }
    Ok(())
}

/// A JSON pointer (RFC 6901): empty, or `/` then tokens.
fn validate_pointer(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(format!("invalid JSON pointer {p:?} (\"\" for the topic, or e.g. \"/symbol\")"))
    }
}

/// The queue keys the broker sinks share.
fn validate_broker_queue(queue_capacity: usize, overflow: Overflow) -> Result<(), Invalid> {
    if queue_capacity == 0 {
        return Err(bad("queue_capacity", "must be at least 1"));
    }
    if overflow == Overflow::Disconnect {
        return Err(bad("overflow", "a sink cannot be disconnected: use drop_oldest, drop_newest, conflate or block"));
    }
    Ok(())
}

fn validate_nats(n: &NatsConfig) -> Result<(), Invalid> {
    let shown = || super::redact::redact_url(&n.url, &super::redact::Redactor::default(), None);
    let scheme_ok = ["nats://", "tls://"].iter().any(|s| n.url.starts_with(s));
    if !scheme_ok || n.url.parse::<Uri>().is_err() {
        return Err(bad("url", format!("invalid url {:?} (must start with nats:// or tls://)", shown())));
    }
    if n.stream.is_empty() || !n.stream.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(bad("stream", format!("invalid stream name {:?} (letters, digits, _ and - only)", n.stream)));
    }
    let template = NameTemplate::parse(&n.subject).map_err(|m| bad("subject", m))?;
    let tokens_ok = n.subject.split('.').all(|t| !t.is_empty() && !t.contains([' ', '*', '>', '\t']));
    if !tokens_ok {
        return Err(bad(
            "subject",
            format!("invalid subject {:?} (dot-separated tokens, no spaces, * or >)", n.subject),
        ));
    }
    if template.stream_subjects().is_none() {
        return Err(bad(
            "subject",
            format!("{:?} must start with a literal token, as in \"wsgate.{{upstream}}.{{topic}}\"", n.subject),
        ));
    }
    if n.max_in_flight == 0 {
        return Err(bad("max_in_flight", "must be at least 1"));
    }
    validate_broker_queue(n.queue_capacity, n.overflow)?;
    if n.token_source().count() > 1 {
        return Err(bad("token", "set only one of token, token_env, token_file"));
    }
    if n.password_source().count() > 1 {
        return Err(bad("password", "set only one of password, password_env, password_file"));
    }
    if n.username.is_some() != n.password_source().is_set() {
        return Err(bad("username", "username and a password (password, password_env or password_file) go together"));
    }
    let methods = usize::from(n.creds_file.is_some())
        + usize::from(n.token_source().is_set())
        + usize::from(n.username.is_some());
    if methods > 1 {
        return Err(bad("creds_file", "use one of creds_file, token or username + password"));
    }
    Ok(())
}

fn validate_redis(r: &RedisConfig) -> Result<(), Invalid> {
    let shown = || super::redact::redact_url(&r.url, &super::redact::Redactor::default(), None);
    if !r.url.starts_with("redis://") || r.url.parse::<Uri>().is_err() {
        return Err(bad("url", format!("invalid url {:?} (must start with redis://)", shown())));
    }
    NameTemplate::parse(&r.stream).map_err(|m| bad("stream", m))?;
    if r.stream.is_empty() {
        return Err(bad("stream", "must not be empty"));
    }
    if r.maxlen == 0 {
        return Err(bad("maxlen", "must be at least 1"));
    }
    validate_broker_queue(r.queue_capacity, r.overflow)?;
    if r.password_source().count() > 1 {
        return Err(bad("password", "set only one of password, password_env, password_file"));
    }
    Ok(())
}
