//! Templates of broker names (SPEC §15): the nats sink's `subject`, the
//! redis sink's `stream`. `{upstream}` and `{topic}` are replaced by a
//! message's values; in a NATS subject each value is sanitised to one
//! token, and a stream created for the template binds its literal prefix.

/// A parsed `subject` or `stream` template: literal text and the
/// `{upstream}` / `{topic}` placeholders, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    /// The pieces, in order.
    parts: Vec<Part>,
}

/// One piece of a [`NameTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied as it is.
    Literal(String),
    /// The message's upstream name.
    Upstream,
    /// The message's topic.
    Topic,
}

impl NameTemplate {
    /// Parses `text`; an unknown or unclosed placeholder is an error
    /// naming it.
    pub fn parse(text: &str) -> Result<NameTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| format!("unclosed {{ in {text:?}"))?;
            parts.push(match &after[..close] {
                "upstream" => Part::Upstream,
                "topic" => Part::Topic,
                other => return Err(format!("unknown placeholder {{{other}}} (use {{upstream}} or {{topic}})")),
            });
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched }} in {text:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(NameTemplate { parts })
    }

    /// The template with the message's values put in. With `subject`, each
    /// value keeps `[A-Za-z0-9_-]` and has every other character replaced
    /// by `_`, and an empty value becomes `_` (a NATS subject token); else
    /// the values go in as they are (a Redis key).
    pub fn render(&self, upstream: &str, topic: &str, subject: bool) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            let value = match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Upstream => upstream,
                Part::Topic => topic,
            };
            if !subject {
                out.push_str(value);
            } else if value.is_empty() {
                out.push('_');
            } else {
                out.extend(value.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }));
            }
        }
        out
    }

    /// The subjects a stream created for this subject template binds: the
    /// literal text before the first placeholder, cut to whole tokens,
    /// followed by `>` (`wsgate.>` for `wsgate.{upstream}.{topic}`); a
    /// template without placeholders binds itself. `None` when no literal
    /// token comes first (the stream would bind every subject).
    pub fn stream_subjects(&self) -> Option<String> {
        let mut prefix = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => prefix.push_str(text),
                Part::Upstream | Part::Topic => {
                    let cut = prefix.rfind('.')?;
                    return Some(format!("{}>", &prefix[..=cut]));
                }
            }
        }
        Some(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values are put in; in a subject each is one sanitised token.
    #[test]
    fn renders_and_sanitises() {
        let t = NameTemplate::parse("wsgate.{upstream}.{topic}").unwrap();
        assert_eq!(t.render("btc-usd", "trade", true), "wsgate.btc-usd.trade");
        assert_eq!(t.render("a.b", "x y*>", true), "wsgate.a_b.x_y__");
        assert_eq!(t.render("a", "", true), "wsgate.a._");
        assert_eq!(t.render("ü_1", "t", true), "wsgate.__1.t");
        let key = NameTemplate::parse("wsgate:{upstream}").unwrap();
        assert_eq!(key.render("a.b c", "t", false), "wsgate:a.b c");
    }

    /// The stream binds the literal tokens before the first placeholder.
    #[test]
    fn stream_subjects() {
        let binds = |t: &str| NameTemplate::parse(t).unwrap().stream_subjects();
        assert_eq!(binds("wsgate.{upstream}.{topic}").as_deref(), Some("wsgate.>"));
        assert_eq!(binds("a.b.{topic}").as_deref(), Some("a.b.>"));
        assert_eq!(binds("a.feed_{upstream}").as_deref(), Some("a.>"));
        assert_eq!(binds("a.all").as_deref(), Some("a.all"));
        assert_eq!(binds("{upstream}.x"), None);
        assert_eq!(binds("pre{upstream}"), None);
    }

    /// Unknown and unclosed placeholders are refused, naming them.
    #[test]
    fn parse_errors() {
        assert!(NameTemplate::parse("a.{feed}").unwrap_err().contains("{feed}"));
        assert!(NameTemplate::parse("a.{upstream").is_err());
        assert!(NameTemplate::parse("a.}").is_err());
    }
}
