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

async fn ready(State(s): State<HealthState>) -> Response {
    let view = s.engine.view();
    let serving = s.live.load(Ordering::Acquire);
    let mut reasons: Vec<&str> = view.reasons.iter().map(|r| r.code).collect();
    if !serving {
        reasons.push("socket_unavailable");
    }
    let ok = reasons.is_empty();
    let mut body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "healthz": if ok { "ok" } else { "unhealthy" },
        "cache_age_ms": view.cache_age.as_millis() as u64,
        "stale": view.stale,
        "rotation_state": view.published.rotation_state.as_str(),
        "reasons": reasons,
        "metadata_error_class": view.published.metadata_error_class.map(|c| c.as_str()).unwrap_or(""),
        "persistence_degraded": view.published.persistence_degraded,
    });
    if let Some(deep) = view.published.deep_error_class {
        body["deep_error_class"] = json!(deep.as_str());
    }
    json_response(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

async fn status(State(s): State<HealthState>) -> Response {
    let view = s.engine.view();
    let p = &view.published;
    let key_id = view.key_id().map(ToString::to_string).unwrap_or_default();
    let key_id_hash = view.key_id().map(|k| k.hash()).unwrap_or_default();
    json_response(
        StatusCode::OK,
        json!({
            "keyID": key_id,
            "keyIDHash": key_id_hash,
            "generation": p.generation,
            "rotationState": p.rotation_state.as_str(),
            "activeVersion": p.active.version,
            "latestVersion": p.latest_version,
            "pendingVersion": p.pending_version,
            "persistenceDegraded": p.persistence_degraded,
            "healthy": view.healthy() && s.live.load(Ordering::Acquire),
            "reasons": view.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "version": s.version,
            "cacheAgeSeconds": view.cache_age.as_secs_f64(),
            "providerName": s.engine.config().transit.key_id_scope.provider_name,
            "identityFingerprint": s.engine.config().identity_scope().fingerprint(),
        }),
    )
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
