//! Proxies on the way to a feed (SPEC §12): which one applies (`env`,
//! `none`, or a URL; `NO_PROXY` as curl reads it), and the two handshakes
//! done on the TCP stream before TLS: HTTP `CONNECT` and SOCKS5 (RFC 1928,
//! user/password RFC 1929). Every failure here is reason `proxy`, except a
//! local name lookup of the target for `socks5://` (reason `dns`).

use std::net::IpAddr;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::TransportError;
use crate::config::proxy::{parse_proxy_url, ProxyKind, ProxyUrl};
use crate::config::Secret;

/// Largest CONNECT answer head we read.
const CONNECT_HEAD_LIMIT: usize = 8 * 1024;

/// The proxy for a target, from `[upstreams.proxy] url` (`"env"`, `"none"`
/// or a URL) and the environment as `env` reads it. `username` and
/// `password` from the config win over the URL's userinfo.
pub fn choose(
    setting: &str,
    username: Option<&str>,
    password: Option<Secret>,
    secure: bool,
    host: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyUrl>, TransportError> {
    let bad = |e: crate::config::proxy::BadProxyUrl| TransportError::Proxy(e.0);
    let mut proxy = match setting.trim() {
        "none" => return Ok(None),
        "env" => {
            let var = |name: &str| {
                [name.to_ascii_lowercase(), name.to_ascii_uppercase()]
                    .into_iter()
                    .find_map(|n| env(&n).filter(|v| !v.trim().is_empty()))
            };
            let url = if secure { var("https_proxy") } else { var("http_proxy") }.or_else(|| var("all_proxy"));
            let Some(url) = url else { return Ok(None) };
            if var("no_proxy").is_some_and(|list| no_proxy_matches(&list, host)) {
                return Ok(None);
            }
            parse_proxy_url(&url).map_err(bad)?
        }
        url => parse_proxy_url(url).map_err(bad)?,
    };
    if let Some(user) = username.filter(|u| !u.is_empty()) {
        proxy.username = Some(user.to_string());
    }
    if password.is_some() {
        proxy.password = password;
    }
    Ok(Some(proxy))
}

/// Whether `NO_PROXY` exempts `host`, as curl reads it: entries split by
/// commas (and spaces); `*` alone exempts every host; a name matches
/// itself and its subdomains (a leading `.` is ignored); an IP matches
/// itself, an `ip/bits` entry its network. Case does not matter.
pub fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    let host_ip: Option<IpAddr> = host.parse().ok();
    list.split([',', ' ']).map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if let Some((net, bits)) = entry.split_once('/') {
            return match (host_ip, net.parse::<IpAddr>(), bits.parse::<u32>()) {
                (Some(ip), Ok(net), Ok(bits)) => in_network(ip, net, bits),
                _ => false,
            };
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return host_ip == Some(ip);
        }
        let name = entry.trim_start_matches('.').trim_end_matches('.');
        host_ip.is_none() && (host == name || host.ends_with(&format!(".{name}")))
    })
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Asks `proxy`, already connected on `io`, for a tunnel to `host:port`.
/// On success `io` carries the target's bytes.
pub async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> Result<(), TransportError> {
    match proxy.kind {
        ProxyKind::Http => connect(io, proxy, host, port).await,
        ProxyKind::Socks5 => {
            let ip = match host.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    let dns = |detail: String| TransportError::Dns { host: host.to_string(), detail };
                    let mut addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| dns(e.to_string()))?;
                    addrs.next().ok_or_else(|| dns("no addresses".into()))?.ip()
                }
            };
            socks5(io, proxy, &Target::Ip(ip), port).await
        }
        ProxyKind::Socks5h => {
            let target = match host.parse::<IpAddr>() {
                Ok(ip) => Target::Ip(ip),
                Err(_) => Target::Name(host),
            };
            socks5(io, proxy, &target, port).await
        }
    }
}

fn proxy_err(text: impl Into<String>) -> TransportError {
    TransportError::Proxy(text.into())
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> TransportError + '_ {
    move |e| proxy_err(format!("{what}: {e}"))
}

/// HTTP/1.1 `CONNECT`; any 2xx opens the tunnel.
async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> Result<(), TransportError> {
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(user) = &proxy.username {
        let pass = proxy.password.as_ref().map(Secret::expose).unwrap_or_default();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await.map_err(io_err("writing CONNECT to the proxy"))?;
    io.flush().await.map_err(io_err("writing CONNECT to the proxy"))?;
    // Byte by byte: whatever follows the head is the target's and must stay in the stream.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= CONNECT_HEAD_LIMIT {
            return Err(proxy_err("the proxy's answer to CONNECT is too long"));
        }
        let b = io.read_u8().await.map_err(io_err("reading the proxy's answer to CONNECT"))?;
        head.push(b);
    }
    let status_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let status = std::str::from_utf8(status_line)
        .ok()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| proxy_err("the proxy's answer to CONNECT is not HTTP"))?;
    match status {
        200..=299 => Ok(()),
        407 => Err(proxy_err("the proxy wants authentication (HTTP 407)")),
        other => Err(proxy_err(format!("the proxy refused CONNECT with HTTP {other}"))),
    }
}

enum Target<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// SOCKS5 `CONNECT` (RFC 1928), with user/password auth (RFC 1929) when a
/// user name is set.
async fn socks5<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proxy: &ProxyUrl,
    target: &Target<'_>,
    port: u16,
) -> Result<(), TransportError> {
    let w = io_err("writing to the SOCKS5 proxy");
    let r = io_err("reading from the SOCKS5 proxy");
    let methods: &[u8] = if proxy.username.is_some() { &[0x00, 0x02] } else { &[0x00] };
    let mut hello = vec![0x05, methods.len() as u8];
    hello.extend_from_slice(methods);
    io.write_all(&hello).await.map_err(&w)?;
    let mut choice = [0u8; 2];
    io.read_exact(&mut choice).await.map_err(&r)?;
    if choice[0] != 0x05 {
        return Err(proxy_err("not a SOCKS5 proxy"));
    }
    match choice[1] {
        0x00 => {}
        0x02 => {
            let user = proxy.username.as_deref().unwrap_or_default().as_bytes();
            let pass = proxy.password.as_ref().map(Secret::expose).unwrap_or_default().as_bytes();
            if user.len() > 255 || pass.len() > 255 {
                return Err(proxy_err("SOCKS5 user name and password are limited to 255 bytes"));
            }
            let mut auth = vec![0x01, user.len() as u8];
            auth.extend_from_slice(user);
            auth.push(pass.len() as u8);
            auth.extend_from_slice(pass);
            io.write_all(&auth).await.map_err(&w)?;
            let mut answer = [0u8; 2];
            io.read_exact(&mut answer).await.map_err(&r)?;
            if answer[1] != 0x00 {
                return Err(proxy_err("the SOCKS5 proxy refused the user name and password"));
            }
        }
        0xFF if proxy.username.is_none() => {
            return Err(proxy_err("the SOCKS5 proxy wants authentication and no user name is configured"))
        }
        0xFF => return Err(proxy_err("the SOCKS5 proxy accepts none of our authentication methods")),
        other => return Err(proxy_err(format!("the SOCKS5 proxy chose an unknown method {other}"))),
    }
    let mut req = vec![0x05, 0x01, 0x00];
    match target {
        Target::Ip(IpAddr::V4(ip)) => {
            req.push(0x01);
            req.extend_from_slice(&ip.octets());
        }
        Target::Ip(IpAddr::V6(ip)) => {
            req.push(0x04);
            req.extend_from_slice(&ip.octets());
        }
        Target::Name(name) => {
            let name = name.as_bytes();
            if name.len() > 255 {
                return Err(proxy_err("host name too long for SOCKS5"));
            }
            req.push(0x03);
            req.push(name.len() as u8);
            req.extend_from_slice(name);
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    io.write_all(&req).await.map_err(&w)?;
    let mut head = [0u8; 4];
    io.read_exact(&mut head).await.map_err(&r)?;
    if head[1] != 0x00 {
        return Err(proxy_err(format!("the SOCKS5 proxy refused the connection: {}", socks_reply(head[1]))));
    }
    let rest = match head[3] {
        0x01 => 4 + 2,
        0x04 => 16 + 2,
        0x03 => {
            let len = io.read_u8().await.map_err(&r)?;
            usize::from(len) + 2
        }
        _ => return Err(proxy_err("the SOCKS5 proxy sent an unknown address type")),
    };
    let mut bound = vec![0u8; rest];
    io.read_exact(&mut bound).await.map_err(&r)?;
    Ok(())
}

/// RFC 1928 §6 reply codes.
fn socks_reply(code: u8) -> &'static str {
    match code {
        0x01 => "general failure",
        0x02 => "not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NO_PROXY as curl: suffixes, leading dots, IPs, CIDR, `*`, case.
    #[test]
    fn no_proxy_like_curl() {
        let m = no_proxy_matches;
        assert!(m("example.com", "example.com"));
        assert!(m("example.com", "feed.Example.COM"));
        assert!(m(".example.com", "feed.example.com"));
        assert!(m(".example.com", "example.com"));
        assert!(!m("example.com", "badexample.com"));
        assert!(m("localhost, 127.0.0.1", "127.0.0.1"));
        assert!(!m("127.0.0.1", "127.0.0.2"));
        assert!(m("10.0.0.0/8", "10.1.2.3"));
        assert!(!m("10.0.0.0/8", "11.1.2.3"));
        assert!(m("::1", "[::1]"));
        assert!(m("fd00::/8", "fd12::1"));
        assert!(m("*", "anything"));
        assert!(!m("*.example.com", "other.org"));
        assert!(!m("", "example.com"));
    }

    /// `env` picks by scheme, lower-case first, ALL_PROXY last, NO_PROXY exempts;
    /// `none` and URLs ignore the environment; config credentials win.
    #[test]
    fn choosing_a_proxy() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let env = vars(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
            ("HTTP_PROXY", "socks5://plain:2"),
            ("ALL_PROXY", "socks5h://all:3"),
            ("NO_PROXY", "internal.corp"),
        ]);
        let host = |p: Option<ProxyUrl>| p.map(|p| p.host);
        assert_eq!(host(choose("env", None, None, true, "feed.io", &env).unwrap()).as_deref(), Some("lower"));
        assert_eq!(host(choose("env", None, None, false, "feed.io", &env).unwrap()).as_deref(), Some("plain"));
        assert_eq!(choose("env", None, None, true, "a.internal.corp", &env).unwrap(), None);
        let only_all = vars(&[("ALL_PROXY", "socks5h://all:3"), ("http_proxy", " ")]);
        assert_eq!(host(choose("env", None, None, false, "x", &only_all).unwrap()).as_deref(), Some("all"));
        assert_eq!(choose("env", None, None, false, "x", &vars(&[])).unwrap(), None);
        assert_eq!(choose("none", None, None, true, "x", &env).unwrap(), None);
        let p = choose("http://u:p@h:1", Some("cfg"), Some(Secret::new("s3")), true, "x", &env).unwrap().unwrap();
        assert_eq!((p.username.as_deref(), p.password.as_ref().map(Secret::expose)), (Some("cfg"), Some("s3")));
        assert_eq!(
            choose("gopher://h", None, None, true, "x", &env).unwrap_err().reason(),
            crate::model::Reason::Proxy
        );
    }
}
