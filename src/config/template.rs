//! Message templates of handshake steps (SPEC §13): parsed once, when the
//! config is loaded (errors name the key), rendered at every connect by
//! `upstream::handshake`.
//!
//! `{{token}}`, `{{secret:NAME}}`, `{{unix_s}}`, `{{unix_ms}}`, `{{uuid}}`,
//! `{{hmac_sha256_hex:NAME:TEXT}}`, `{{hmac_sha256_base64:NAME:TEXT}}`,
//! where TEXT may hold the other placeholders.

/// How an HMAC is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lower-case hex.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// `{{token}}`.
    Token,
    /// `{{secret:NAME}}`.
    Secret(String),
    /// `{{unix_s}}`: seconds since the epoch.
    UnixS,
    /// `{{unix_ms}}`: milliseconds since the epoch.
    UnixMs,
    /// `{{uuid}}`: a random v4 UUID, a new one per occurrence.
    Uuid,
    /// `{{hmac_sha256_*:NAME:TEXT}}`: HMAC-SHA256 of TEXT keyed by secret NAME.
    Hmac {
        /// The secret that keys it.
        secret: String,
        /// What is signed.
        text: Template,
        /// How it is written.
        encoding: Encoding,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template(pub Vec<Piece>);

impl Template {
    /// Parses `text`; the error says which placeholder is wrong.
    pub fn parse(text: &str) -> Result<Template, String> {
        let (t, rest) = parse_until(text, false)?;
        debug_assert!(rest.is_empty());
        Ok(t)
    }

    /// True when `{{token}}` appears anywhere (signed text included).
    pub fn uses_token(&self) -> bool {
        self.0.iter().any(|p| match p {
            Piece::Token => true,
            Piece::Hmac { text, .. } => text.uses_token(),
            _ => false,
        })
    }

    /// Every secret name used, signed text and HMAC keys included.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for p in &self.0 {
            match p {
                Piece::Secret(n) => out.push(n.as_str()),
                Piece::Hmac { secret, text, .. } => {
                    out.push(secret.as_str());
                    out.extend(text.secrets());
                }
                _ => {}
            }
        }
        out
    }
}

/// Parses pieces until the end of `text` or, when `nested`, the `}}` that
/// closes the enclosing placeholder; returns the rest after it.
fn parse_until(mut text: &str, nested: bool) -> Result<(Template, &str), String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    loop {
        let open = text.find("{{");
        let close = if nested { text.find("}}") } else { None };
        match (open, close) {
            (_, Some(c)) if open.is_none_or(|o| c < o) => {
                literal.push_str(&text[..c]);
                push_text(&mut pieces, &mut literal);
                return Ok((Template(pieces), &text[c + 2..]));
            }
            (Some(o), _) => {
                literal.push_str(&text[..o]);
                push_text(&mut pieces, &mut literal);
                let (piece, rest) = parse_placeholder(&text[o + 2..])?;
                pieces.push(piece);
                text = rest;
            }
            (None, _) if nested => return Err("a placeholder is not closed with }}".into()),
            (None, _) => {
                literal.push_str(text);
                push_text(&mut pieces, &mut literal);
                return Ok((Template(pieces), ""));
            }
        }
    }
}

fn push_text(pieces: &mut Vec<Piece>, literal: &mut String) {
    if !literal.is_empty() {
        pieces.push(Piece::Text(std::mem::take(literal)));
    }
}

/// Parses one placeholder after its `{{`; returns it and the text after its `}}`.
fn parse_placeholder(text: &str) -> Result<(Piece, &str), String> {
    for (prefix, encoding) in [("hmac_sha256_hex:", Encoding::Hex), ("hmac_sha256_base64:", Encoding::Base64)] {
        if let Some(rest) = text.strip_prefix(prefix) {
            let (secret, rest) = rest
                .split_once(':')
                .ok_or_else(|| format!("{{{{{prefix}NAME:TEXT}}}} needs a secret name and a text"))?;
            check_name(secret)?;
            let (signed, rest) = parse_until(rest, true)?;
            return Ok((Piece::Hmac { secret: secret.to_string(), text: signed, encoding }, rest));
        }
    }
    let end = text.find("}}").ok_or("a placeholder is not closed with }}")?;
    let name = &text[..end];
    let piece = match name {
        "token" => Piece::Token,
        "unix_s" => Piece::UnixS,
        "unix_ms" => Piece::UnixMs,
        "uuid" => Piece::Uuid,
        _ => match name.strip_prefix("secret:") {
            Some(n) => {
                check_name(n)?;
                Piece::Secret(n.to_string())
            }
            None => {
                return Err(format!(
                    "unknown placeholder {{{{{name}}}}} (known: token, secret:NAME, unix_s, unix_ms, uuid, \
                     hmac_sha256_hex:NAME:TEXT, hmac_sha256_base64:NAME:TEXT)"
                ))
            }
        },
    };
    Ok((piece, &text[end + 2..]))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(format!("invalid secret name {name:?} (letters, digits, _ and -)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Piece {
        Piece::Text(s.into())
    }

    /// Every placeholder, nesting in signed text, and the errors.
    #[test]
    fn parse_table() {
        assert_eq!(Template::parse("plain").unwrap(), Template(vec![text("plain")]));
        assert_eq!(
            Template::parse(
                r#"{"t":"{{token}}","k":"{{secret:api_key}}","s":{{unix_s}},"m":{{unix_ms}},"u":"{{uuid}}"}"#
            )
            .unwrap(),
            Template(vec![
                text(r#"{"t":""#),
                Piece::Token,
                text(r#"","k":""#),
                Piece::Secret("api_key".into()),
                text(r#"","s":"#),
                Piece::UnixS,
                text(r#","m":"#),
                Piece::UnixMs,
                text(r#","u":""#),
                Piece::Uuid,
                text(r#""}"#),
            ])
        );
        let t = Template::parse("[{{hmac_sha256_base64:api_secret:{{unix_s}}GET/users/self/verify}}]").unwrap();
        assert_eq!(
            t,
            Template(vec![
                text("["),
                Piece::Hmac {
                    secret: "api_secret".into(),
                    text: Template(vec![Piece::UnixS, text("GET/users/self/verify")]),
                    encoding: Encoding::Base64,
                },
                text("]"),
            ])
        );
        assert_eq!(t.secrets(), ["api_secret"]);
        assert!(!t.uses_token());
        assert!(Template::parse("{{hmac_sha256_hex:k:{{token}}}}").unwrap().uses_token());
        for (bad, says) in [
            ("{{nope}}", "unknown placeholder {{nope}}"),
            ("{{token", "not closed"),
            ("{{secret:}}", "invalid secret name"),
            ("{{hmac_sha256_hex:k}}", "needs a secret name"),
            ("{{hmac_sha256_hex:k:abc", "not closed"),
            ("{{secret:a b}}", "invalid secret name"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
