//! What an attempt needs that is secret (SPEC §3, §13): the token (from
//! `auth.token*` or `[upstreams.token_command]`) and the named secrets of
//! `[upstreams.secrets]`. Read at every connect on tokio's blocking pool
//! (`attempt::Files::read`), never on the actor's thread; files re-read,
//! values trimmed, never logged.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::error::LinkError;
use crate::config::{Secret, TokenCommand, UpstreamConfig};

/// The token last produced by `token_command`, and when.
pub type CachedToken = Option<(Secret, Instant)>;

/// The secrets of one attempt.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    /// The token for every auth kind and `{{token}}`.
    pub token: Option<Secret>,
    /// `[upstreams.secrets]` by name.
    pub secrets: HashMap<String, Secret>,
    /// What to remember of `token_command` for the next attempt.
    pub cached: CachedToken,
}

/// Reads the token and the named secrets of `cfg` now (blocking).
pub fn read(cfg: &UpstreamConfig, cached: CachedToken) -> Result<Credentials, LinkError> {
    let (token, cached) = match &cfg.token_command {
        Some(tc) => {
            let fresh = cached.filter(|(_, at)| !tc.refresh.is_zero() && at.elapsed() < tc.refresh.get());
            match fresh {
                Some((t, at)) => (Some(t.clone()), Some((t, at))),
                None => {
                    let t = run(tc)?;
                    (Some(t.clone()), Some((t, Instant::now())))
                }
            }
        }
        None => {
            let t =
                cfg.auth.token_source().resolve().map_err(|e| LinkError::Auth(format!("cannot read token: {e}")))?;
            (t, None)
        }
    };
    let mut secrets = HashMap::with_capacity(cfg.secrets.len());
    for (name, spec) in &cfg.secrets {
        let value = spec
            .source()
            .resolve()
            .map_err(|e| LinkError::Auth(format!("cannot read secret {name:?}: {e}")))?
            .ok_or_else(|| LinkError::Auth(format!("secret {name:?} has no value")))?;
        secrets.insert(name.clone(), value);
    }
    Ok(Credentials { token, secrets, cached })
}

/// Runs `token_command`: its trimmed stdout is the token. A run past the
/// timeout is killed; a failure is reason `auth` and never shows the output.
fn run(tc: &TokenCommand) -> Result<Secret, LinkError> {
    let fail = |why: String| LinkError::Auth(format!("token_command {why}"));
    let (program, args) = tc.command.split_first().ok_or_else(|| fail("is empty".into()))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("cannot start {program:?}: {}", e.kind())))?;
    let mut stdout = child.stdout.take().ok_or_else(|| fail("has no stdout".into()))?;
    // Read on a helper thread so a command that fills its pipe and waits
    // cannot deadlock the timeout below.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.by_ref().take(64 * 1024).read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + tc.timeout.get();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("did not finish within {}", tc.timeout)));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(fail(format!("cannot be waited for: {}", e.kind()))),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(fail(format!("exited with {status}")));
    }
    let text = String::from_utf8(out).map_err(|_| fail("printed something that is not UTF-8".into()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("printed no token".into()));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, SecretSpec};

    fn cfg_with(command: &[&str], timeout_ms: u64, refresh_ms: u64) -> UpstreamConfig {
        let mut cfg = UpstreamConfig::new("a", "ws://h/");
        cfg.token_command = Some(TokenCommand {
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout: Dur::ms(timeout_ms),
            refresh: Dur::ms(refresh_ms),
        });
        cfg
    }

    /// The command's trimmed output is the token; failures are reason auth
    /// and never show the output; a slow command is killed.
    #[test]
    fn token_command_table() {
        let got = read(&cfg_with(&["sh", "-c", "echo '  tok-123  '"], 5000, 0), None).unwrap();
        assert_eq!(got.token.unwrap().expose(), "tok-123");
        for (cmd, says) in [
            (vec!["sh", "-c", "echo secret-out; exit 3"], "exited with"),
            (vec!["sh", "-c", "true"], "printed no token"),
            (vec!["/nonexistent/program"], "cannot start"),
            (vec!["sh", "-c", "sleep 5"], "did not finish within"),
        ] {
            let e = read(&cfg_with(&cmd, 300, 0), None).unwrap_err();
            assert_eq!(e.reason(), crate::model::Reason::Auth);
            assert!(e.to_string().contains(says) && !e.to_string().contains("secret-out"), "{e}");
        }
    }

    /// With `refresh`, the command runs again only once it has passed.
    #[test]
    fn token_command_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("n");
        let script = format!("echo x >> {0}; wc -l < {0}", count.display());
        let cfg = cfg_with(&["sh", "-c", &script], 5000, 60_000);
        let first = read(&cfg, None).unwrap();
        let second = read(&cfg, first.cached.clone()).unwrap();
        assert_eq!(second.token.unwrap().expose(), "1", "cached, not run again");
        let every = cfg_with(&["sh", "-c", &script], 5000, 0);
        assert_eq!(read(&every, first.cached).unwrap().token.unwrap().expose(), "2", "refresh 0: every connect");
    }

    /// Named secrets are resolved, files trimmed and re-read.
    #[test]
    fn named_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, " one \n").unwrap();
        let mut cfg = UpstreamConfig::new("a", "ws://h/");
        cfg.secrets.insert("k".into(), SecretSpec { value: None, env: None, file: Some(file.clone()) });
        assert_eq!(read(&cfg, None).unwrap().secrets["k"].expose(), "one");
        std::fs::write(&file, "two").unwrap();
        assert_eq!(read(&cfg, None).unwrap().secrets["k"].expose(), "two");
    }
}
