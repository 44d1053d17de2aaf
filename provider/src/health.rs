//! The health listener (`/live`, `/ready`, `/status`) and the metrics
//! listener (`/metrics`). Both only read the published snapshot; neither
//! ever calls OpenBao.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bao_kms_core::reason::ReasonCode;
use bao_kms_core::status::{ReadyDocument, StatusDocument};
use serde::Serialize;
use serde_json::json;

use crate::runtime::Engine;

#[derive(Clone)]
pub struct HealthState {
    pub engine: Arc<Engine>,
    /// True while the KMS socket is serving.
    pub live: Arc<AtomicBool>,
    pub version: &'static str,
}

fn json_response(code: StatusCode, body: serde_json::Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn live(State(s): State<HealthState>) -> Response {
    if s.live.load(Ordering::Acquire) {
        json_response(StatusCode::OK, json!({"status": "ok"}))
    } else {
        json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"status": "unavailable"}))
    }
}

fn document<T: Serialize>(code: StatusCode, body: &T) -> Response {
    // The documents are derived structs of strings, numbers and booleans.
    let text = serde_json::to_string(body).expect("a health document serialises to JSON");
    (code, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn ready(State(s): State<HealthState>) -> Response {
    let view = s.engine.view();
    let serving = s.live.load(Ordering::Acquire);
    let mut reasons: Vec<String> = view.reasons.iter().map(|r| r.code.as_str().to_owned()).collect();
    if !serving {
        reasons.push(ReasonCode::SocketUnavailable.as_str().to_owned());
    }
    let ok = reasons.is_empty();
    let body = ReadyDocument {
        status: if ok { "ok" } else { "unavailable" }.to_owned(),
        healthz: if ok { "ok" } else { "unhealthy" }.to_owned(),
        cache_age_ms: view.cache_age.as_millis() as u64,
        stale: view.stale,
        rotation_state: view.published.rotation_state.as_str().to_owned(),
        reasons,
        metadata_error_class: view
            .published
            .metadata_error_class
            .map(|c| c.as_str())
            .unwrap_or("")
            .to_owned(),
        persistence_degraded: view.published.persistence_degraded,
        deep_error_class: view.published.deep_error_class.map(|c| c.as_str().to_owned()),
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    document(code, &body)
}

async fn status(State(s): State<HealthState>) -> Response {
    let view = s.engine.view();
    let p = &view.published;
    let cfg = s.engine.config();
    let body = StatusDocument {
        key_id: view.key_id().map(ToString::to_string).unwrap_or_default(),
        key_id_hash: view.key_id().map(|k| k.hash()).unwrap_or_default(),
        generation: p.generation,
        rotation_state: p.rotation_state.as_str().to_owned(),
        active_version: p.active.version,
        latest_version: p.latest_version,
        pending_version: p.pending_version,
        persistence_degraded: p.persistence_degraded,
        healthy: view.healthy() && s.live.load(Ordering::Acquire),
        reasons: view.reasons.iter().map(ToString::to_string).collect(),
        version: s.version.to_owned(),
        cache_age_seconds: view.cache_age.as_secs_f64(),
        provider_name: cfg.transit.key_id_scope.provider_name.clone(),
        identity_fingerprint: cfg.identity_scope().fingerprint(),
        content_digest: Some(p.content_digest.clone()),
        hold_at_version: cfg.rotation.hold_at_version,
    };
    document(StatusCode::OK, &body)
}

pub fn health_router(state: HealthState) -> Router {
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .with_state(state)
}

async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    engine.refresh_age_metrics();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        engine.metrics().encode(),
    )
        .into_response()
}

pub fn metrics_router(engine: Arc<Engine>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(engine)
}
