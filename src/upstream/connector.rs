//! Our own transport under awc: DNS, TCP (keepalive, user timeout), TLS.
//!
//! awc is told the URL is `ws://host:port` and gets an already-encrypted
//! stream from here. That gives us three things awc alone does not: failures
//! classified as `dns`, `tcp` or `tls`; socket options; and the response
//! head of a refused upgrade, from which `Retry-After` is read (awc keeps
//! only the status). It is also where an HTTP CONNECT or SOCKS proxy will
//! go (SPEC §11).
//!
//! TCP is dialed "Happy Eyeballs" style (RFC 8305, SPEC §11): every address
//! DNS returns, families interleaved, a new attempt every [`ATTEMPT_DELAY`]
//! while earlier ones are pending, the first to connect wins ([`race`]).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use actix_rt::net::{ActixStream, TcpStream};
use actix_service::Service;
use actix_tls::connect::{ConnectError as TcpConnectError, ConnectInfo, Connection as TcpConnection};
use awc::http::Uri;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::LinkError;
use crate::transport::frame_guard::FrameScan;

/// How much of the response head is kept to find `Retry-After`.
const HEAD_LIMIT: usize = 8 * 1024;

/// Time between the starts of two TCP attempts while earlier ones are
/// pending: RFC 8305's recommended "Connection Attempt Delay" (SPEC §11).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Shared between the dialer and the attempt that owns it.
#[derive(Debug, Default)]
pub struct DialState {
    /// Our classification of a transport failure (awc would flatten it).
    pub failure: Option<LinkError>,
    head: Vec<u8>,
    head_done: bool,
}

impl DialState {
    /// Records response-head bytes; returns how many of `bytes` belonged to
    /// the head (the rest are the first WebSocket frames).
    fn feed(&mut self, bytes: &[u8]) -> usize {
        let before = self.head.len();
        let room = HEAD_LIMIT.saturating_sub(before);
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let from = before.saturating_sub(3);
        if let Some(p) = self.head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + p + 4;
            self.head.truncate(end);
            self.head_done = true;
            return end - before;
        }
        if self.head.len() >= HEAD_LIMIT {
            self.head_done = true;
        }
        bytes.len()
    }

    /// The `Retry-After` of the response head, as a delay from now.
    pub fn retry_after(&self) -> Option<Duration> {
        parse_retry_after(&self.head, SystemTime::now())
    }
}

/// Finds `Retry-After` (seconds or HTTP date) in a response head.
pub fn parse_retry_after(head: &[u8], now: SystemTime) -> Option<Duration> {
    let text = String::from_utf8_lossy(head);
    let value = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("retry-after").then(|| value.trim().to_string())
    })?;
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    let at = httpdate::parse_http_date(&value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(Duration::from_secs(24 * 3600)))
}

/// The awc connector service of one attempt.
#[derive(Clone)]
pub struct Dialer {
    host: String,
    port: u16,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    user_timeout: Duration,
    /// Largest WebSocket frame accepted from the peer, checked at the frame
    /// header (see `crate::transport::frame_guard`); `None` for plain HTTP use.
    frame_limit: Option<u64>,
    state: Rc<RefCell<DialState>>,
}

/// The error a read returns when the peer declares a frame over the limit.
#[derive(Debug, thiserror::Error)]
#[error("peer declared a {declared}-byte frame, over the limit of {limit}")]
pub struct FrameTooLarge {
    /// The length in the frame header.
    pub declared: u64,
    /// The configured limit.
    pub limit: u64,
}

impl Dialer {
    /// A dialer to `host:port`, with TLS when `tls` is set.
    pub fn new(
        host: &str,
        port: u16,
        tls: Option<Arc<ClientConfig>>,
        user_timeout: Duration,
    ) -> Result<Self, LinkError> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tls = match tls {
            Some(cfg) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| LinkError::Tls(format!("invalid server name {host:?}")))?;
                Some((cfg, name))
            }
            None => None,
        };
        Ok(Dialer { host, port, tls, user_timeout, frame_limit: None, state: Rc::default() })
    }

    /// Fails the stream at the first frame header over `limit` bytes.
    pub fn with_frame_limit(mut self, limit: u64) -> Self {
        self.frame_limit = Some(limit);
        self
    }

    /// What this dialer saw.
    pub fn state(&self) -> Rc<RefCell<DialState>> {
        Rc::clone(&self.state)
    }

    async fn dial(&self) -> Result<UpstreamIo, LinkError> {
        let dns = |detail: String| LinkError::Dns { host: self.host.clone(), detail };
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((self.host.as_str(), self.port)).await.map_err(|e| dns(e.to_string()))?.collect();
        if addrs.is_empty() {
            return Err(dns("no addresses".into()));
        }
        // `connect_timeout`, applied by the caller around the whole
        // connect, bounds the race too.
        let tcp = race(interleave(addrs), ATTEMPT_DELAY, |addr| async move {
            TcpStream::connect(addr).await.map_err(|e| format!("{addr}: {e}"))
        })
        .await
        .map_err(|mut errors| LinkError::Tcp(errors.pop().unwrap_or_default()))?;
        tune_socket(&tcp, self.user_timeout);
        let inner = match &self.tls {
            None => Inner::Plain(tcp),
            Some((cfg, name)) => {
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| LinkError::Tls(e.to_string()))?;
                Inner::Tls(Box::new(tls))
            }
        };
        Ok(UpstreamIo {
            inner,
            state: Rc::clone(&self.state),
            scan: FrameScan::default(),
            frame_limit: self.frame_limit,
            violation: None,
        })
    }
}

/// Orders addresses for [`race`]: the two families alternate, starting with
/// the family of the first address (the resolver's preference); within a
/// family the resolver's order is kept (RFC 8305 §4).
pub fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first_v6) = addrs.first().map(SocketAddr::is_ipv6) else {
        return addrs;
    };
    let (preferred, other): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(addrs.len());
    let (mut p, mut o) = (preferred.into_iter(), other.into_iter());
    loop {
        match (p.next(), o.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// Races connection attempts (RFC 8305 §5): `attempt(addr)` for each of
/// `addrs` in order, the next one `delay` ([`ATTEMPT_DELAY`] when dialing)
/// after the previous start while earlier attempts are still pending, or at
/// once when an attempt fails. The first success wins and the other attempts are
/// dropped (closing their sockets); when all fail, their errors in the
/// order they failed. No timeout of its own: the caller bounds the whole.
pub async fn race<T, E, F, Fut>(addrs: Vec<SocketAddr>, delay: Duration, mut attempt: F) -> Result<T, Vec<E>>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut addrs = addrs.into_iter();
    let mut pending = FuturesUnordered::new();
    let mut errors = Vec::new();
    loop {
        // Each pass starts one attempt: the first, after the delay, or
        // after a failure.
        if let Some(addr) = addrs.next() {
            pending.push(attempt(addr));
        }
        if pending.is_empty() {
            return Err(errors);
        }
        let more = addrs.len() > 0;
        let next_start = tokio::time::sleep(delay);
        tokio::pin!(next_start);
        tokio::select! {
            // A result that is ready at the same instant as the timer wins.
            biased;
            done = pending.next() => match done {
                Some(Ok(conn)) => return Ok(conn),
                Some(Err(e)) => errors.push(e),
                None => {}
            },
            () = &mut next_start, if more => {}
        }
    }
}

/// Keepalive and a user timeout, so the kernel also gives up on a dead peer.
fn tune_socket(tcp: &TcpStream, user_timeout: Duration) {
    let sock = socket2::SockRef::from(tcp);
    let _ = sock.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&ka);
    #[cfg(target_os = "linux")]
    let _ = sock.set_tcp_user_timeout(Some(user_timeout));
    #[cfg(not(target_os = "linux"))]
    let _ = user_timeout;
}

impl Service<ConnectInfo<Uri>> for Dialer {
    type Response = TcpConnection<Uri, UpstreamIo>;
    type Error = TcpConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let this = self.clone();
        let uri = req.request().clone();
        Box::pin(async move {
            match this.dial().await {
                Ok(io) => Ok(TcpConnection::new(uri, io)),
                Err(e) => {
                    this.state.borrow_mut().failure = Some(e);
                    Err(TcpConnectError::Unresolved)
                }
            }
        })
    }
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The stream handed to awc: plain or TLS, recording the response head.
pub struct UpstreamIo {
    inner: Inner,
    state: Rc<RefCell<DialState>>,
    /// Frame boundaries after the response head, when `frame_limit` is set.
    scan: FrameScan,
    frame_limit: Option<u64>,
    /// A frame over the limit was announced: the next read fails with it.
    /// (Failing the read that carried it could fail the upgrade itself,
    /// when the header arrives with the 101 response.)
    violation: Option<FrameTooLarge>,
}

impl fmt::Debug for UpstreamIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.inner {
            Inner::Plain(_) => "UpstreamIo(plain)",
            Inner::Tls(_) => "UpstreamIo(tls)",
        })
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        if let Some(err) = this.violation.take() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, err)));
        }
        let res = match &mut this.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if let Poll::Ready(Ok(())) = res {
            let fresh = &buf.filled()[before..];
            let mut st = this.state.borrow_mut();
            let frames = if st.head_done { fresh } else { &fresh[st.feed(fresh).min(fresh.len())..] };
            if let (true, Some(limit)) = (st.head_done, this.frame_limit) {
                if let Err(declared) = this.scan.feed(frames, limit) {
                    this.violation = Some(FrameTooLarge { declared, limit });
                }
            }
        }
        res
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, data),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl ActixStream for UpstreamIo {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<tokio::io::Ready>> {
        match &self.inner {
            Inner::Plain(s) => ActixStream::poll_read_ready(s, cx),
            Inner::Tls(s) => ActixStream::poll_read_ready(s.get_ref().0, cx),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<tokio::io::Ready>> {
        match &self.inner {
            Inner::Plain(s) => ActixStream::poll_write_ready(s, cx),
            Inner::Tls(s) => ActixStream::poll_write_ready(s.get_ref().0, cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retry-After in seconds and as an HTTP date; absent otherwise.
    #[test]
    fn retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let head = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\n\r\n";
        assert_eq!(parse_retry_after(head, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let head = format!("HTTP/1.1 503 x\r\nRetry-After: {date}\r\n\r\n");
        assert_eq!(parse_retry_after(head.as_bytes(), now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(b"HTTP/1.1 503 x\r\nX: 1\r\n\r\n", now), None);
        assert_eq!(parse_retry_after(b"HTTP/1.1 503 x\r\nRetry-After: soon\r\n\r\n", now), None);
    }
}

#[cfg(test)]
#[path = "happy_eyeballs_tests.rs"]
mod happy_eyeballs_tests;
