//! Our own dialer under awc: DNS, TCP (socket options from [`super::socket`]), TLS.
//!
//! awc is told the URL is `ws://host:port` (`http://host:port` for the
//! webhook) and gets an already-encrypted stream from here, through
//! actix-tls's connector service; this file never names awc. That gives us
//! three things awc alone does not: failures classified as `dns`, `tcp` or
//! `tls` ([`TransportError`]); socket options; and the response head of a
//! refused upgrade, from which `Retry-After` is read (awc keeps only the
//! status). An HTTP CONNECT or SOCKS5 proxy ([`super::proxy`]) is tunnelled
//! through on the TCP stream before TLS; `unix_socket` replaces TCP (SPEC §12).
//!
//! TCP is dialed "Happy Eyeballs" style (RFC 8305, SPEC §11): every address
//! DNS returns, families interleaved, a new attempt every [`ATTEMPT_DELAY`]
//! while earlier ones are pending, the first to connect wins ([`race`]).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use actix_http::Uri;
use actix_rt::net::{ActixStream, TcpStream, UnixStream};
use actix_service::Service;
use actix_tls::connect::{ConnectError as TcpConnectError, ConnectInfo, Connection as TcpConnection};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::proxy::ProxyUrl;

use super::error::TransportError;
use super::frame_guard::{FrameScan, FrameTooLarge};
use super::proxy::tunnel;
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
    /// The proxy to tunnel through (SPEC §12), if any.
    proxy: Option<Arc<ProxyUrl>>,
    /// Connect over this Unix socket instead of TCP (SPEC §12 `unix_socket`).
    unix_socket: Option<Arc<PathBuf>>,
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
        Ok(Dialer {
            host,
            port,
            tls,
            user_timeout,
            proxy: None,
            unix_socket: None,
            frame_limit: None,
            state: Rc::default(),
        })
    }

    /// Tunnels through `proxy` (HTTP CONNECT or SOCKS5) before TLS.
    pub fn with_proxy(mut self, proxy: Option<ProxyUrl>) -> Self {
        self.proxy = proxy.map(Arc::new);
        self
    }

    /// Connects over the Unix socket at `path` instead of TCP; the host
    /// and port stay what TLS and the `Host` header name.
    pub fn with_unix_socket(mut self, path: Option<PathBuf>) -> Self {
        self.unix_socket = path.map(Arc::new);
        self
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
        let base = match (&self.unix_socket, &self.proxy) {
            (Some(path), _) => Base::Unix(
                UnixStream::connect(path.as_path())
                    .await
                    .map_err(|e| TransportError::Tcp(format!("unix socket {}: {e}", path.display())))?,
            ),
            (None, None) => Base::Tcp(self.tcp(&self.host, self.port).await?),
            (None, Some(proxy)) => {
                let to_proxy = |e: TransportError| {
                    TransportError::Proxy(format!("cannot reach proxy {}:{}: {e}", proxy.host, proxy.port))
                };
                let mut tcp = self.tcp(&proxy.host, proxy.port).await.map_err(to_proxy)?;
                tunnel(&mut tcp, proxy, &self.host, self.port).await?;
                Base::Tcp(tcp)
            }
        };
        let inner = match &self.tls {
            None => Inner::Plain(base),
            Some((cfg, name)) => {
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                    .connect(name.clone(), base)
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

    /// Resolves `host` and races TCP connects to its addresses.
    async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, TransportError> {
        let dns = |detail: String| TransportError::Dns { host: host.to_string(), detail };
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((host, port)).await.map_err(|e| dns(e.to_string()))?.collect();
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
        Ok(tcp)
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

/// The socket under TLS: TCP (direct or through a proxy) or a Unix socket.
enum Base {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Base {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Base::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Base::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Base {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Base::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Base::Unix(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Base::Tcp(s) => Pin::new(s).poll_flush(cx),
            Base::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Base::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Base::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Base {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<tokio::io::Ready>> {
        match self {
            Base::Tcp(s) => ActixStream::poll_read_ready(s, cx),
            Base::Unix(s) => ActixStream::poll_read_ready(s, cx),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<tokio::io::Ready>> {
        match self {
            Base::Tcp(s) => ActixStream::poll_write_ready(s, cx),
            Base::Unix(s) => ActixStream::poll_write_ready(s, cx),
        }
    }
}

enum Inner {
    Plain(Base),
    Tls(Box<tokio_rustls::client::TlsStream<Base>>),
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
            Inner::Plain(s) => s.poll_read_ready(cx),
            Inner::Tls(s) => s.get_ref().0.poll_read_ready(cx),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<tokio::io::Ready>> {
        match &self.inner {
            Inner::Plain(s) => s.poll_write_ready(cx),
            Inner::Tls(s) => s.get_ref().0.poll_write_ready(cx),
        }
    }
}

#[cfg(test)]
#[path = "happy_eyeballs_tests.rs"]
mod happy_eyeballs_tests;
