//! Proxy URLs (SPEC §12): parsed once here, so `validate` and the dialer
//! (`transport::proxy`) agree on what `[upstreams.proxy] url` means.

use super::schema::ProxyConfig;
use super::secret::Secret;

/// The protocol spoken to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `http://`: HTTP/1.1 `CONNECT host:port`.
    Http,
    /// `socks5://`: SOCKS5, the target's name resolved by us.
    Socks5,
    /// `socks5h://`: SOCKS5, the target's name resolved by the proxy.
    Socks5h,
}

/// A parsed proxy URL. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// The protocol.
    pub kind: ProxyKind,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port (default 1080 for SOCKS, 8080 for HTTP, as curl).
    pub port: u16,
    /// User name from the URL's userinfo, percent-decoded.
    pub username: Option<String>,
    /// Password from the URL's userinfo, percent-decoded.
    pub password: Option<Secret>,
}

/// Why a proxy URL is not one. Never holds the URL's userinfo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadProxyUrl(pub String);

/// Parses `http://[user[:pass]@]host[:port][/]`, `socks5://…`, `socks5h://…`.
/// A URL without a scheme is taken as `http://` (curl does the same).
pub fn parse_proxy_url(url: &str) -> Result<ProxyUrl, BadProxyUrl> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let kind = match scheme.to_ascii_lowercase().as_str() {
        "http" => ProxyKind::Http,
        "socks5" => ProxyKind::Socks5,
        "socks5h" => ProxyKind::Socks5h,
        other => {
            return Err(BadProxyUrl(format!("unsupported proxy scheme {other:?} (http, socks5 or socks5h)")));
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| BadProxyUrl("unclosed [ in proxy host".into()))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(BadProxyUrl("proxy url has no host".into()));
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| BadProxyUrl(format!("invalid proxy port {p:?}")))?,
        None if kind == ProxyKind::Http => 8080,
        None => 1080,
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(percent_decode(n)), Some(Secret::new(percent_decode(p)))),
            None => (Some(percent_decode(u)), None),
        },
    };
    Ok(ProxyUrl { kind, host: host.to_string(), port, username, password })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Validation of `[upstreams.proxy]`: a known `url` form and at most one
/// password source. Errors are `(key, message)`.
pub(super) fn check(p: &ProxyConfig) -> Result<(), (String, String)> {
    match p.url.trim() {
        "env" | "none" => {}
        url => {
            parse_proxy_url(url).map_err(|e| ("url".to_string(), e.0))?;
        }
    }
    if p.password_source().count() > 1 {
        return Err(("password".into(), "give at most one of password, password_env, password_file".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy URL's password never shows in `check` output or `Debug`.
    #[test]
    fn proxy_password_is_redacted() {
        let text = "[[upstreams]]\nname = \"a\"\nurl = \"ws://h/\"\n[upstreams.proxy]\nurl = \"http://u:hunter2@p:3128\"\npassword = \"hunter3\"\n";
        let s: crate::config::Settings = toml::from_str(text).unwrap();
        let out = s.to_redacted_toml();
        assert!(out.contains("http://***@p:3128") && out.contains("***"), "{out}");
        assert!(!out.contains("hunter2") && !out.contains("hunter3"), "{out}");
        let debug = format!("{:?}", s.upstreams[0]);
        assert!(!debug.contains("hunter2") && !debug.contains("hunter3"), "{debug}");
        assert!(check(&s.upstreams[0].proxy).is_ok());
    }

    /// Every scheme, default ports, IPv6, userinfo decoded, bad forms named.
    #[test]
    fn parses_proxy_urls() {
        let p = parse_proxy_url("http://proxy.corp:3128").unwrap();
        assert_eq!((p.kind, p.host.as_str(), p.port, p.username), (ProxyKind::Http, "proxy.corp", 3128, None));
        let p = parse_proxy_url("socks5h://al%40ice:p%3Ass@[::1]:1081/").unwrap();
        assert_eq!((p.kind, p.host.as_str(), p.port), (ProxyKind::Socks5h, "::1", 1081));
        assert_eq!(p.username.as_deref(), Some("al@ice"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("p:ss"));
        assert!(!format!("{p:?}").contains("p:ss"));
        assert_eq!(parse_proxy_url("socks5://h").unwrap().port, 1080);
        assert_eq!(parse_proxy_url("h:9").unwrap().kind, ProxyKind::Http);
        assert_eq!(parse_proxy_url("http://h").unwrap().port, 8080);
        assert!(parse_proxy_url("ftp://h:1").unwrap_err().0.contains("ftp"));
        assert!(parse_proxy_url("http://:1").is_err());
        assert!(parse_proxy_url("http://h:x").is_err());
        assert!(parse_proxy_url("http://u:secret@h:x").unwrap_err().0.contains("\"x\""));
    }
}
