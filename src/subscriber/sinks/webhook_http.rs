//! The HTTP side of the `webhook` sink: the endpoint (URL, headers,
//! transport) resolved once, one POST, and the one place that decides
//! between delivered, retry and reject (SPEC §10a).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use awc::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use awc::http::Uri;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

use crate::config::{redact_webhook_url, scrub, Redactor, TlsConfig, WebhookConfig};
use crate::fanout::Delivery;
use crate::transport::retry_after::parse_retry_after;
use crate::transport::{client_config, Dialer};

/// Longest wait for one POST, from dialing to the end of the answer.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for DNS, TCP and TLS of a new connection.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose sent data stays unacknowledged this long is dropped by the kernel.
pub(super) const USER_TIMEOUT: Duration = Duration::from_secs(30);
/// A `Retry-After` longer than this is cut to it.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How much of an answer's body is read (so the connection can be reused) and kept for the log.
pub(super) const MAX_ANSWER: usize = 64 * 1024;
/// How much of a rejecting answer's body goes into the warning.
pub(super) const ANSWER_IN_LOG: usize = 200;

// === impl Endpoint ===

/// Where and how batches are sent, resolved once at start.
pub(in crate::subscriber::sinks) struct Endpoint {
    /// The URL awc is given: always `http://host:port/path?query`; TLS, if
    /// any, is done underneath by `dialer`.
    pub(super) url: String,
    /// The `Host` header of the configured URL (userinfo removed).
    pub(super) host: HeaderValue,
    /// `Authorization: Basic` from userinfo in the URL; a configured Bearer token wins over it.
    pub(super) basic: Option<HeaderValue>,
    /// The configured extra headers, checked once.
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    /// Our transport: DNS, TCP with keepalive and user timeout, TLS for `https://`.
    pub(super) dialer: Dialer,
    /// The URL for log lines: `scheme://host:port/***` (SPEC §11).
    pub(super) shown: String,
    /// The secret parts of the URL (userinfo, path, query), scrubbed from
    /// error texts and answers that might echo them.
    pub(super) secrets: Vec<String>,
}

impl Endpoint {
    /// Parses the URL and headers and prepares the transport.
    pub(in crate::subscriber::sinks) fn new(cfg: &WebhookConfig) -> Result<Endpoint, String> {
        let bad = || format!("invalid url {:?} (must be http:// or https://)", redact_webhook_url(&cfg.url));
        let uri: Uri = cfg.url.parse().map_err(|_| bad())?;
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let path = uri.path_and_query().map(|p| p.as_str()).filter(|p| p.starts_with('/')).unwrap_or("/");
        let host_header = HeaderValue::try_from(hostport).map_err(|_| bad())?;
        let basic = match userinfo {
            Some(u) => {
                let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(u));
                Some(HeaderValue::try_from(value).map_err(|_| bad())?)
            }
            None => None,
        };
        let mut headers = Vec::with_capacity(cfg.headers.len());
        for (name, value) in &cfg.headers {
            let n =
                HeaderName::try_from(name.as_str()).map_err(|_| format!("headers: invalid header name {name:?}"))?;
            // The value may be a credential: never echo it.
            let v = HeaderValue::try_from(value.as_str()).map_err(|_| format!("headers: invalid value for {name}"))?;
            headers.push((n, v));
        }
        let tls = if secure { Some(client_config(&TlsConfig::default()).map_err(|e| e.to_string())?) } else { None };
        let dialer = Dialer::new(host, port, tls, USER_TIMEOUT).map_err(|e| e.to_string())?;
        // Paths and queries of webhook URLs often carry a secret (chat
        // webhooks do): log lines name the server only.
        let shown = redact_webhook_url(&cfg.url);
        let mut secrets = Redactor::default().secrets_in(&cfg.url, None);
        for part in [Some(path), Some(uri.path()), uri.query()].into_iter().flatten() {
            if part.len() > 1 {
                secrets.push(part.to_string());
            }
        }
        Ok(Endpoint {
            url: format!("http://{host}:{port}{path}"),
            host: host_header,
            basic,
            headers,
            dialer,
            shown,
            secrets,
        })
    }

    /// `text` with every secret part of the URL replaced by `***`.
    pub(super) fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }
}

// === answers ===

/// What one POST came back with.
#[derive(Debug)]
pub(super) enum Answer {
    /// The server answered with this status.
    Status {
        /// The HTTP status code.
        status: u16,
        /// `Retry-After`, as a delay from now.
        retry_after: Option<Duration>,
        /// The start of the body, for the log of a rejection.
        detail: String,
    },
    /// No answer: DNS, TCP, TLS, timeout, a broken response, an unreadable token.
    Failed(String),
}

/// What happens to a batch after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Taken: counted as written.
    Delivered,
    /// Kept and sent again after a backoff delay.
    Retry,
    /// Refused for good: dropped, counted as `error`.
    Reject,
}

/// The one place that decides between retrying and dropping (SPEC §10a):
/// network errors, 429 and 5xx are retried; 2xx is delivered; anything
/// else (other 4xx, and the 1xx/3xx a webhook should never send) drops.
pub(super) fn verdict(answer: &Answer) -> Verdict {
    match answer {
        Answer::Failed(_) => Verdict::Retry,
        Answer::Status { status, .. } => match status {
            200..=299 => Verdict::Delivered,
            429 | 500..=599 => Verdict::Retry,
            _ => Verdict::Reject,
        },
    }
}

/// The envelopes as one JSON array, without re-serializing them.
pub(super) fn json_array(batch: &[Arc<Delivery>]) -> Bytes {
    let size = batch.iter().map(|d| d.envelope().len() + 1).sum::<usize>() + 2;
    let mut out = BytesMut::with_capacity(size);
    out.put_u8(b'[');
    for (i, d) in batch.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(d.envelope().as_bytes());
    }
    out.put_u8(b']');
    out.freeze()
}

/// Sends one request and reads the answer.
pub(super) async fn post(req: awc::ClientRequest, body: Bytes) -> Answer {
    let mut resp = match req.send_body(body).await {
        Ok(r) => r,
        Err(e) => return Answer::Failed(e.to_string()),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now(), MAX_RETRY_AFTER));
    // Reading the body lets awc reuse the connection; its start goes into a warning.
    let body = resp.body().limit(MAX_ANSWER).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).chars().take(ANSWER_IN_LOG).collect::<String>().trim().to_string();
    Answer::Status { status, retry_after, detail }
}
