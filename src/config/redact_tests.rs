//! Unit tests of `redact.rs`: what of a URL may be shown (SPEC §11).

use super::*;

/// Every rule of SPEC §11 on upstream URLs, one row each.
#[test]
fn redacts_urls() {
    let r = Redactor::default();
    for (url, param, want) in [
        // nothing secret
        ("wss://h/p", None, "wss://h/p"),
        ("wss://h:9/p?a=1&b", None, "wss://h:9/p?a=1&b"),
        // userinfo, both forms, always
        ("wss://u:pw@h:1/p?a=1", None, "wss://***@h:1/p?a=1"),
        ("wss://u@h/p", None, "wss://***@h/p"),
        ("ws://u:p@w@h/", None, "ws://***@h/"),
        ("ws://u:pa#ss@h/p", None, "ws://***@h/p"),
        ("ws://u:pa?ss@h", None, "ws://***@h"),
        // redact_query names, case-insensitive
        ("wss://h/p?apikey=s&x=1", None, "wss://h/p?apikey=***&x=1"),
        ("wss://h/p?APIKEY=s&Jwt=t&auth=u", None, "wss://h/p?APIKEY=***&Jwt=***&auth=***"),
        ("wss://h/p?password=s&passphrase=t", None, "wss://h/p?password=***&passphrase=***"),
        ("wss://h/p?api%5Fkey=s", None, "wss://h/p?api%5Fkey=***"),
        // anything containing token, key, secret or sig
        ("wss://h/p?my_token=s&monkey=t", None, "wss://h/p?my_token=***&monkey=***"),
        ("wss://h/p?ClientSecret=s&xsig=t&x=1", None, "wss://h/p?ClientSecret=***&xsig=***&x=1"),
        ("wss://h/p?tokenx=abc", None, "wss://h/p?tokenx=***"),
        // not secret: author is not auth, a name without a value
        ("wss://h/p?author=me&token", None, "wss://h/p?author=me&token"),
        // the query-auth parameter
        ("wss://h/p?access=abc&x=1", Some("access"), "wss://h/p?access=***&x=1"),
        ("wss://h/p?ACCESS=abc", Some("access"), "wss://h/p?ACCESS=***"),
        ("wss://h/p?access=abc", None, "wss://h/p?access=abc"),
        // fragments
        ("wss://h/p?x=1&token=abc#f", None, "wss://h/p?x=1&token=***#f"),
        ("wss://h/p#access_token=abc&state=1", None, "wss://h/p#access_token=***&state=1"),
        // unparseable input keeps its secrets hidden too
        ("not a url?token=s", None, "not a url?token=***"),
        ("u:pw@h/p", None, "u:pw@h/p"),
        ("wss://u:pw@", None, "wss://***@"),
        ("", None, ""),
    ] {
        assert_eq!(redact_url(url, &r, param), want, "{url}");
    }
}

/// A configured list replaces the default names; the contains rule stays.
#[test]
fn custom_redact_query() {
    let r = Redactor::new(&["Session"]);
    assert_eq!(redact_url("ws://h/?session=a&jwt=b&api_key=c", &r, None), "ws://h/?session=***&jwt=b&api_key=***");
    let none = Redactor::new::<&str>(&[]);
    assert_eq!(redact_url("ws://h/?password=a&sig=b", &none, None), "ws://h/?password=a&sig=***");
}

/// Webhook URLs show scheme, host and port only.
#[test]
fn redacts_webhook_urls() {
    for (url, want) in [
        ("http://127.0.0.1:8080/hook/abc?x=1", "http://127.0.0.1:8080/***"),
        ("https://hooks.example/services/T0/B0/XX", "https://hooks.example:443/***"),
        ("http://u:p@hook.example/in", "http://hook.example:80/***"),
        ("http://hook.example", "http://hook.example:80/***"),
        ("https://[::1]/x", "https://[::1]:443/***"),
        ("https://[::1]:8443/x", "https://[::1]:8443/***"),
        ("ftp://h/x", "ftp://h/***"),
        ("not a url", "***"),
        ("http:///path", "***"),
    ] {
        assert_eq!(redact_webhook_url(url), want, "{url}");
    }
}

/// Secret parts of a URL are found, raw and decoded, for scrubbing.
#[test]
fn secrets_and_scrub() {
    let r = Redactor::default();
    let s = r.secrets_in("ws://usr:pwd@h/p?apikey=a%2Fb&x=keep&sig=zzz&key=q", None);
    for want in ["usr:pwd", "usr", "pwd", "a%2Fb", "a/b", "zzz"] {
        assert!(s.contains(&want.to_string()), "{want} in {s:?}");
    }
    assert!(!s.contains(&"keep".to_string()) && !s.contains(&"q".to_string()), "{s:?}");
    let text = "GET ws://usr:pwd@h/p?apikey=a%2Fb&x=keep&sig=zzz failed";
    assert_eq!(scrub(text, &s), "GET ws://***@h/p?apikey=***&x=keep&sig=*** failed");
    assert_eq!(scrub("abc", &[String::new()]), "abc");
}

/// Header names that carry credentials.
#[test]
fn secret_headers() {
    let r = Redactor::default();
    for name in ["Authorization", "X-Api-Key", "Cookie", "X-Auth-Token", "X-Signature", "X-JWT"] {
        assert!(r.is_secret_header(name), "{name}");
    }
    for name in ["X-Client", "User-Agent", "Accept"] {
        assert!(!r.is_secret_header(name), "{name}");
    }
}

/// Percent-decoding keeps invalid input as written.
#[test]
fn decoding() {
    assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
    assert_eq!(percent_decode("%ff"), "%ff");
}
