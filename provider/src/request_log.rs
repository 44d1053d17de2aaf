//! The budget of per-request warning lines (`kms.request`,
//! `openbao.request`): the decisions are `bao_kms_core::log_budget`'s; this
//! file counts what it suppresses in `openbao_kms_log_lines_suppressed_total`
//! and writes the `log.suppressed` summary lines. The listeners keep their
//! own budget for `listener.accept_failed` and count here.

use std::sync::Mutex;
use std::time::Instant;

use bao_kms_core::log_budget::{Budget, LogBudget};

/// Counts one suppressed line of an event (the metric, given by `metrics`).
pub type CountSuppressed = Box<dyn Fn(&'static str) + Send + Sync>;

pub struct RequestLog {
    budget: Mutex<(Budget, LogBudget)>,
    count_suppressed: CountSuppressed,
}

/// A listener's failed accept (its budget lives in `listen`).
pub const ACCEPT_FAILED: &str = "listener.accept_failed";

/// The events whose suppressed lines are counted (their series exist from
/// the start).
pub const EVENTS: [&str; 3] = ["kms.request", "openbao.request", ACCEPT_FAILED];

impl RequestLog {
    pub fn new(count_suppressed: CountSuppressed) -> Self {
        Self {
            budget: Mutex::new((Budget::DEFAULT, LogBudget::new(Budget::DEFAULT))),
            count_suppressed,
        }
    }

    /// Applies `logging.requestLogBurst` and `logging.requestLogWindow`.
    pub fn set_budget(&self, budget: Budget) {
        *self.budget.lock().unwrap_or_else(|p| p.into_inner()) = (budget, LogBudget::new(budget));
    }

    /// Whether a failure line of `event` with `error_class` is written now;
    /// a suppressed one is counted.
    pub fn admit(&self, event: &'static str, error_class: &'static str) -> bool {
        let (window, admit) = {
            let mut guard = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            let window = guard.0.window;
            (window, guard.1.admit((event, error_class), Instant::now()))
        };
        if admit.suppressed_before > 0 {
            summary(event, error_class, admit.suppressed_before, window.as_secs());
        }
        if !admit.log {
            self.count_suppressed(event);
        }
        admit.log
    }

    /// Counts one suppressed line of `event`.
    pub fn count_suppressed(&self, event: &'static str) {
        (self.count_suppressed)(event);
    }

    /// Writes the summary of every window that ended with lines
    /// suppressed; serve calls this once per window.
    pub fn flush(&self) {
        let (window, ended) = {
            let mut guard = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            (guard.0.window, guard.1.flush(Instant::now()))
        };
        for ((event, error_class), n) in ended {
            summary(event, error_class, n, window.as_secs());
        }
    }

    /// Writes the summary of every key with lines suppressed, whether its
    /// window ended or not: serve calls this when it stops.
    pub fn drain(&self) {
        let (window, all) = {
            let mut guard = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            (guard.0.window, guard.1.drain())
        };
        for ((event, error_class), n) in all {
            summary(event, error_class, n, window.as_secs());
        }
    }

    /// The window serve flushes at.
    pub fn window(&self) -> std::time::Duration {
        self.budget.lock().unwrap_or_else(|p| p.into_inner()).0.window
    }
}

fn summary(event: &'static str, error_class: &'static str, suppressed: u64, window_secs: u64) {
    tracing::warn!(message = "log.suppressed", event, error_class, suppressed, window_secs);
}
