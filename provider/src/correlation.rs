//! Time-boxed debug correlation (`logging.debugCorrelation`): for `ttl`
//! after `serve` starts, the log lines of every Encrypt and Decrypt carry
//! `request_uid_hash` (H of kube-apiserver's request `uid`) and
//! `debug_correlation_incident`, on the `kms.request` line (with
//! `debug_correlation_expires_at`) and on the `openbao.request` lines of
//! the OpenBao calls made for that request, which also carry OpenBao's
//! `openbao_request_id`: one grep for the incident id finds the KMS call,
//! its OpenBao calls and, through the request id, OpenBao's audit entries.
//! When the time is up the fields stop by themselves (no restart), and
//! `debug_correlation.expired` is logged.
//!
//! The tag travels with the request as a task-local value, so the OpenBao
//! client needs no parameter for it; a call made on another task (a shared
//! Decrypt led by another request) carries that request's tag.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bao_kms_core::config::DebugCorrelation;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio::time::Instant;

tokio::task_local! {
    static CURRENT: Tag;
}

/// The correlation fields of one request.
#[derive(Debug, Clone)]
pub struct Tag {
    pub request_uid_hash: String,
    pub incident: Arc<str>,
    pub expires_at: Arc<str>,
}

/// The configured window, from the start of `serve`.
#[derive(Debug)]
pub struct Correlation {
    incident: Arc<str>,
    ttl: Duration,
    expires: Instant,
    /// RFC 3339, UTC, whole seconds.
    expires_at: Arc<str>,
}

impl Correlation {
    /// The window opening at `now` (`wall` is the same moment on the wall clock).
    pub fn new(cfg: &DebugCorrelation, now: Instant, wall: SystemTime) -> Self {
        let end = wall + cfg.ttl;
        let secs = end
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let expires_at = OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| secs.to_string());
        Self {
            incident: cfg.incident_id.as_str().into(),
            ttl: cfg.ttl,
            expires: now + cfg.ttl,
            expires_at: expires_at.into(),
        }
    }

    /// The tag of a request with `uid` arriving at `now`; none once expired.
    pub fn tag(&self, uid: &str, now: Instant) -> Option<Tag> {
        (now < self.expires).then(|| Tag {
            request_uid_hash: bao_kms_core::hash::h(uid),
            incident: self.incident.clone(),
            expires_at: self.expires_at.clone(),
        })
    }

    /// Logs the window's opening, then its end (or nothing if `stop` comes first).
    pub async fn announce(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            message = "debug_correlation.enabled",
            debug_correlation_incident = &*self.incident,
            debug_correlation_expires_at = &*self.expires_at,
            ttl_secs = self.ttl.as_secs(),
        );
        tokio::select! {
            () = tokio::time::sleep_until(self.expires) => tracing::info!(
                message = "debug_correlation.expired",
                debug_correlation_incident = &*self.incident,
            ),
            _ = stop.changed() => {}
        }
    }
}

/// Runs `f` with `tag` as the current request's correlation.
pub async fn scope<F: Future>(tag: Option<Tag>, f: F) -> F::Output {
    match tag {
        Some(tag) => CURRENT.scope(tag, f).await,
        None => f.await,
    }
}

/// The correlation of the request this task is serving, if any.
pub fn current() -> Option<Tag> {
    CURRENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tags_until_the_ttl_then_none() {
        let cfg = DebugCorrelation {
            ttl: Duration::from_secs(60),
            incident_id: "INC-7".into(),
        };
        let start = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let c = Correlation::new(&cfg, start, wall);
        let tag = c.tag("uid-1", start + Duration::from_secs(59)).unwrap();
        assert_eq!(tag.request_uid_hash, bao_kms_core::hash::h("uid-1"));
        assert_eq!(&*tag.incident, "INC-7");
        assert_eq!(&*tag.expires_at, "2026-05-28T20:27:40Z");
        assert!(c.tag("uid-1", start + Duration::from_secs(60)).is_none());
        assert!(current().is_none());
        let seen = scope(Some(tag), async { current().map(|t| t.request_uid_hash) }).await;
        assert_eq!(seen, Some(bao_kms_core::hash::h("uid-1")));
    }
}
