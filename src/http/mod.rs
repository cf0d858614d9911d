//! HTTP routes (SPEC §7). Handlers read state through snapshots (`StatusBoard`,
//! `Metrics`) or messages; this module owns no connection.

use std::sync::Arc;

use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::cluster::Owners;
use crate::fanout::Hub;
use crate::health::{self, ProbeTargets};
use crate::telemetry::{Metrics, CONTENT_TYPE};
use crate::upstream::StatusBoard;

/// What every handler can read.
#[derive(Clone)]
pub struct AppState {
    /// Live upstream states and the shutdown flag.
    pub board: Arc<StatusBoard>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Probed by `/healthz`.
    pub hub: Hub,
    /// The upstream actors `/healthz` probes, kept current by the gateway.
    pub probes: ProbeTargets,
    /// In cluster mode: who holds each upstream, for `/status`.
    pub owners: Option<Arc<Owners>>,
}

/// Registers the routes. `/ws` needs a `web::Data<WsEndpoint>` as well.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(page))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/status", web::get().to(status))
        .route("/metrics", web::get().to(metrics))
        .route("/ws", web::get().to(crate::subscriber::websocket::endpoint));
    // The /ws frame layer, echoing: the Autobahn testee (test builds only).
    #[cfg(feature = "test-hooks")]
    cfg.route("/__echo", web::get().to(crate::subscriber::echo::endpoint));
}

/// The status page: self-contained HTML that polls `/status` every second.
const PAGE: &str = include_str!("page.html");

/// `GET /`: the status page.
async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type(ContentType::html()).body(PAGE)
}

/// 200 `ok` while the hub and every upstream actor answer a probe within
/// 1 s; 503 naming those that did not.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match health::probe(&state.hub, &state.probes).await {
        Ok(()) => HttpResponse::Ok().content_type(ContentType::plaintext()).body("ok"),
        Err(late) => HttpResponse::ServiceUnavailable()
            .content_type(ContentType::plaintext())
            .body(format!("not answering within 1s: {}", late.join(", "))),
    }
}

/// 200 when every required upstream is connected; else 503 naming them.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.board.readiness() {
        Ok(()) => HttpResponse::Ok().json(json!({"ready": true})),
        Err(not_ready) => HttpResponse::ServiceUnavailable().json(json!({"ready": false, "not_ready": not_ready})),
    }
}

/// Per-upstream status and subscriber counts.
async fn status(state: web::Data<AppState>) -> HttpResponse {
    let upstreams: Vec<serde_json::Value> = state
        .board
        .upstreams()
        .iter()
        .map(|u| {
            let mut view = json!(u.view());
            if let (Some(owners), Some(obj)) = (&state.owners, view.as_object_mut()) {
                obj.insert("owner".into(), json!(owners.owner(&u.name)));
            }
            view
        })
        .collect();

    let subscribers: serde_json::Map<String, serde_json::Value> =
        state.metrics.subscriber_counts().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let mut body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "shutting_down": state.board.is_shutting_down(),
        "upstreams": upstreams,
        "subscribers": subscribers,
    });
    if let Some(owners) = &state.owners {
        body["cluster"] = json!({"node": owners.node});
    }
    HttpResponse::Ok().json(body)
}

/// Prometheus text format 0.0.4.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type(CONTENT_TYPE).body(state.metrics.encode())
}
