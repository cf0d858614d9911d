//! One connection attempt: resolve the secret, build the request (headers,
//! auth, subprotocols), dial through our [`Dialer`], upgrade with awc, and
//! classify every failure into a [`LinkError`].

use std::sync::Arc;
use std::time::Duration;

use std::cell::Cell;
use std::rc::Rc;

use actix_codec::Framed;
use awc::error::{ConnectError, SendRequestError, WsClientError};
use awc::http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, HOST, ORIGIN, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL, USER_AGENT,
};
use awc::http::Uri;
use awc::BoxedSocket;
use base64::Engine as _;

use super::credentials::{self, CachedToken, Credentials};
use super::error::LinkError;
use super::trace;
use crate::config::proxy::ProxyUrl;
use crate::config::Compression;
use crate::config::{AuthKind, Secret, UpstreamConfig};
use crate::transport::deflate::{self, LinkCodec};
use crate::transport::{client_config, proxy, Dialer};

/// Everything needed for one attempt, resolved at attempt time (so a
/// rotated `token_file` or CA file applies at every reconnect).
pub struct Attempt {
    url: String,
    host_header: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    protocols: Vec<String>,
    max_frame: usize,
    timeout: Duration,
    dialer: Dialer,
    /// Whether certificate checks are off (warned at every connect).
    pub insecure: bool,
    /// `trace = true`: what the handshake trace needs (SPEC §12).
    trace: Option<HandshakeTrace>,
    /// permessage-deflate was offered (`compression = "deflate"`).
    offered_deflate: bool,
}

/// The handshake trace of one attempt: the upstream's name, its redactor,
/// the auth header (its value is always `***`) and the secrets to scrub.
struct HandshakeTrace {
    upstream: String,
    redactor: crate::config::Redactor,
    auth_header: Option<String>,
    secrets: Vec<String>,
}

impl HandshakeTrace {
    fn log<'a>(&self, what: &str, headers: impl Iterator<Item = (&'a str, &'a [u8])>) {
        let also: Vec<&str> = self.auth_header.iter().map(String::as_str).collect();
        trace::headers(&self.upstream, what, headers, &self.redactor, &also, &self.secrets);
    }
}

/// A successful upgrade.
pub struct Upgraded {
    /// The WebSocket framed transport, with our codec (permessage-deflate
    /// when the server accepted it).
    pub framed: Framed<BoxedSocket, LinkCodec>,
    /// Bytes received on the socket (frames as sent), read by the actor
    /// into `wsgate_upstream_wire_bytes_total`.
    pub wire: Rc<Cell<u64>>,
    /// The subprotocol the server picked, if any.
    pub protocol: Option<String>,
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), LinkError> {
    let n = HeaderName::try_from(name).map_err(|_| LinkError::Protocol(format!("invalid header name {name:?}")))?;
    // The value may be a secret: never echo it.
    let v =
        HeaderValue::try_from(value).map_err(|_| LinkError::Protocol(format!("invalid value for header {name}")))?;
    Ok((n, v))
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub(super) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What one attempt reads from files (and the environment): the token and
/// the TLS config with its CA and client certificate files. Read on
/// tokio's blocking pool ([`Files::read`]), never on the actor's thread.
pub struct Files {
    /// The token and named secrets (`credentials.rs`).
    pub creds: Credentials,
    /// The auth token, if one is configured (or `token_command` printed one).
    token: Option<Secret>,
    /// The rustls config, for `wss://`.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The proxy on the way, with its password read (SPEC §12).
    proxy: Option<ProxyUrl>,
}

impl Files {
    /// Reads the token, the named secrets and the TLS files of `cfg`, off
    /// the calling thread; `cached` is what `token_command` printed last.
    pub async fn read(cfg: Arc<UpstreamConfig>, cached: CachedToken) -> Result<Files, LinkError> {
        tokio::task::spawn_blocking(move || Files::read_now(&cfg, cached))
            .await
            .unwrap_or_else(|e| Err(LinkError::Protocol(format!("reading the secret and TLS files failed: {e}"))))
    }

    /// The blocking part of [`Files::read`].
    fn read_now(cfg: &UpstreamConfig, cached: CachedToken) -> Result<Files, LinkError> {
        let creds = credentials::read(cfg, cached)?;
        let secure = cfg.url.starts_with("wss://");
        let tls = if secure { Some(client_config(&cfg.tls)?) } else { None };
        Ok(Files { token: creds.token.clone(), creds, tls, proxy: proxy_for(cfg, secure)? })
    }
}

/// The proxy for `cfg` (none over a Unix socket), its password read now.
fn proxy_for(cfg: &UpstreamConfig, secure: bool) -> Result<Option<ProxyUrl>, LinkError> {
    if cfg.unix_socket.is_some() {
        return Ok(None);
    }
    let host = cfg.url.parse::<Uri>().ok().and_then(|u| u.host().map(str::to_string)).unwrap_or_default();
    let p = &cfg.proxy;
    let password =
        p.password_source().resolve().map_err(|e| LinkError::Proxy(format!("cannot read the proxy password: {e}")))?;
    Ok(proxy::choose(&p.url, p.username.as_deref(), password, secure, &host, &|k| std::env::var(k).ok())?)
}

impl Attempt {
    /// Builds the request from the config and what [`Files::read`] read.
    pub fn prepare(cfg: &UpstreamConfig, files: Files) -> Result<Attempt, LinkError> {
        let bad_url = || LinkError::Protocol(format!("invalid url {}", cfg.redacted_url()));
        let uri: Uri = cfg.url.parse().map_err(|_| bad_url())?;
        let secure = uri.scheme_str() == Some("wss");
        let host = uri.host().ok_or_else(bad_url)?.to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };

        let Files { token, tls, proxy, .. } = files;
        let need = |t: &Option<Secret>| t.clone().ok_or_else(|| LinkError::Auth("no token configured".into()));

        let mut path_query = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let mut headers = Vec::new();
        if cfg.compression == Compression::Deflate {
            headers.push(header(SEC_WEBSOCKET_EXTENSIONS.as_str(), deflate::OFFER)?);
        }
        let agent = cfg.user_agent.clone().unwrap_or_else(|| format!("wsgate/{}", env!("CARGO_PKG_VERSION")));
        headers.push(header(USER_AGENT.as_str(), &agent)?);
        if let Some(origin) = &cfg.origin {
            headers.push(header(ORIGIN.as_str(), origin)?);
        }
        for (k, v) in &cfg.headers {
            headers.push(header(k, v)?);
        }
        match cfg.auth.kind {
            AuthKind::None | AuthKind::Message => {
                if let Some(userinfo) = userinfo {
                    let basic = base64::engine::general_purpose::STANDARD.encode(userinfo);
                    headers.push(header(AUTHORIZATION.as_str(), &format!("Basic {basic}"))?);
                }
            }
            AuthKind::Bearer => {
                headers.push(header(AUTHORIZATION.as_str(), &format!("Bearer {}", need(&token)?.expose()))?);
            }
            AuthKind::Basic => {
                let user = cfg.auth.username.as_deref().unwrap_or_default();
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", need(&token)?.expose()));
                headers.push(header(AUTHORIZATION.as_str(), &format!("Basic {basic}"))?);
            }
            AuthKind::Header => {
                let name = cfg.auth.header_name.as_deref().unwrap_or("x-api-key");
                headers.push(header(name, need(&token)?.expose())?);
            }
            AuthKind::Query => {
                let param = cfg.auth.param.as_deref().unwrap_or("token");
                let sep = if path_query.contains('?') { '&' } else { '?' };
                path_query =
                    format!("{path_query}{sep}{}={}", encode_query(param), encode_query(need(&token)?.expose()));
            }
        }

        let tls = if secure { tls } else { None };
        let user_timeout = cfg.heartbeat.interval.get() + cfg.heartbeat.timeout.get();
        let dialer = Dialer::new(&host, port, tls, user_timeout)?
            .with_frame_limit(cfg.max_message_size.0)
            .with_proxy(proxy)
            .with_unix_socket(cfg.unix_socket.clone());
        let trace = cfg.trace.then(|| {
            let mut secrets = cfg.url_secrets();
            if let Some(t) = &token {
                secrets.extend([t.expose().to_string(), encode_query(t.expose())]);
            }
            HandshakeTrace {
                upstream: cfg.name.clone(),
                redactor: cfg.redactor.clone(),
                auth_header: (cfg.auth.kind == AuthKind::Header)
                    .then(|| cfg.auth.header_name.clone().unwrap_or_else(|| "x-api-key".into())),
                secrets,
            }
        });
        Ok(Attempt {
            offered_deflate: cfg.compression == Compression::Deflate,
            trace,
            url: format!("ws://{host}:{port}{path_query}"),
            host_header: hostport.to_string(),
            headers,
            protocols: cfg.subprotocols.clone(),
            max_frame: cfg.max_message_size.bytes(),
            timeout: cfg.connect_timeout.get(),
            dialer,
            insecure: secure && cfg.tls.insecure_skip_verify,
        })
    }

    /// Dials and upgrades, within `connect_timeout` for the whole of it.
    pub async fn run(self) -> Result<Upgraded, LinkError> {
        let connector =
            awc::Connector::new().connector(self.dialer.clone()).timeout(self.timeout).handshake_timeout(self.timeout);
        let client = awc::Client::builder().connector(connector).timeout(self.timeout).finish();
        if let Some(t) = &self.trace {
            let path = self.url.find('/').and_then(|i| self.url[i + 2..].find('/').map(|j| &self.url[i + 2 + j..]));
            let request_line = format!("GET {}", path.unwrap_or("/"));
            let protocols = self.protocols.join(", ");
            let mut lines: Vec<(&str, &[u8])> =
                vec![("request", request_line.as_bytes()), (HOST.as_str(), self.host_header.as_bytes())];
            lines.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
            if !protocols.is_empty() {
                lines.push((SEC_WEBSOCKET_PROTOCOL.as_str(), protocols.as_bytes()));
            }
            t.log("request", lines.into_iter());
        }
        let mut req = client.ws(self.url.as_str()).max_frame_size(self.max_frame);
        if let Ok(v) = HeaderValue::try_from(self.host_header.as_str()) {
            req = req.set_header(HOST, v);
        }
        for (k, v) in self.headers {
            req = req.set_header(k, v);
        }
        if !self.protocols.is_empty() {
            req = req.protocols(&self.protocols);
        }
        let state = self.dialer.state();
        match actix_rt::time::timeout(self.timeout, req.connect()).await {
            Err(_) => Err(LinkError::Timeout(self.timeout)),
            Ok(Err(e)) => {
                let mut st = state.borrow_mut();
                if let Some(f) = st.failure.take() {
                    return Err(f.into());
                }
                Err(classify(e, || st.retry_after(), self.timeout))
            }
            Ok(Ok((resp, awc_framed))) => {
                if let Some(t) = &self.trace {
                    let status = resp.status().as_u16().to_string();
                    let lines = std::iter::once(("status", status.as_bytes()))
                        .chain(resp.headers().iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
                    t.log("answer", lines);
                }
                let protocol =
                    resp.headers().get(SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok()).map(str::to_string);
                let extensions = resp.headers().get(SEC_WEBSOCKET_EXTENSIONS).map(|v| v.to_str().unwrap_or("?"));
                let params = deflate::accepted(extensions).map_err(LinkError::Protocol)?;
                if params.is_some() && !self.offered_deflate {
                    return Err(LinkError::Protocol(
                        "the server accepted permessage-deflate, which was not offered".into(),
                    ));
                }
                // awc's codec rejects RSV1: swap in ours. `replace_codec`
                // keeps the buffers and the read state, so frames that came
                // with the 101 answer are decoded at once (rebuilding from
                // parts would leave them until the next bytes arrive).
                let codec = LinkCodec::new(self.max_frame, params);
                let wire = codec.wire_counter();
                Ok(Upgraded { framed: awc_framed.replace_codec(codec), wire, protocol })
            }
        }
    }
}

/// Maps awc's error onto our reasons. The one place that reads awc errors.
fn classify(e: WsClientError, retry_after: impl FnOnce() -> Option<Duration>, timeout: Duration) -> LinkError {
    match e {
        WsClientError::InvalidResponseStatus(status) => {
            let code = status.as_u16();
            let retry_after = matches!(code, 429 | 503).then(retry_after).flatten();
            LinkError::Http { status: code, retry_after }
        }
        WsClientError::SendRequest(SendRequestError::Timeout)
        | WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Timeout)) => LinkError::Timeout(timeout),
        WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Io(e)))
        | WsClientError::SendRequest(SendRequestError::Send(e)) => LinkError::Tcp(e.to_string()),
        WsClientError::SendRequest(SendRequestError::Connect(e)) => LinkError::Tcp(e.to_string()),
        WsClientError::SendRequest(SendRequestError::Response(e)) => {
            LinkError::Protocol(format!("bad upgrade response: {e}"))
        }
        WsClientError::SendRequest(e) => LinkError::Tcp(e.to_string()),
        other => LinkError::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query tokens are percent-encoded.
    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode_query("Az09-._~"), "Az09-._~");
    }
}
