//! Durations (`"500ms"`, `"1m30s"`) and sizes (`"16MiB"`) as config values.
//!
//! Both serialize back to the text a user would write, so `wsgate check`
//! prints a config that can be fed to `wsgate run` again.

use std::fmt;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in humantime syntax: `"500ms"`, `"20s"`, `"1m30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// Milliseconds, as a `const fn` so defaults stay `const`.
    pub const fn ms(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }

    /// Seconds, as a `const fn` so defaults stay `const`.
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }

    /// The wrapped duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// True for `"0s"`, which several keys use to mean "off".
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Parses humantime text; the error is the sentence users see after the key.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("invalid duration {text:?} (expected e.g. \"500ms\", \"20s\", \"1m30s\")"))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Dur).map_err(de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A byte size: a bare number is bytes; `KB`/`MB`/`GB` are powers of 1000,
/// `KiB`/`MiB`/`GiB` powers of 1024 (SPEC §10a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    /// Mebibytes, for defaults.
    pub const fn mib(n: u64) -> Self {
        Size(n * 1024 * 1024)
    }

    /// The size in bytes, saturated to `usize`.
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Parses `"16MiB"`, `"500KB"`, `"1024"`, `"12 B"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {text:?} (expected bytes or e.g. \"64KiB\", \"16MiB\", \"1GB\")");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept both `max_message_size = 1024` and `= "1KiB"`; the config
        // crate hands env values over as strings, so go through text.
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"16MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| E::custom(format!("invalid size {v} (must not be negative)")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= m && n % m == 0 {
                return write!(f, "{}{unit}", n / m);
            }
        }
        write!(f, "{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes parse with both unit families and reject nonsense.
    #[test]
    fn sizes() {
        for (text, want) in [
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("12B", Some(12)),
            ("16MiB", Some(16 << 20)),
            ("1 KiB", Some(1024)),
            ("2KB", Some(2000)),
            ("3MB", Some(3_000_000)),
            ("1GB", Some(1_000_000_000)),
            ("1GiB", Some(1 << 30)),
            ("16 mib", None),
            ("MiB", None),
            ("-1", None),
            ("99999999999999999999GiB", None),
        ] {
            assert_eq!(parse_size(text).ok(), want, "{text}");
        }
    }

    /// Durations use humantime syntax and round-trip through Display.
    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        let err = parse_duration("5 parsecs").unwrap_err();
        assert!(err.contains("invalid duration \"5 parsecs\""), "{err}");
        assert_eq!(Dur::ms(1500).to_string(), "1s 500ms");
        assert_eq!(Dur::secs(0).to_string(), "0s");
        assert_eq!(Size::mib(16).to_string(), "16MiB");
        assert_eq!(Size(1000).to_string(), "1000");
    }
}
