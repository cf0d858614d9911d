//! One connect attempt outside the actor, with the daemon's own code (the
//! token and TLS files, auth, proxy, Unix socket, upgrade), for
//! `wsgate tail --config FILE UPSTREAM` (SPEC §12).

use std::sync::Arc;

use actix_codec::Framed;
use awc::BoxedSocket;

use super::attempt::{encode_query, Attempt, Files};
use super::error::LinkError;
use super::handshake::{Plan, Values};
use crate::config::{scrub, UpstreamConfig};
use crate::transport::deflate::LinkCodec;

/// An upgraded link and what to send first.
pub struct Connected {
    /// The WebSocket framed transport.
    pub framed: Framed<BoxedSocket, LinkCodec>,
    /// The subprotocol the server picked, if any.
    pub protocol: Option<String>,
    /// Sent in order right after the upgrade: the upstream's handshake
    /// steps (the auth message and `on_connect` in the legacy form).
    pub first: Vec<String>,
    /// What must never be shown: the token and the URL's secrets.
    pub secrets: Vec<String>,
}

/// Dials and upgrades once, as the actor does at every (re)connect. Error
/// texts are scrubbed of the token and the URL's secrets.
pub async fn connect_once(cfg: Arc<UpstreamConfig>) -> Result<Connected, LinkError> {
    let mut secrets = cfg.url_secrets();
    let files = Files::read(Arc::clone(&cfg), None).await?;
    let creds = files.creds.clone();
    if let Some(t) = &creds.token {
        secrets.extend([t.expose().to_string(), encode_query(t.expose())]);
    }
    secrets.extend(creds.secrets.values().map(|s| s.expose().to_string()));
    let attempt = Attempt::prepare(&cfg, files)?;
    let up = attempt.run().await.map_err(|e| scrub_error(e, &secrets))?;
    if let Some(p) = up.protocol.as_ref().filter(|p| !cfg.subprotocols.contains(p)) {
        return Err(LinkError::Protocol(format!("server picked subprotocol {p:?}, which was not offered")));
    }
    // The daemon's handshake plan, rendered the same way (the steps are
    // sent in order; their replies are shown like any other message).
    let values = Values { token: creds.token.as_ref(), secrets: &creds.secrets };
    let now = std::time::SystemTime::now();
    let mut first = Vec::new();
    for step in Plan::new(&cfg).steps {
        first.push(step.render(&values, now)?.0);
    }
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
