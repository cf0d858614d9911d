//! Validation of an upstream's endpoints and links (SPEC §3, §14): `url`
//! or `urls` (exactly one), each a `ws://` or `wss://` URL with a host,
//! and the rotation and redundancy keys.

use http::Uri;

use super::redact::redact_url;
use super::schema::UpstreamConfig;

/// One problem: the key path (below the upstream) and what is wrong.
type Invalid = (String, String);

/// Most endpoints in `urls` (one link each under `redundancy = "all"`).
pub const MAX_URLS: usize = 16;

/// Checks `url` / `urls` and the link keys; returns whether every
/// endpoint is `wss://` (TLS settings apply), or the first problem.
pub fn validate_links(u: &UpstreamConfig) -> Result<bool, Invalid> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    let secure = match (u.url.is_empty(), u.urls.is_empty()) {
        (true, true) => return bad("url", "missing required key (set url, or urls for several endpoints)".into()),
        (false, false) => return bad("urls", "set only one of url and urls".into()),
        (false, true) => check_url(u, &u.url).map_err(|m| ("url".to_string(), m))?,
        (true, false) => {
            if u.urls.len() > MAX_URLS {
                return bad("urls", format!("at most {MAX_URLS} endpoints, got {}", u.urls.len()));
            }
            let mut secure = true;
            for (i, url) in u.urls.iter().enumerate() {
                secure &= check_url(u, url).map_err(|m| (format!("urls[{i}]"), m))?;
            }
            secure
        }
    };
    if u.dedupe_window == 0 {
        return bad("dedupe_window", "must be at least 1".into());
    }
    if u.rotate_overlap.is_zero() {
        return bad("rotate_overlap", "must be greater than 0s".into());
    }
    Ok(secure)
}

/// One endpoint: `Ok(true)` for `wss://`, `Ok(false)` for `ws://`.
fn check_url(u: &UpstreamConfig, url: &str) -> Result<bool, String> {
    let shown = || redact_url(url, &u.redactor, None);
    let secure = if url.starts_with("wss://") {
        true
    } else if url.starts_with("ws://") {
        false
    } else {
        return Err(format!("invalid url {:?} (must start with ws:// or wss://)", shown()));
    };
    let uri: Uri = url.parse().map_err(|_| format!("invalid url {:?}", shown()))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("invalid url {:?}: no host", shown()));
    }
    Ok(secure)
}
