//! `/ws` query strings (SPEC §5): `parse_query` on any text, and the filter
//! the endpoint builds from it.
//!
//! Checked, beyond "no panic": one pair per non-empty `&`-separated part;
//! text without `%` or `+` comes back unchanged; `%XX` of every byte
//! decodes back to the original text; the filter built from the pairs is
//! refused exactly when it would hold more than `max_filters` distinct
//! pairs, and otherwise matches exactly what the lists say.
//!
//! `scripts/fuzz.sh` feeds this target inputs up to 64 KiB with a short
//! time limit per input, so a filter build that grows faster than the
//! query (SPEC §11) is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::fanout::Filter;
use wsgate::subscriber::websocket::parse_query;

/// The default `subscribers.max_filters`.
const MAX_FILTERS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else { return };
    let pairs = parse_query(q);
    assert_eq!(pairs.len(), q.split('&').filter(|p| !p.is_empty()).count());
    if !q.contains(['%', '+']) {
        for ((k, v), part) in pairs.iter().zip(q.split('&').filter(|p| !p.is_empty())) {
            let (pk, pv) = part.split_once('=').unwrap_or((part, ""));
            assert_eq!((k.as_str(), v.as_str()), (pk, pv));
        }
    }
    // Every byte percent-encoded decodes back to the text itself.
    let encoded: String = q.bytes().map(|b| format!("%{b:02X}")).collect();
    let back = parse_query(&format!("k={encoded}"));
    if !q.is_empty() {
        assert_eq!(back, vec![("k".to_string(), q.to_string())]);
    }

    let upstreams: Vec<String> = pairs.iter().filter(|(k, _)| k == "upstream").map(|(_, v)| v.clone()).collect();
    let topics: Vec<String> = pairs.iter().filter(|(k, _)| k == "topic").map(|(_, v)| v.clone()).collect();
    let distinct = |list: &[String]| list.iter().collect::<std::collections::HashSet<_>>().len().max(1);
    let size = distinct(&upstreams) * distinct(&topics);
    let Ok(filter) = Filter::from_lists(&upstreams, &topics, MAX_FILTERS) else {
        assert!(size > MAX_FILTERS, "{size} pairs refused");
        return;
    };
    assert!(size <= MAX_FILTERS);
    assert_eq!(filter.len(), size);
    for (u, t) in pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())) {
        let want = (upstreams.is_empty() || upstreams.iter().any(|x| x == u))
            && (topics.is_empty() || topics.iter().any(|x| x == t));
        assert_eq!(filter.matches(u, t), want, "matches({u:?}, {t:?})");
        assert_eq!(filter.follows(u), upstreams.is_empty() || upstreams.iter().any(|x| x == u));
    }
});
