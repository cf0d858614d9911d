//! Subscriber auth for `/ws` (SPEC §5, §11): the token, where it comes
//! from, when it is read again, and the fail-closed rule.
//!
//! - The token is compared in constant time ([`SubscriberSettings::admits`]).
//! - With no token and a listener that is not loopback, `run` refuses to
//!   start unless `subscribers.anonymous = true` ([`refuse_open`]).
//! - `subscribers.auth_token_file` is watched ([`watch_token_file`]): a
//!   rotated Kubernetes Secret applies within a second, without a signal.
//!   The file is read through tokio's blocking pool, never on an actor's
//!   thread.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::config::{Secret, SecretError, Settings, SubscribersConfig};

/// How often the token file is looked at for a change.
const TOKEN_FILE_POLL: Duration = Duration::from_secs(1);
/// Every this many looks, the token file is read even if it looks unchanged.
const FORCE_READ_EVERY: u32 = 10;

/// The file's inode number (0 where there is none).
fn inode(meta: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::ino(meta)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// `[subscribers]` plus the token read from its source.
#[derive(Debug, Clone)]
pub struct SubscriberSettings {
    /// The config section.
    pub cfg: SubscribersConfig,
    /// The token subscribers must present; `None` = open.
    pub token: Option<Secret>,
}

impl SubscriberSettings {
    /// Resolves the token. An `auth_token_env` naming an unset variable
    /// leaves the endpoint open (SPEC: "unset = open"; [`Self::warn_if_open`]
    /// says so once it is allowed); whether open is allowed at all is
    /// [`refuse_open`]'s question.
    pub fn resolve(cfg: &SubscribersConfig) -> anyhow::Result<Self> {
        let token = match cfg.token_source().resolve() {
            Ok(t) => t,
            Err(SecretError::EnvMissing(_)) if cfg.auth_token_env.is_some() => None,
            Err(e) => anyhow::bail!("subscribers.auth_token: {e}"),
        };
        Ok(SubscriberSettings { cfg: cfg.clone(), token })
    }

    /// Warns (once per start or reload, after [`refuse_open`] allowed it)
    /// when a token variable is named but not set, so `/ws` is open.
    pub fn warn_if_open(&self) {
        if let (None, Some(var)) = (&self.token, &self.cfg.auth_token_env) {
            warn!(variable = %var, "Subscriber auth is off: the token variable is not set, so /ws is open.");
        }
    }

    /// True when `presented` (from `Authorization: Bearer` or `?token=`)
    /// opens `/ws`: always when no token is configured, else when it is
    /// the token, compared in constant time.
    pub fn admits(&self, presented: Option<&str>) -> bool {
        match &self.token {
            None => true,
            Some(token) => presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.expose().as_bytes()))),
        }
    }
}

/// True when `listen` only accepts connections from this machine.
pub fn is_loopback(listen: &str) -> bool {
    listen.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
}

/// Fail closed (SPEC §11): `Some(sentence)` when `/ws` would be open to the
/// network: no token resolved, a listener that is not loopback, and
/// `subscribers.anonymous` not set. `run` prints the sentence and exits 2.
pub fn refuse_open(settings: &Settings, resolved: &SubscriberSettings) -> Option<String> {
    if resolved.token.is_some() || settings.subscribers.anonymous || is_loopback(&settings.server.listen) {
        return None;
    }
    let from = match (&settings.subscribers.auth_token_env, &settings.subscribers.auth_token_file) {
        (Some(var), _) => format!("set the environment variable {var} (named by subscribers.auth_token_env)"),
        (None, Some(path)) => format!("put a token in {} (subscribers.auth_token_file)", path.display()),
        (None, None) => "set subscribers.auth_token_env (or auth_token_file) to a subscriber token".into(),
    };
    Some(format!(
        "refusing to serve /ws without a subscriber token on {}, which is not a loopback address: {from}, \
         or set subscribers.anonymous = true to let anyone subscribe.",
        settings.server.listen
    ))
}

/// Keeps the token of `subscribers.auth_token_file` current: looks at the
/// file every second and reads it again when its length or modification
/// time changed. A file that is gone or empty keeps the last good token
/// (fail closed), with a warning. Runs until the returned future is dropped.
pub async fn watch_token_file(settings: Arc<RwLock<SubscriberSettings>>) {
    let mut seen: Option<(PathBuf, u64, u64, Option<SystemTime>)> = None;
    let mut ticks: u32 = 0;
    let mut tick = tokio::time::interval(TOKEN_FILE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let path = settings.read().unwrap_or_else(|p| p.into_inner()).cfg.auth_token_file.clone();
        let Some(path) = path else {
            seen = None;
            continue;
        };
        let Ok(meta) = tokio::fs::metadata(&path).await else { continue };
        // The inode tells a swapped-in file (a kubelet Secret update, a
        // rename); length and mtime an in-place edit. Timestamps can be
        // coarse, so the file is also read every FORCE_READ_EVERY ticks.
        let stamp = (path.clone(), inode(&meta), meta.len(), meta.modified().ok());
        ticks = ticks.wrapping_add(1);
        if seen.as_ref() == Some(&stamp) && ticks % FORCE_READ_EVERY != 0 {
            continue;
        }
        seen = Some(stamp);
        // Read whenever the file looks different (the first look included:
        // it may have changed since the start read it); apply when the token did.
        match tokio::fs::read_to_string(&path).await {
            Ok(text) if !text.trim().is_empty() => {
                let mut s = settings.write().unwrap_or_else(|p| p.into_inner());
                let changed = s.token.as_ref().is_none_or(|t| t.expose() != text.trim());
                if s.cfg.auth_token_file.as_ref() == Some(&path) && changed {
                    s.token = Some(Secret::new(text.trim()));
                    info!(path = %path.display(), "Subscriber token file changed; the new token applies to new subscribers.");
                }
            }
            Ok(_) => warn!(path = %path.display(), "Subscriber token file is empty; keeping the previous token."),
            Err(e) => {
                warn!(path = %path.display(), error = %e.kind(), "Cannot read the subscriber token file; keeping the previous token.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(listen: &str, anonymous: bool) -> Settings {
        let mut s = Settings::default();
        s.server.listen = listen.into();
        s.subscribers.anonymous = anonymous;
        s.subscribers.auth_token_env = Some("WSGATE_TEST_UNSET_TOKEN_VARIABLE".into());
        s
    }

    /// Open on the network only with `anonymous`; loopback is always fine;
    /// the refusal names both keys.
    #[test]
    fn fail_closed_table() {
        let open = SubscriberSettings { cfg: SubscribersConfig::default(), token: None };
        let locked = SubscriberSettings { cfg: SubscribersConfig::default(), token: Some(Secret::new("t")) };
        for (listen, anonymous, resolved, refused) in [
            ("0.0.0.0:9750", false, &open, true),
            ("10.1.2.3:9750", false, &open, true),
            ("[::]:9750", false, &open, true),
            ("0.0.0.0:9750", true, &open, false),
            ("0.0.0.0:9750", false, &locked, false),
            ("127.0.0.1:9750", false, &open, false),
            ("127.0.0.2:9750", false, &open, false),
            ("[::1]:9750", false, &open, false),
        ] {
            let got = refuse_open(&settings(listen, anonymous), resolved);
            assert_eq!(got.is_some(), refused, "{listen} {anonymous}");
            if let Some(text) = got {
                assert!(
                    text.contains("subscribers.auth_token_env") && text.contains("subscribers.anonymous"),
                    "{text}"
                );
                assert!(text.contains("WSGATE_TEST_UNSET_TOKEN_VARIABLE"), "{text}");
            }
        }
    }

    /// The token is required exactly when configured.
    #[test]
    fn admits_only_the_token() {
        let open = SubscriberSettings { cfg: SubscribersConfig::default(), token: None };
        assert!(open.admits(None));
        let locked = SubscriberSettings { cfg: SubscribersConfig::default(), token: Some(Secret::new("s3cret")) };
        assert!(locked.admits(Some("s3cret")));
        assert!(!locked.admits(Some("s3cre")));
        assert!(!locked.admits(Some("")));
        assert!(!locked.admits(None));
    }
}
