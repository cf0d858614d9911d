//! Happy Eyeballs (RFC 8305) in `dialer.rs`: [`interleave`] as a table,
//! [`race`] with injected attempts on tokio's paused clock (exact virtual
//! times, no real sleeps), and once with real sockets on loopback.

use super::*;

use std::cell::RefCell;
use std::future::pending;

use tokio::time::Instant;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// What one injected attempt does once started.
#[derive(Clone, Copy)]
enum Plan {
    /// Never answers.
    Hang,
    /// Connects after this many ms.
    Ok(u64),
    /// Fails after this many ms.
    Fail(u64),
}

/// Sets a flag when dropped: proves a losing attempt was let go.
struct DropFlag(Rc<RefCell<Vec<SocketAddr>>>, SocketAddr);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.borrow_mut().push(self.1);
    }
}

/// Runs `race` with the plans (one per address, ports 1..), recording
/// when each attempt started (ms of virtual time) and which were dropped.
async fn run(plans: &[Plan]) -> (Result<u16, Vec<u16>>, Vec<(u16, u64)>, Vec<u16>, u64) {
    let addrs: Vec<SocketAddr> = (1..=plans.len()).map(|i| SocketAddr::from(([127, 0, 0, 1], i as u16))).collect();
    let t0 = Instant::now();
    let started = Rc::new(RefCell::new(Vec::new()));
    let dropped = Rc::new(RefCell::new(Vec::new()));
    let res = race(addrs, ATTEMPT_DELAY, |addr| {
        let plan = plans[usize::from(addr.port()) - 1];
        started.borrow_mut().push((addr.port(), t0.elapsed().as_millis() as u64));
        let guard = DropFlag(Rc::clone(&dropped), addr);
        async move {
            let _guard = guard;
            match plan {
                Plan::Hang => pending().await,
                Plan::Ok(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(addr.port())
                }
                Plan::Fail(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Err(addr.port())
                }
            }
        }
    })
    .await;
    let took = t0.elapsed().as_millis() as u64;
    let dropped = dropped.borrow().iter().map(SocketAddr::port).collect();
    let started = started.borrow().clone();
    (res, started, dropped, took)
}

/// Families alternate from the family of the first address; order
/// within a family is kept.
#[test]
fn interleave_table() {
    let (v6a, v6b, v6c) = (a("[::1]:1"), a("[::2]:1"), a("[::3]:1"));
    let (v4a, v4b) = (a("10.0.0.1:1"), a("10.0.0.2:1"));
    let cases: Vec<(Vec<SocketAddr>, Vec<SocketAddr>)> = vec![
        (vec![], vec![]),
        (vec![v4a], vec![v4a]),
        (vec![v6a, v6b, v4a, v4b], vec![v6a, v4a, v6b, v4b]),
        (vec![v4a, v4b, v6a, v6b], vec![v4a, v6a, v4b, v6b]),
        (vec![v6a, v6b, v6c, v4a], vec![v6a, v4a, v6b, v6c]),
        (vec![v4a, v6a, v6b, v6c, v4b], vec![v4a, v6a, v4b, v6b, v6c]),
        (vec![v6a, v6b, v6c], vec![v6a, v6b, v6c]),
    ];
    for (input, want) in cases {
        assert_eq!(interleave(input.clone()), want, "{input:?}");
    }
}

/// A first address that never answers delays the second by exactly the
/// attempt delay, no more; the hanging attempt is dropped.
#[tokio::test(start_paused = true)]
async fn hanging_first_costs_one_delay() {
    let (res, started, dropped, took) = run(&[Plan::Hang, Plan::Ok(0)]).await;
    assert_eq!(res, Ok(2));
    assert_eq!(started, [(1, 0), (2, 250)]);
    assert_eq!(took, 250);
    assert!(dropped.contains(&1));
}

/// An attempt that fails fast starts the next one at once.
#[tokio::test(start_paused = true)]
async fn fast_failure_starts_next_at_once() {
    let (res, started, _, took) = run(&[Plan::Fail(0), Plan::Ok(0)]).await;
    assert_eq!(res, Ok(2));
    assert_eq!(started, [(1, 0), (2, 0)]);
    assert_eq!(took, 0);
    // A failure while later attempts are pending also starts the next.
    let (res, started, _, _) = run(&[Plan::Fail(100), Plan::Hang, Plan::Ok(0)]).await;
    assert_eq!(res, Ok(3));
    assert_eq!(started, [(1, 0), (2, 100), (3, 350)]);
}

/// When every attempt fails, every error comes back, in failure order.
#[tokio::test(start_paused = true)]
async fn all_fail_returns_every_error() {
    let (res, started, _, took) = run(&[Plan::Fail(600), Plan::Fail(10), Plan::Fail(0)]).await;
    assert_eq!(res, Err(vec![2, 3, 1]));
    assert_eq!(started, [(1, 0), (2, 250), (3, 260)]);
    assert_eq!(took, 600);
    let empty: Result<u16, Vec<u16>> = race(vec![], ATTEMPT_DELAY, |_| async { Ok::<u16, u16>(0) }).await;
    assert_eq!(empty, Err(vec![]));
}

/// A slow first attempt that connects before the second still wins,
/// and the second is dropped.
#[tokio::test(start_paused = true)]
async fn slow_first_can_still_win() {
    let (res, started, dropped, took) = run(&[Plan::Ok(300), Plan::Ok(1000)]).await;
    assert_eq!(res, Ok(1));
    assert_eq!(started, [(1, 0), (2, 250)]);
    assert_eq!(took, 300);
    assert!(dropped.contains(&2));
}

/// Real sockets: a refused address is skipped at once and the next
/// (a listener on loopback) connects.
#[tokio::test]
async fn real_refused_then_listening() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let open = listener.local_addr().unwrap();
    let t0 = std::time::Instant::now();
    let tcp =
        race(vec![closed, open], ATTEMPT_DELAY, |addr| async move { TcpStream::connect(addr).await }).await.unwrap();
    assert_eq!(tcp.peer_addr().unwrap(), open);
    assert!(t0.elapsed() < ATTEMPT_DELAY, "refusal did not start the next attempt at once");
    let err = race(vec![closed], ATTEMPT_DELAY, |addr| async move { TcpStream::connect(addr).await }).await;
    let kinds: Vec<io::ErrorKind> = err.err().unwrap().iter().map(io::Error::kind).collect();
    assert_eq!(kinds, [io::ErrorKind::ConnectionRefused]);
}

/// `Dialer` connects to a listener on loopback through the race.
#[tokio::test]
async fn dialer_connects_on_loopback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dialer = Dialer::new("127.0.0.1", port, None, Duration::from_secs(5)).unwrap();
    let io = dialer.dial().await.unwrap();
    assert!(matches!(io.inner, Inner::Plain(_)));
    drop(listener);
    let err = dialer.dial().await.err().unwrap();
    assert!(matches!(err, TransportError::Tcp(ref t) if t.contains(&port.to_string())), "{err:?}");
}
