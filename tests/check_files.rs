//! `wsgate check` opens every file the config names (SPEC §11): the real
//! binary, exit 2 naming the key for each problem, exit 0 with `--no-files`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `wsgate check [--no-files] --config <file with text>`: (exit code, stdout, stderr).
fn check(dir: &Path, text: &str, no_files: bool) -> (i32, String, String) {
    let cfg = write(dir, "wsgate.toml", text);
    let mut args = vec!["check"];
    if no_files {
        args.push("--no-files");
    }
    args.extend(["--config", cfg.to_str().unwrap()]);
    let out = Command::new(BIN).args(&args).env_remove("RUST_LOG").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tls_upstream(tls: &str) -> String {
    format!("[[upstreams]]\nname = \"a\"\nurl = \"wss://localhost:1/\"\n[upstreams.tls]\n{tls}\n")
}

/// Asserts exit 2 with `key` and `what` in the message, then exit 0 with `--no-files`.
fn refused_then_skipped(dir: &Path, text: &str, key: &str, what: &str) {
    let (code, out, err) = check(dir, text, false);
    assert_eq!(code, 2, "{key}: stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&format!("wsgate.toml: {key}: ")) && err.contains(what), "{key}: {err}");
    let (code, out, err) = check(dir, text, true);
    assert_eq!(code, 0, "--no-files: {err}");
    assert!(out.contains("[[upstreams]]"), "{out}");
}

/// A missing or garbage CA file is refused, naming `upstreams[0].tls.ca_file`.
#[test]
fn ca_file_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("nope.pem");
    let text = tls_upstream(&format!("ca_file = {:?}", missing.to_str().unwrap()));
    let (_, _, err) = check(d, &text, false);
    assert!(
        err.contains(&format!("upstreams[0].tls.ca_file: cannot read {:?}: No such file or directory", missing)),
        "{err}"
    );
    refused_then_skipped(d, &text, "upstreams[0].tls.ca_file", "cannot read");

    let garbage = write(d, "garbage.pem", "this is not a certificate\n");
    let text = tls_upstream(&format!("ca_file = {:?}", garbage.to_str().unwrap()));
    refused_then_skipped(d, &text, "upstreams[0].tls.ca_file", "no PEM certificate");

    let broken = write(d, "broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let text = tls_upstream(&format!("ca_file = {:?}", broken.to_str().unwrap()));
    refused_then_skipped(d, &text, "upstreams[0].tls.ca_file", "certificate 1 is not usable");
}

/// A real CA (rcgen) passes; so does a matching client certificate and key,
/// while a key of another certificate is refused.
#[test]
fn valid_tls_files_pass() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = write(d, "ca.pem", &support::tls::pki().ca_pem);
    let text = tls_upstream(&format!("ca_file = {:?}", ca.to_str().unwrap()));
    let (code, _, err) = check(d, &text, false);
    assert_eq!(code, 0, "{err}");

    let client = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (cert_pem, key_pem) = client("client-a");
    let (_, other_key_pem) = client("client-b");
    let cert = write(d, "client.pem", &cert_pem);
    let key = write(d, "client.key", &key_pem);
    let other = write(d, "other.key", &other_key_pem);
    let pair = |k: &Path| {
        tls_upstream(&format!(
            "client_cert_file = {:?}\nclient_key_file = {:?}",
            cert.to_str().unwrap(),
            k.to_str().unwrap()
        ))
    };
    let (code, _, err) = check(d, &pair(&key), false);
    assert_eq!(code, 0, "{err}");
    refused_then_skipped(d, &pair(&other), "upstreams[0].tls.client_key_file", "does not go with");
    refused_then_skipped(d, &pair(&cert), "upstreams[0].tls.client_key_file", "no usable PEM private key");
    let text = tls_upstream(&format!(
        "client_cert_file = {:?}\nclient_key_file = {:?}",
        key.to_str().unwrap(),
        key.to_str().unwrap()
    ));
    refused_then_skipped(d, &text, "upstreams[0].tls.client_cert_file", "no PEM certificate");
}

/// Token files are read (a missing or empty one names its key) and never shown.
#[test]
fn token_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let upstream = |path: &Path| {
        format!(
            "[[upstreams]]\nname = \"a\"\nurl = \"ws://h/\"\n[upstreams.auth]\nkind = \"bearer\"\ntoken_file = {:?}\n",
            path.to_str().unwrap()
        )
    };
    let missing = d.join("missing-token");
    refused_then_skipped(d, &upstream(&missing), "upstreams[0].auth.token_file", "No such file or directory");
    let empty = write(d, "empty-token", "  \n");
    refused_then_skipped(d, &upstream(&empty), "upstreams[0].auth.token_file", "is empty");

    let token = write(d, "token", "FILE-SECRET-VALUE\n");
    let (code, out, err) = check(d, &upstream(&token), false);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("FILE-SECRET-VALUE") && !err.contains("FILE-SECRET-VALUE"), "{out}{err}");

    // A named secret's file (SPEC §13) is read the same way.
    let named = |path: &Path| {
        format!(
            "[[upstreams]]\nname = \"a\"\nurl = \"ws://h/\"\n[upstreams.secrets]\napi_secret = {{ file = {:?} }}\n",
            path.to_str().unwrap()
        )
    };
    refused_then_skipped(d, &named(&missing), "upstreams[0].secrets.api_secret.file", "No such file or directory");
    let (code, out, err) = check(d, &named(&token), false);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("FILE-SECRET-VALUE") && !err.contains("FILE-SECRET-VALUE"), "{out}{err}");
}

/// Every problem is reported at once, each with its key: the subscriber and
/// webhook token files, and a file sink in a directory that does not exist.
#[test]
fn sinks_and_subscriber_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = format!(
        r#"
[subscribers]
auth_token_file = {sub:?}
[[upstreams]]
name = "a"
url = "ws://h/"
[[sinks]]
kind = "file"
path = {sink:?}
[[sinks]]
kind = "webhook"
url = "http://127.0.0.1:1/hook"
auth_token_file = {hook:?}
"#,
        sub = d.join("no-sub-token").to_str().unwrap(),
        sink = d.join("no-such-dir/out.jsonl").to_str().unwrap(),
        hook = d.join("no-hook-token").to_str().unwrap(),
    );
    let (code, _, err) = check(d, &text, false);
    assert_eq!(code, 2, "{err}");
    for key in ["subscribers.auth_token_file", "sinks[0].path", "sinks[1].auth_token_file"] {
        assert!(err.contains(&format!("wsgate.toml: {key}: ")), "{key} not named:\n{err}");
    }
    assert!(err.contains("does not exist"), "{err}");
    refused_then_skipped(d, &text, "sinks[0].path", "no-such-dir");

    // A writable directory passes, and the sink file is not created by check.
    let text = format!(
        "[[upstreams]]\nname = \"a\"\nurl = \"ws://h/\"\n[[sinks]]\nkind = \"file\"\npath = {:?}\n",
        d.join("out.jsonl").to_str().unwrap()
    );
    let (code, _, err) = check(d, &text, false);
    assert_eq!(code, 0, "{err}");
    assert!(!d.join("out.jsonl").exists());
}
