//! Real proxy servers from Debian packages (installed by
//! scripts/install-test-tools.sh): tinyproxy (HTTP CONNECT) and microsocks
//! (SOCKS5), each on 127.0.0.1 with a free port, stopped by PID on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A proxy process the test started; killed (by its PID) when dropped.
pub struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Where the proxy logs (tinyproxy's log file, microsocks' stdout).
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// The proxy's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of `name` on PATH (or /usr/sbin, /usr/bin), if installed.
pub fn installed(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Prints the one skip line and returns `None` when `name` is absent.
pub fn require(name: &str, package: &str) -> Option<PathBuf> {
    let found = installed(name);
    if found.is_none() {
        eprintln!(
            "SKIPPED: {name} is not installed (Debian package {package}; scripts/install-test-tools.sh installs it)"
        );
    }
    found
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(Instant::now() < end, "{what} not listening on {addr} within 10s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// tinyproxy in the foreground, with `BasicAuth user password` when given.
pub fn tinyproxy(bin: &Path, auth: Option<(&str, &str)>) -> ProxyProcess {
    let dir = tempfile::tempdir().unwrap();
    let port = super::free_port();
    let log = dir.path().join("tinyproxy.log");
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 50\nAllow 127.0.0.1\n",
        log.display()
    );
    if let Some((user, pass)) = auth {
        conf.push_str(&format!("BasicAuth {user} {pass}\n"));
    }
    let conf_path = dir.path().join("tinyproxy.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr, &mut child, "tinyproxy");
    ProxyProcess { child, addr, log, _dir: dir }
}

/// microsocks (SOCKS5), requiring `-u user -P password` when given; its
/// per-connection log lines ("connected to host:port") go to a file,
/// line-buffered through stdbuf.
pub fn microsocks(bin: &Path, auth: Option<(&str, &str)>) -> ProxyProcess {
    let dir = tempfile::tempdir().unwrap();
    let port = super::free_port();
    let log = dir.path().join("microsocks.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "-eL"]).arg(bin).args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((user, pass)) = auth {
        cmd.args(["-u", user, "-P", pass]);
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr, &mut child, "microsocks");
    ProxyProcess { child, addr, log, _dir: dir }
}

/// `tests/support/py/ws_server.py` (Python `websockets`) as a child process.
pub struct PyServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// The Unix socket path, with `--unix`.
    pub socket: PathBuf,
    /// The TCP port, without `--unix`.
    pub port: u16,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether python3 with the `websockets` library is there (one skip line if not).
pub fn require_py_websockets() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import websockets"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED: python3 with the websockets library is not installed (scripts/install-test-tools.sh installs it)"
        );
    }
    ok
}

/// Starts the Python server on a Unix socket (`unix`) or a free TCP port,
/// with `env` (`WS_SEND`, `WS_COMPRESSION`), and waits for its "ready".
pub fn py_server(unix: bool, env: &[(&str, &str)]) -> PyServer {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("feed.sock");
    let port = super::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/py/ws_server.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    if unix {
        cmd.arg("--unix").arg(&socket);
    } else {
        cmd.arg("--port").arg(port.to_string());
    }
    cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    assert_eq!(line.trim(), "ready", "the Python server did not start");
    PyServer { child, _dir: dir, socket, port }
}
