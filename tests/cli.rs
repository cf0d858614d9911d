//! The real binary: exit codes, `check` output, every endpoint, the metric
//! names of SPEC §8, and SIGTERM.

mod support;

use support::Daemon;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{eventually_blocking, free_port, http_get, Feed};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

/// SPEC §8: every family with its type and label names.
const SPEC_METRICS: &[(&str, &str, &[&str])] = &[
    ("wsgate_build_info", "gauge", &["version"]),
    ("wsgate_upstream_up", "gauge", &["upstream"]),
    ("wsgate_upstream_state", "gauge", &["upstream", "state"]),
    ("wsgate_upstream_connects_total", "counter", &["upstream"]),
    ("wsgate_upstream_connect_failures_total", "counter", &["upstream", "reason"]),
    ("wsgate_upstream_disconnects_total", "counter", &["upstream", "reason"]),
    ("wsgate_upstream_messages_total", "counter", &["upstream"]),
    ("wsgate_upstream_bytes_total", "counter", &["upstream"]),
    ("wsgate_upstream_wire_bytes_total", "counter", &["upstream"]),
    ("wsgate_upstream_decode_errors_total", "counter", &["upstream"]),
    ("wsgate_upstream_last_message_timestamp_seconds", "gauge", &["upstream"]),
    ("wsgate_upstream_ping_rtt_seconds", "histogram", &["upstream"]),
    ("wsgate_upstream_downtime_seconds", "histogram", &["upstream"]),
    ("wsgate_subscribers", "gauge", &["kind"]),
    ("wsgate_subscriber_messages_total", "counter", &["kind"]),
    ("wsgate_subscriber_dropped_total", "counter", &["kind", "reason"]),
    ("wsgate_subscriber_disconnects_total", "counter", &["reason"]),
    ("wsgate_fanout_latency_seconds", "histogram", &[]),
];

/// SPEC §8 "Added by §12-§15": checked (type and labels) when present;
/// some exist only when configured (watched topics, links, a cluster).
const SPEC_ADDED_METRICS: &[(&str, &str, &[&str])] = &[
    ("wsgate_upstream_wire_bytes_total", "counter", &["upstream"]),
    ("wsgate_upstream_sequence_gaps_total", "counter", &["upstream"]),
    ("wsgate_upstream_sequence_missed_total", "counter", &["upstream"]),
    ("wsgate_upstream_duplicates_total", "counter", &["upstream"]),
    ("wsgate_topic_last_message_age_seconds", "gauge", &["upstream", "topic"]),
    ("wsgate_topic_stale", "gauge", &["upstream", "topic"]),
    ("wsgate_connect_wait_seconds", "histogram", &[]),
    ("wsgate_upstream_rotations_total", "counter", &["upstream"]),
    ("wsgate_upstream_link_up", "gauge", &["upstream", "link"]),
    ("wsgate_upstream_link_first_total", "counter", &["upstream", "link"]),
    ("wsgate_upstream_link_copies_total", "counter", &["upstream", "link"]),
    ("wsgate_cluster_owned_upstreams", "gauge", &[]),
    ("wsgate_cluster_lease_changes_total", "counter", &["upstream"]),
    ("wsgate_upstream_paused_seconds_total", "counter", &["upstream"]),
];

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("wsgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn output(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env_remove("RUST_LOG").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -TERM failed");
}

/// --version and usage errors follow SPEC §2: 0 and 2.
#[test]
fn version_and_usage() {
    let (code, out, _) = output(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let (code, _, err) = output(&["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = output(&["run", "--config", "/nonexistent/wsgate.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/wsgate.toml") && err.contains("cannot read"), "{err}");
}

/// `check` exits 2 naming the file and key, or prints the config with every secret as ***.
#[test]
fn check_validates_and_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(
        &dir,
        "[[upstreams]]\nname = \"a\"\nurl = \"ws://h/\"\n[upstreams.heartbeat]\ninterval = \"5 parsecs\"\n",
    );
    let (code, _, err) = output(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("wsgate.toml: upstreams[0].heartbeat.interval: invalid duration \"5 parsecs\""), "{err}");

    let good = write_config(
        &dir,
        r#"
[subscribers]
auth_token = "s3cret-sub"
[[upstreams]]
name = "a"
url = "wss://bob:s3cret-url@h/feed?key=s3cret-q"
[upstreams.auth]
kind = "query"
param = "key"
token = "s3cret-tok"
"#,
    );
    let (code, out, err) = output(&["check", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for secret in ["s3cret-sub", "s3cret-url", "s3cret-q", "s3cret-tok"] {
        assert!(!out.contains(secret) && !err.contains(secret), "{secret} leaked:\n{out}{err}");
    }
    assert!(out.contains("wss://***@h/feed?key=***"), "{out}");
}

/// The shipped default config is valid as shipped.
#[test]
fn shipped_default_config_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/wsgate.toml");
    let (code, out, err) = output(&["check", "--config", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[server]"), "{out}");
}

fn exposition_families(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut fams = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap().to_string(), parts.next().unwrap().to_string());
            fams.insert(name, (kind, Vec::new()));
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| fams.get(*f).is_some_and(|(k, _)| k == "histogram")))
            .unwrap_or(name);
        if let Some((_, labels)) = fams.get_mut(family) {
            if let (Some(open), Some(close)) = (line.find('{'), line.find('}')) {
                for pair in line[open + 1..close].split(',') {
                    let label = pair.split('=').next().unwrap().to_string();
                    if label != "le" && !labels.contains(&label) {
                        labels.push(label);
                    }
                }
            }
        }
    }
    fams
}

/// The real binary serves every endpoint, exposes exactly the SPEC §8
/// families with their labels, and on SIGTERM turns /readyz 503 at once,
/// keeps serving through shutdown_delay, then exits 0.
#[test]
fn daemon_endpoints_metrics_and_sigterm() {
    let feed = Feed::start(|mut c| async move {
        c.send_text(r#"{"type":"trade"}"#).await;
        c.drain().await
    });
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        &dir,
        &format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_delay = "1s"
shutdown_timeout = "5s"
[[upstreams]]
name = "feed"
url = "{}"
[[upstreams]]
name = "optional"
url = "ws://127.0.0.1:1/"
required = false
"#,
            feed.url("/")
        ),
    );
    let child = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);

    eventually_blocking(Duration::from_secs(30), "/readyz 200", || {
        http_get(addr, "/readyz").map(|(s, _)| s == 200).unwrap_or(false)
    });
    assert_eq!(http_get(addr, "/healthz").unwrap(), (200, "ok".into()));

    let (code, status) = http_get(addr, "/status").unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let feed_status = &status["upstreams"][0];
    for key in [
        "name",
        "url",
        "state",
        "since",
        "connected_since",
        "last_message_at",
        "messages",
        "reconnects",
        "last_error",
        "rtt_ms",
        "last_close_code",
    ] {
        assert!(feed_status.get(key).is_some(), "/status lacks {key}: {feed_status}");
    }
    assert_eq!(feed_status["state"], "connected");
    assert_eq!(status["upstreams"][1]["required"], false);
    assert!(status["subscribers"].is_object());

    let (code, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let fams = exposition_families(&text);
    for (name, kind, labels) in SPEC_METRICS {
        let (got_kind, got_labels) = fams.get(*name).unwrap_or_else(|| panic!("{name} missing from /metrics"));
        assert_eq!(got_kind, kind, "{name} type");
        let mut want: Vec<_> = labels.iter().map(|l| l.to_string()).collect();
        let mut got = got_labels.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{name} labels");
    }
    for (name, kind, labels) in SPEC_ADDED_METRICS {
        if let Some((got_kind, got_labels)) = fams.get(*name) {
            assert_eq!(got_kind, kind, "{name} type");
            let (mut want, mut got): (Vec<_>, Vec<_>) =
                (labels.to_vec(), got_labels.iter().map(String::as_str).collect());
            want.sort();
            got.sort();
            assert_eq!(got, want, "{name} labels");
        }
    }
    for always in ["wsgate_upstream_sequence_gaps_total", "wsgate_connect_wait_seconds"] {
        assert!(fams.contains_key(always), "{always} missing from /metrics");
    }
    let extra: Vec<_> = fams
        .keys()
        .filter(|n| n.starts_with("wsgate_") && !SPEC_METRICS.iter().chain(SPEC_ADDED_METRICS).any(|(m, _, _)| m == n))
        .collect();
    assert!(extra.is_empty(), "families not in SPEC §8: {extra:?}");
    assert!(fams.contains_key("process_cpu_seconds_total") && fams.contains_key("process_resident_memory_bytes"));
    assert!(text.contains(r#"wsgate_upstream_state{state="connected",upstream="feed"} 1"#), "{text}");
    for state in ["connecting", "authenticating", "backoff", "stopped"] {
        assert!(text.contains(&format!(r#"wsgate_upstream_state{{state="{state}",upstream="feed"}} 0"#)));
    }

    sigterm(&daemon.0);
    let sent = Instant::now();
    eventually_blocking(Duration::from_secs(5), "/readyz 503 during shutdown_delay", || {
        http_get(addr, "/readyz").map(|(s, b)| s == 503 && b.contains("shutting down")).unwrap_or(false)
    });
    assert!(sent.elapsed() < Duration::from_secs(1), "not 503 at once");
    assert_eq!(http_get(addr, "/healthz").unwrap().0, 200, "stopped serving during shutdown_delay");

    let end = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    daemon.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(sent.elapsed() >= Duration::from_secs(1), "exited before shutdown_delay");
    assert!(stderr.contains("Shutdown complete."), "{stderr}");
    // The upstream got our close 1000.
    eventually_blocking(Duration::from_secs(5), "close 1000 at the feed", || feed.log.closes().contains(&1000));
}
