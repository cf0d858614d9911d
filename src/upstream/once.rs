//! One connect attempt outside the actor, with the daemon's own code (the
//! token and TLS files, auth, proxy, Unix socket, upgrade), for
//! `wsgate tail --config FILE UPSTREAM` (SPEC §12).

use std::sync::Arc;

use actix_codec::Framed;
use awc::BoxedSocket;

use super::attempt::{encode_query, json_escape, Attempt, Files};
use super::error::LinkError;
use crate::config::{scrub, AuthKind, UpstreamConfig};
use crate::transport::deflate::LinkCodec;

/// An upgraded link and what to send first.
pub struct Connected {
    /// The WebSocket framed transport.
    pub framed: Framed<BoxedSocket, LinkCodec>,
    /// The subprotocol the server picked, if any.
    pub protocol: Option<String>,
    /// Sent in order right after the upgrade: the auth message (with the
    /// token) when `auth.kind = "message"`, then `on_connect`.
    pub first: Vec<String>,
    /// What must never be shown: the token and the URL's secrets.
    pub secrets: Vec<String>,
}

/// Dials and upgrades once, as the actor does at every (re)connect. Error
/// texts are scrubbed of the token and the URL's secrets.
pub async fn connect_once(cfg: Arc<UpstreamConfig>) -> Result<Connected, LinkError> {
    let mut secrets = cfg.url_secrets();
    let files = Files::read(Arc::clone(&cfg)).await?;
    let attempt = Attempt::prepare(&cfg, files)?;
    let token = attempt.token.clone();
    if let Some(t) = &token {
        secrets.extend([t.expose().to_string(), encode_query(t.expose())]);
    }
    let up = attempt.run().await.map_err(|e| scrub_error(e, &secrets))?;
    if let Some(p) = up.protocol.as_ref().filter(|p| !cfg.subprotocols.contains(p)) {
        return Err(LinkError::Protocol(format!("server picked subprotocol {p:?}, which was not offered")));
    }
    let mut first = Vec::new();
    if cfg.auth.kind == AuthKind::Message {
        if let Some(template) = &cfg.auth.message {
            let t = token.as_ref().map(|t| json_escape(t.expose())).unwrap_or_default();
            first.push(template.replace("{{token}}", &t));
        }
    }
    first.extend(cfg.on_connect.iter().cloned());
    Ok(Connected { framed: up.framed, protocol: up.protocol, first, secrets })
}

fn scrub_error(e: LinkError, secrets: &[String]) -> LinkError {
    match e {
        LinkError::Tcp(t) => LinkError::Tcp(scrub(&t, secrets)),
        LinkError::Tls(t) => LinkError::Tls(scrub(&t, secrets)),
        LinkError::Proxy(t) => LinkError::Proxy(scrub(&t, secrets)),
        LinkError::Protocol(t) => LinkError::Protocol(scrub(&t, secrets)),
        other => other,
    }
}
