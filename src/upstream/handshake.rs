//! Handshake steps (SPEC §13): the plan of one upstream (its
//! `[[upstreams.handshake]]`, or the legacy `auth.kind = "message"` and
//! `on_connect` as one step each), and the rendering of a step's message
//! from its template with one clock reading per step.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::LinkError;
use crate::config::template::{Encoding, Piece, Template};
use crate::config::{AuthKind, Matcher, Secret, UpstreamConfig};

/// What a step sends.
#[derive(Debug, Clone)]
enum Text {
    /// A §13 template, parsed once.
    Template(Template),
    /// The legacy auth message: only `{{token}}` is replaced (JSON-escaped).
    Legacy(String),
    /// An `on_connect` text, sent as is.
    Plain(String),
}

/// One step of the plan.
#[derive(Debug, Clone)]
pub struct Step {
    /// Shown in `/status` `handshake_step` and in `last_error`.
    pub label: String,
    /// What it sends.
    text: Text,
    /// The reply that completes it; `None`: the next step follows at once.
    pub expect: Option<Matcher>,
    /// A reply that fails it.
    pub fail: Option<Matcher>,
    /// How long `expect` may take.
    pub timeout: Duration,
    /// A failure is reason `auth` (else `handshake`).
    pub auth: bool,
}

impl Step {
    /// The error for this step failing with `why`.
    pub fn error(&self, why: &str) -> LinkError {
        let text = format!("step {:?}: {why}", self.label);
        if self.auth {
            LinkError::Auth(text)
        } else {
            LinkError::Handshake(text)
        }
    }
}

/// The steps of one upstream, built once from its config.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// In order.
    pub steps: Vec<Step>,
    /// Replies matching no step's `expect`/`fail` are data (§13 steps), or
    /// are dropped (the legacy auth message, §10a).
    pub deliver_unmatched: bool,
}

impl Plan {
    /// The plan of `cfg`. Templates were checked at load; a template that
    /// does not parse here (impossible after validation) sends nothing.
    pub fn new(cfg: &UpstreamConfig) -> Plan {
        if !cfg.handshake.is_empty() {
            let steps = cfg
                .handshake
                .iter()
                .enumerate()
                .map(|(i, s)| Step {
                    label: s.label(i),
                    text: Text::Template(Template::parse(&s.send).unwrap_or_default()),
                    expect: s.expect.clone(),
                    fail: s.fail.clone(),
                    timeout: s.timeout.get(),
                    auth: s.auth,
                })
                .collect();
            return Plan { steps, deliver_unmatched: true };
        }
        let mut steps = Vec::new();
        if cfg.auth.kind == AuthKind::Message {
            steps.push(Step {
                label: "auth".into(),
                text: Text::Legacy(cfg.auth.message.clone().unwrap_or_default()),
                // Success is required for auth kind message (validated).
                expect: cfg.auth.success.clone(),
                fail: cfg.auth.failure.clone(),
                timeout: cfg.auth.timeout.get(),
                auth: true,
            });
        }
        for (i, text) in cfg.on_connect.iter().enumerate() {
            steps.push(Step {
                label: format!("on_connect[{i}]"),
                text: Text::Plain(text.clone()),
                expect: None,
                fail: None,
                timeout: Duration::ZERO,
                auth: false,
            });
        }
        Plan { steps, deliver_unmatched: false }
    }

    /// For the lifecycle: which steps wait for a reply.
    pub fn expects(&self) -> Vec<bool> {
        self.steps.iter().map(|s| s.expect.is_some()).collect()
    }
}

/// The values a step's template may use.
pub struct Values<'a> {
    /// `{{token}}`.
    pub token: Option<&'a Secret>,
    /// `{{secret:NAME}}` and HMAC keys.
    pub secrets: &'a HashMap<String, Secret>,
}

impl Step {
    /// The text to send, read at `now` (one clock reading for the whole
    /// step), and the secret values it holds (for trace redaction).
    pub fn render(&self, values: &Values<'_>, now: SystemTime) -> Result<(String, Vec<String>), LinkError> {
        let mut shown = Vec::new();
        let text = match &self.text {
            Text::Plain(t) => t.clone(),
            Text::Legacy(t) => {
                let token = values.token.map(|t| json_escape(t.expose())).unwrap_or_default();
                if !token.is_empty() {
                    shown.push(token.clone());
                }
                t.replace("{{token}}", &token)
            }
            Text::Template(t) => render(t, values, now, true, &mut shown).map_err(|e| self.error(&e))?,
        };
        Ok((text, shown))
    }
}

/// Renders `t`; `escape` JSON-escapes inserted secrets (the message is JSON
/// text), signed text is rendered raw.
fn render(
    t: &Template,
    values: &Values<'_>,
    now: SystemTime,
    escape: bool,
    shown: &mut Vec<String>,
) -> Result<String, String> {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = String::new();
    let secret = |value: &str, shown: &mut Vec<String>| {
        let v = if escape { json_escape(value) } else { value.to_string() };
        shown.push(v.clone());
        v
    };
    for piece in &t.0 {
        match piece {
            Piece::Text(s) => out.push_str(s),
            Piece::Token => {
                let token = values.token.ok_or("{{token}} has no token")?;
                out.push_str(&secret(token.expose(), shown));
            }
            Piece::Secret(name) => {
                let value = values.secrets.get(name).ok_or_else(|| format!("unknown secret {name:?}"))?;
                out.push_str(&secret(value.expose(), shown));
            }
            Piece::UnixS => out.push_str(&since.as_secs().to_string()),
            Piece::UnixMs => out.push_str(&since.as_millis().to_string()),
            Piece::Uuid => out.push_str(&uuid_v4()),
            Piece::Hmac { secret: name, text, encoding } => {
                let key = values.secrets.get(name).ok_or_else(|| format!("unknown secret {name:?}"))?;
                let signed = render(text, values, now, false, &mut Vec::new())?;
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).map_err(|_| "unusable HMAC key")?;
                mac.update(signed.as_bytes());
                let digest = mac.finalize().into_bytes();
                match encoding {
                    Encoding::Hex => out.push_str(&digest.iter().map(|b| format!("{b:02x}")).collect::<String>()),
                    Encoding::Base64 => out.push_str(&base64::engine::general_purpose::STANDARD.encode(digest)),
                }
            }
        }
    }
    Ok(out)
}

/// A random (version 4) UUID.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// JSON-escapes `s` for use inside a JSON string of a message template.
pub fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, HandshakeStep};

    fn step(send: &str) -> Step {
        let mut cfg = UpstreamConfig::new("a", "ws://h/");
        cfg.handshake.push(HandshakeStep {
            name: Some("login".into()),
            send: send.into(),
            expect: None,
            fail: None,
            timeout: Dur::secs(5),
            auth: true,
        });
        Plan::new(&cfg).steps.remove(0)
    }

    /// Every placeholder renders; one clock reading per step; HMACs match
    /// published test vectors; secrets are listed for redaction.
    #[test]
    fn render_table() {
        let secrets: HashMap<String, Secret> =
            [("key".to_string(), Secret::new("Jefe")), ("k\"q".to_string(), Secret::new("x"))].into();
        let token = Secret::new("t\"ok");
        let values = Values { token: Some(&token), secrets: &secrets };
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let (text, shown) = step(r#"{"t":"{{token}}","s":{{unix_s}},"m":{{unix_ms}},"k":"{{secret:key}}"}"#)
            .render(&values, now)
            .unwrap();
        assert_eq!(text, r#"{"t":"t\"ok","s":1700000000,"m":1700000000123,"k":"Jefe"}"#);
        assert_eq!(shown, [r#"t\"ok"#, "Jefe"]);
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let (hex, _) = step("{{hmac_sha256_hex:key:what do ya want for nothing?}}").render(&values, now).unwrap();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        let (b64, _) = step("{{hmac_sha256_base64:key:what do ya want for nothing?}}").render(&values, now).unwrap();
        assert_eq!(b64, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
        // Signed text uses the same clock reading as the message.
        let (a, _) = step("{{unix_ms}}|{{hmac_sha256_hex:key:{{unix_ms}}}}").render(&values, now).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000123");
        let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a, format!("1700000000123|{want}"));
        let (u, _) = step("{{uuid}} {{uuid}}").render(&values, now).unwrap();
        let (u1, u2) = u.split_once(' ').unwrap();
        assert_ne!(u1, u2, "a new uuid per occurrence");
        assert_eq!(u1.len(), 36);
        assert_eq!(&u1[14..15], "4");
        let e = step("{{token}}").render(&Values { token: None, secrets: &secrets }, now).unwrap_err();
        assert!(e.to_string().contains("step \"login\""), "{e}");
    }

    /// The legacy form: auth message then on_connect, one step each.
    #[test]
    fn legacy_plan() {
        let mut cfg = UpstreamConfig::new("a", "ws://h/");
        cfg.on_connect = vec!["sub1".into(), "sub2".into()];
        let plan = Plan::new(&cfg);
        assert_eq!(plan.expects(), [false, false]);
        assert!(!plan.deliver_unmatched);
        cfg.auth.kind = AuthKind::Message;
        cfg.auth.message = Some(r#"{"token":"{{token}}"}"#.into());
        cfg.auth.success = Some(Matcher { pointer: "/ok".into(), equals: true.into() });
        let plan = Plan::new(&cfg);
        assert_eq!(plan.expects(), [true, false, false]);
        let token = Secret::new("abc");
        let (text, _) =
            plan.steps[0].render(&Values { token: Some(&token), secrets: &HashMap::new() }, SystemTime::now()).unwrap();
        assert_eq!(text, r#"{"token":"abc"}"#);
        assert!(matches!(plan.steps[0].error("x"), LinkError::Auth(_)));
    }
}
