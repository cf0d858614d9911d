use super::*;
use std::path::Path;

const MINIMAL: &str = r#"
[[upstreams]]
name = "btcusd"
url = "wss://feed.example.com/v1"
"#;

pub(super) fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> ConfigSource {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    ConfigSource::File(path)
}

pub(super) fn load_toml(text: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    load_with_env(&write(&dir, "c.toml", text), Vec::new())
}

/// Defaults follow the SPEC when only the required keys are given.
#[test]
fn defaults_follow_the_spec() {
    let s = load_toml(MINIMAL).unwrap();
    assert_eq!(s.server.listen, "0.0.0.0:9750");
    assert_eq!(s.server.shutdown_timeout, Dur::secs(10));
    assert_eq!(s.subscribers.max_connections, 10_000);
    assert_eq!(s.subscribers.queue_capacity, 1024);
    assert_eq!(s.subscribers.overflow, Overflow::DropOldest);
    assert_eq!(
        s.log.redact_query,
        [
            "token",
            "key",
            "apikey",
            "api_key",
            "access_token",
            "auth",
            "secret",
            "signature",
            "sig",
            "password",
            "passphrase",
            "jwt"
        ]
    );
    let u = &s.upstreams[0];
    assert!(u.required);
    assert_eq!(u.max_message_size, Size::mib(16));
    assert_eq!(u.heartbeat.interval, Dur::secs(20));
    assert_eq!(u.reconnect.initial, Dur::ms(500));
    assert_eq!(u.reconnect.multiplier, 2.0);
    assert_eq!(u.decode.topic, "/type");
    assert_eq!(u.auth.kind, AuthKind::None);
}

/// Each invalid config names the right key path and what is wrong.
#[test]
fn bad_configs_name_the_key() {
    let up = |extra: &str| format!("[[upstreams]]\nname = \"a\"\nurl = \"wss://h/x\"\n{extra}\n");
    let two = |extra: &str| format!("{}[[upstreams]]\nname = \"b\"\nurl = \"wss://h/y\"\n{extra}\n", up(""));
    let cases: Vec<(String, &str, &str)> = vec![
        (
            two("[upstreams.heartbeat]\ninterval = \"5 parsecs\""),
            "upstreams[1].heartbeat.interval",
            "invalid duration \"5 parsecs\"",
        ),
        ("[server]\nlisten = \"nowhere\"".into(), "server.listen", "invalid address"),
        ("[server]\nlistne = \"0.0.0.0:1\"".into(), "server.listne", "unknown field"),
        ("[bogus]\nx = 1".into(), "bogus", "unknown field"),
        ("[server]\nshutdown_timeout = \"0s\"".into(), "server.shutdown_timeout", "greater than 0s"),
        ("[log]\nformat = \"xml\"".into(), "log.format", "unknown variant"),
        ("[subscribers]\noverflow = \"explode\"".into(), "subscribers.overflow", "unknown variant"),
        ("[subscribers]\nqueue_capacity = 0".into(), "subscribers.queue_capacity", "at least 1"),
        (
            "[subscribers]\nallowed_origins = [\"example.com\"]".into(),
            "subscribers.allowed_origins[0]",
            "invalid origin",
        ),
        ("[subscribers]\nauth_token = \"a\"\nauth_token_env = \"B\"".into(), "subscribers.auth_token", "only one"),
        (up("name2 = 1"), "upstreams[0].name2", "unknown field"),
        ("[[upstreams]]\nname = \"Bad Name\"\nurl = \"wss://h/\"".into(), "upstreams[0].name", "invalid name"),
        ("[[upstreams]]\nname = \"a\"\nurl = \"https://h/\"".into(), "upstreams[0].url", "ws:// or wss://"),
        ("[[upstreams]]\nname = \"a\"\nurl = \"ws:///nohost\"".into(), "upstreams[0].url", "invalid url"),
        ("[[upstreams]]\nname = \"a\"".into(), "upstreams[0].url", "missing required key"),
        (up("urls = [\"wss://h/z\"]"), "upstreams[0].urls", "only one of url and urls"),
        (
            "[[upstreams]]\nname = \"a\"\nurls = [\"wss://h/\", \"http://x/\"]".into(),
            "upstreams[0].urls[1]",
            "ws:// or wss://",
        ),
        (up("dedupe_window = 0"), "upstreams[0].dedupe_window", "at least 1"),
        (up("rotate_overlap = \"0s\""), "upstreams[0].rotate_overlap", "greater than 0s"),
        (up("rotate = \"sideways\""), "upstreams[0].rotate", "unknown variant"),
        (up("redundancy = \"some\""), "upstreams[0].redundancy", "unknown variant"),
        (format!("{}{}", up(""), up("")), "upstreams[1].name", "duplicate"),
        (up("max_message_size = \"16 parsecs\""), "upstreams[0].max_message_size", "invalid size"),
        (up("connect_timeout = \"0s\""), "upstreams[0].connect_timeout", "greater than 0s"),
        (up("headers = { \"bad header\" = \"x\" }"), "upstreams[0].headers.bad header", "invalid header name"),
        (up("[upstreams.reconnect]\njitter = 1.5"), "upstreams[0].reconnect.jitter", "[0, 1]"),
        (up("[upstreams.reconnect]\nmultiplier = 0.5"), "upstreams[0].reconnect.multiplier", ">= 1"),
        (up("[upstreams.reconnect]\ninitial = \"10s\"\nmax = \"1s\""), "upstreams[0].reconnect.max", "at least"),
        (up("[upstreams.heartbeat]\ntimeout = \"0s\""), "upstreams[0].heartbeat.timeout", "greater than 0s"),
        (up("[upstreams.auth]\nkind = \"bearer\""), "upstreams[0].auth.token", "needs one of"),
        (
            up("[upstreams.auth]\nkind = \"bearer\"\ntoken = \"t\"\ntoken_env = \"T\""),
            "upstreams[0].auth.token",
            "only one",
        ),
        (up("[upstreams.auth]\nkind = \"basic\"\ntoken = \"t\""), "upstreams[0].auth.username", "required"),
        (up("[upstreams.auth]\nkind = \"header\"\ntoken = \"t\""), "upstreams[0].auth.header_name", "required"),
        (up("[upstreams.auth]\nkind = \"query\"\ntoken = \"t\""), "upstreams[0].auth.param", "required"),
        (
            up("[upstreams.auth]\nkind = \"bearer\"\ntoken = \"t\"\nparam = \"p\""),
            "upstreams[0].auth.param",
            "only applies",
        ),
        (up("[upstreams.auth]\nkind = \"message\"\nmessage = \"hi\""), "upstreams[0].auth.success", "required"),
        (up("[upstreams.auth]\ntoken = \"t\""), "upstreams[0].auth.kind", "kind is none"),
        (up("[upstreams.auth]\nkind = \"magic\""), "upstreams[0].auth.kind", "unknown variant"),
        (
            "[[upstreams]]\nname = \"a\"\nurl = \"ws://h/\"\n[upstreams.tls]\nca_file = \"/x\"".into(),
            "upstreams[0].tls",
            "wss://",
        ),
        (up("[upstreams.tls]\nclient_cert_file = \"/c\""), "upstreams[0].tls.client_key_file", "go together"),
        (up("[upstreams.decode]\ntopic = \"type\""), "upstreams[0].decode.topic", "JSON pointer"),
        (up("[upstreams.decode]\nformat = \"xml\""), "upstreams[0].decode.format", "unknown variant"),
        (format!("{}[[sinks]]\nkind = \"carrier-pigeon\"", up("")), "sinks[0].kind", "unknown variant"),
        (
            format!("{}[[sinks]]\nkind = \"stdout\"\nupstreams = [\"zz\"]", up("")),
            "sinks[0].upstreams[0]",
            "unknown upstream",
        ),
        (format!("{}[[sinks]]\nkind = \"webhook\"\nurl = \"ftp://x\"", up("")), "sinks[0].url", "http://"),
        (
            format!("{}[[sinks]]\nkind = \"webhook\"\nurl = \"http://x/\"\nbatch_size = 0", up("")),
            "sinks[0].batch_size",
            "at least 1",
        ),
    ];
    for (text, key, what) in cases {
        let err = load_toml(&text).expect_err(&text);
        assert_eq!(err.key, key, "wrong key for:\n{text}\n=> {err}");
        assert!(err.message.contains(what), "message {:?} lacks {what:?} for:\n{text}", err.message);
        assert!(err.to_string().contains("c.toml"), "file not named: {err}");
    }
}

/// The SPEC's own example of an error message comes out word for word.
#[test]
fn spec_example_error() {
    let text = format!(
        "{MINIMAL}[[upstreams]]\nname = \"b\"\nurl = \"ws://h/\"\n[upstreams.heartbeat]\ninterval = \"5 parsecs\"\n"
    );
    let err = load_toml(&text).unwrap_err().to_string();
    assert!(err.contains("upstreams[1].heartbeat.interval: invalid duration \"5 parsecs\""), "{err}");
}

/// `WSGATE__A__B` overrides `a.b`; env errors name the variable; arrays of tables refuse.
#[test]
fn env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(&dir, "c.toml", MINIMAL);
    let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();

    let s = load_with_env(
        &src,
        env(&[
            ("WSGATE__SERVER__LISTEN", "127.0.0.1:9000"),
            ("WSGATE__SUBSCRIBERS__QUEUE_CAPACITY", "00123"),
            ("WSGATE__SUBSCRIBERS__ALLOWED_ORIGINS", "https://a.example, https://b.example"),
            ("WSGATE__LOG__FORMAT", "json"),
            ("WSGATE_SUBSCRIBER_TOKEN", "not an override"),
            ("OTHER__SERVER__LISTEN", "1.2.3.4:1"),
        ]),
    )
    .unwrap();
    assert_eq!(s.server.listen, "127.0.0.1:9000");
    assert_eq!(s.subscribers.queue_capacity, 123);
    assert_eq!(s.subscribers.allowed_origins, vec!["https://a.example", "https://b.example"]);
    assert_eq!(s.log.format, LogFormat::Json);

    let err = load_with_env(&src, env(&[("WSGATE__SERVER__LISTEN", "nope")])).unwrap_err();
    assert_eq!(err.key, "server.listen");
    assert!(err.to_string().contains("WSGATE__SERVER__LISTEN"), "{err}");

    let err = load_with_env(&src, env(&[("WSGATE__SERVER__SHUTDOWN_TIMEOUT", "soon")])).unwrap_err();
    assert_eq!(err.key, "server.shutdown_timeout");
    assert!(err.message.contains("WSGATE__SERVER__SHUTDOWN_TIMEOUT"), "{err}");

    let err = load_with_env(&src, env(&[("WSGATE__UPSTREAMS__0__URL", "ws://x/")])).unwrap_err();
    assert_eq!(err.key, "upstreams");
    assert!(err.message.contains("cannot be overridden from the environment"), "{err}");

    let err = load_with_env(&src, env(&[("WSGATE__SERVER__NOPE", "1")])).unwrap_err();
    assert_eq!(err.key, "server.nope");
}

/// YAML and JSON are picked by extension; others are refused.
#[test]
fn formats_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "upstreams:\n  - name: a\n    url: ws://h/\n    heartbeat:\n      interval: 3s\n";
    let s = load_with_env(&write(&dir, "c.yaml", yaml), Vec::new()).unwrap();
    assert_eq!(s.upstreams[0].heartbeat.interval, Dur::secs(3));
    let json = r#"{"upstreams":[{"name":"a","url":"ws://h/","max_message_size":"1KiB"}]}"#;
    let s = load_with_env(&write(&dir, "c.json", json), Vec::new()).unwrap();
    assert_eq!(s.upstreams[0].max_message_size, Size(1024));
    let err = load_with_env(&write(&dir, "c.ini", ""), Vec::new()).unwrap_err();
    assert!(err.message.contains("extension"), "{err}");
    let err = load_with_env(&ConfigSource::File(dir.path().join("missing.toml")), Vec::new()).unwrap_err();
    assert!(err.message.contains("cannot read"), "{err}");
    let err = load_toml("[server\nlisten=").unwrap_err();
    assert!(err.message.contains("cannot parse"), "{err}");
}

/// Secrets, URL passwords and query tokens never reach `check` output.
#[test]
fn check_output_is_redacted() {
    let text = r#"
[subscribers]
auth_token = "sub-secret-1"

[[upstreams]]
name = "a"
url = "wss://user:url-secret-2@h/x?token=query-secret-3&depth=5"
headers = { "X-Api-Key" = "header-secret-4", "X-Client" = "wsgate" }
[upstreams.auth]
kind = "query"
param = "token"
token = "auth-secret-5"

[[sinks]]
kind = "webhook"
url = "https://u:hook-secret-6@hooks.example/in"
auth_token = "hook-secret-7"
"#;
    let s = load_toml(text).unwrap();
    let out = s.to_redacted_toml();
    for secret in [
        "sub-secret-1",
        "url-secret-2",
        "query-secret-3",
        "header-secret-4",
        "auth-secret-5",
        "hook-secret-6",
        "hook-secret-7",
    ] {
        assert!(!out.contains(secret), "{secret} leaked:\n{out}");
    }
    let debug = format!("{s:?}");
    for secret in [
        "user:",
        "sub-secret-1",
        "url-secret-2",
        "query-secret-3",
        "header-secret-4",
        "auth-secret-5",
        "hook-secret-6",
        "hook-secret-7",
        "/in",
    ] {
        assert!(!debug.contains(secret), "{secret} in Debug output:\n{debug}");
    }
    assert!(debug.contains("depth=5") && debug.contains("https://hooks.example:443/***"), "{debug}");
    assert!(out.contains("depth=5") && out.contains("wsgate") && out.contains("***"), "{out}");
    // The printed config is itself a valid config.
    let again = load_toml(&out).unwrap();
    assert_eq!(again.upstreams[0].name, "a");
}

/// The shipped config files are valid.
#[test]
fn shipped_configs_load() {
    for file in ["config/wsgate.toml", "config/example-full.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        load_with_env(&ConfigSource::File(path), Vec::new()).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// `log.redact_query` (from the file or the environment) reaches every
/// upstream's shown URL through `load`; an empty name is refused.
#[test]
fn redact_query_reaches_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[upstreams]]\nname = \"a\"\nurl = \"wss://h/?session=s1&password=p1&apikey=k1&x=1\"\n";
    let src = write(&dir, "c.toml", text);
    let s = load_with_env(&src, vec![("WSGATE__LOG__REDACT_QUERY".into(), "Session, jwt".into())]).unwrap();
    assert_eq!(s.log.redact_query, ["Session", "jwt"]);
    assert_eq!(s.upstreams[0].redacted_url(), "wss://h/?session=***&password=p1&apikey=***&x=1");
    assert!(format!("{:?}", s.upstreams[0]).contains("session=***&password=p1"));
    let s = load_with_env(&src, Vec::new()).unwrap();
    assert_eq!(s.upstreams[0].redacted_url(), "wss://h/?session=s1&password=***&apikey=***&x=1");

    let err = load_toml(&format!("[log]\nredact_query = [\"token\", \" \"]\n{text}")).unwrap_err();
    assert_eq!(err.key, "log.redact_query[1]", "{err}");
}
