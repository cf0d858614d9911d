//! Socket options, in one place: on the sockets we dial (upstreams, the
//! webhook) and on the sockets `/ws` accepts. Each option is best effort:
//! a platform that refuses one keeps the default.

use std::any::Any;
use std::time::Duration;

use actix_rt::net::TcpStream;
use socket2::{SockRef, TcpKeepalive};

/// Idle time before the first keepalive probe on a dialed socket.
const KEEPALIVE_TIME: Duration = Duration::from_secs(30);
/// Time between keepalive probes on a dialed socket.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Send buffer of an accepted subscriber socket: small, so a client that
/// stops reading fills it soon and `TCP_USER_TIMEOUT` can end it.
const ACCEPTED_SEND_BUFFER: usize = 64 * 1024;

/// A dialed socket: no Nagle delay, keepalive, and a user timeout, so the
/// kernel also gives up on a dead peer.
pub fn tune_dialed(tcp: &TcpStream, user_timeout: Duration) {
    let sock = SockRef::from(tcp);
    let _ = sock.set_nodelay(true);
    let ka = TcpKeepalive::new().with_time(KEEPALIVE_TIME).with_interval(KEEPALIVE_INTERVAL);
    let _ = sock.set_tcp_keepalive(&ka);
    set_user_timeout(&sock, user_timeout);
}

/// Small send buffer and a user timeout on every accepted socket (given as
/// actix-web's `on_connect` hands it over), so a client that never reads
/// is closed by the kernel and frees its memory. Not a TCP socket: nothing.
pub fn tune_accepted(conn: &dyn Any, stall: Duration) {
    if let Some(tcp) = conn.downcast_ref::<TcpStream>() {
        let sock = SockRef::from(tcp);
        let _ = sock.set_nodelay(true);
        let _ = sock.set_send_buffer_size(ACCEPTED_SEND_BUFFER);
        set_user_timeout(&sock, stall);
    }
}

/// `TCP_USER_TIMEOUT` where the platform has it (Linux); elsewhere nothing.
fn set_user_timeout(sock: &SockRef<'_>, timeout: Duration) {
    #[cfg(target_os = "linux")]
    let _ = sock.set_tcp_user_timeout(Some(timeout));
    #[cfg(not(target_os = "linux"))]
    let _ = (sock, timeout);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Both kinds of socket get their options; an accepted one is
    /// recognised through `Any` as actix-web hands it over.
    #[actix_rt::test]
    async fn options_are_set() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dialed = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();

        tune_dialed(&dialed, Duration::from_secs(7));
        let sock = SockRef::from(&dialed);
        assert!(sock.nodelay().unwrap() && sock.keepalive().unwrap());
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(Duration::from_secs(7)));

        tune_accepted(&accepted as &dyn Any, Duration::from_secs(3));
        let sock = SockRef::from(&accepted);
        assert!(sock.nodelay().unwrap());
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(Duration::from_secs(3)));

        tune_accepted(&42u8 as &dyn Any, Duration::from_secs(3));
    }
}
