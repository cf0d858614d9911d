//! `[cluster]` (SPEC §15): defaults, validation naming the key, environment.

use super::tests::{load_toml, write};
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Off by default, with the SPEC's defaults.
#[test]
fn cluster_defaults_follow_the_spec() {
    let s = load_toml("").unwrap();
    let c = &s.cluster;
    assert!(!c.enabled);
    assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
    assert_eq!((c.node.as_str(), c.bucket.as_str(), c.stream.as_str()), ("", "wsgate_leases", "WSGATE"));
    assert_eq!((c.lease_ttl.get().as_secs(), c.subject_prefix.as_str()), (10, "wsgate"));
}

/// Each bad `[cluster]` key is named, only when the cluster is enabled.
#[test]
fn bad_cluster_keys_are_named() {
    let on = |extra: &str| format!("[cluster]\nenabled = true\n{extra}\n");
    let cases = [
        (on("nats_url = \"http://h:4222\""), "cluster.nats_url", "nats:// or tls://"),
        (on("node = \"a b\""), "cluster.node", "invalid node name"),
        (on("lease_ttl = \"500ms\""), "cluster.lease_ttl", "at least 1s"),
        (on("lease_ttl = \"ten\""), "cluster.lease_ttl", "invalid duration"),
        (on("bucket = \"a.b\""), "cluster.bucket", "invalid bucket name"),
        (on("stream = \"\""), "cluster.stream", "invalid stream name"),
        (on("subject_prefix = \"a.>\""), "cluster.subject_prefix", "invalid subject prefix"),
        (on("leases = 1"), "cluster.leases", "unknown field"),
    ];
    for (text, key, what) in cases {
        let err = load_toml(&text).expect_err(&text);
        assert_eq!(err.key, key, "wrong key for:\n{text}\n=> {err}");
        assert!(err.message.contains(what), "message {:?} lacks {what:?}", err.message);
    }
    assert!(load_toml("[cluster]\nnode = \"a b\"").is_ok(), "not checked while disabled");
    assert!(load_toml(&on("node = \"gw-0\"\nsubject_prefix = \"corp.md\"")).is_ok());
}

/// The cluster is switched on and named from the environment (a pod).
#[test]
fn cluster_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(&dir, "c.toml", "");
    let s = load_with_env(
        &src,
        env(&[
            ("WSGATE__CLUSTER__ENABLED", "true"),
            ("WSGATE__CLUSTER__NODE", "wsgate-1"),
            ("WSGATE__CLUSTER__LEASE_TTL", "3s"),
        ]),
    )
    .unwrap();
    assert!(s.cluster.enabled);
    assert_eq!((s.cluster.node.as_str(), s.cluster.lease_ttl.get().as_secs()), ("wsgate-1", 3));
}

/// `wsgate check` never shows the NATS URL's userinfo.
#[test]
fn cluster_url_is_redacted() {
    let s = load_toml("[cluster]\nenabled = true\nnats_url = \"nats://user:hunter2@nats:4222\"").unwrap();
    let shown = s.to_redacted_toml();
    assert!(!shown.contains("hunter2") && shown.contains("nats_url"), "{shown}");
}
