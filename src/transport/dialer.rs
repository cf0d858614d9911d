//! Our own dialer under awc: DNS, TCP (socket options from [`super::socket`]), TLS.
//!
//! awc is told the URL is `ws://host:port` (`http://host:port` for the
//! webhook) and gets an already-encrypted stream from here, through
//! actix-tls's connector service; this file never names awc. That gives us
//! three things awc alone does not: failures classified as `dns`, `tcp` or
//! `tls` ([`TransportError`]); socket options; and the response head of a
//! refused upgrade, from which `Retry-After` is read (awc keeps only the
//! status). It is also where an HTTP CONNECT or SOCKS proxy will go (SPEC §11).
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

use actix_http::Uri;
use actix_rt::net::{ActixStream, TcpStream};
use actix_service::Service;
use actix_tls::connect::{ConnectError as TcpConnectError, ConnectInfo, Connection as TcpConnection};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::TransportError;
use super::frame_guard::{FrameScan, FrameTooLarge};
use super::retry_after::retry_after_in_head;
use super::socket::tune_dialed;

/// How much of the response head is kept to find `Retry-After`.
const HEAD_LIMIT: usize = 8 * 1024;

/// Time between the starts of two TCP attempts while earlier ones are
/// pending: RFC 8305's recommended "Connection Attempt Delay" (SPEC §11).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Shared between the dialer and the attempt that owns it.
#[derive(Debug, Default)]
pub struct DialState {
    /// Our classification of a transport failure (awc would flatten it).
    pub failure: Option<TransportError>,
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
        retry_after_in_head(&self.head, SystemTime::now())
    }
}

/// The connector service awc dials through, for one upstream attempt or one webhook endpoint.
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

impl Dialer {
    /// A dialer to `host:port`, with TLS when `tls` is set.
    pub fn new(
        host: &str,
        port: u16,
        tls: Option<Arc<ClientConfig>>,
        user_timeout: Duration,
    ) -> Result<Self, TransportError> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tls = match tls {
            Some(cfg) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| TransportError::Tls(format!("invalid server name {host:?}")))?;
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

    async fn dial(&self) -> Result<UpstreamIo, TransportError> {
        let dns = |detail: String| TransportError::Dns { host: self.host.clone(), detail };
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
        .map_err(|mut errors| TransportError::Tcp(errors.pop().unwrap_or_default()))?;
        tune_dialed(&tcp, self.user_timeout);
        let inner = match &self.tls {
            None => Inner::Plain(tcp),
            Some((cfg, name)) => {
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| TransportError::Tls(e.to_string()))?;
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
#[path = "happy_eyeballs_tests.rs"]
mod happy_eyeballs_tests;
