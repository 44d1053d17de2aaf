//! Rules of the listeners' connection handling: how long an accept loop
//! waits after a failed `accept` (so a process out of descriptors does not
//! spin on a readable listener), how often the failure is logged, the soft
//! `RLIMIT_NOFILE` the provider raises itself to, and whether the
//! connection caps fit under it. The shell (`provider/src/listen.rs`) reads
//! the clock and the limits and acts.

use std::time::Duration;

use crate::log_budget::Budget;

/// Descriptors kept free beyond the listeners' caps: the listeners
/// themselves, OpenBao connections, the registry's state, checkpoint, lock
/// and temporary files, the PKCS#11 module, logging and the runtime.
pub const FD_RESERVE: u64 = 256;

/// Highest soft `RLIMIT_NOFILE` asked for (Linux' default `fs.nr_open`); a
/// hard limit of "unlimited" is not a value `setrlimit` accepts for it.
pub const NOFILE_CEILING: u64 = 1 << 20;

/// First wait after a failed accept, doubled per consecutive failure.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest wait between two accepts while they keep failing.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one `listener.accept_failed` line per listener and cause every
/// 10 s while accepts fail; that line carries the count suppressed before it.
pub const ACCEPT_LOG_BUDGET: Budget = Budget {
    burst: 1,
    window: Duration::from_secs(10),
};

/// Why an `accept` failed, as the `kind` label of
/// `openbao_kms_accept_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptErrorKind {
    /// `EMFILE`: this process is at its `RLIMIT_NOFILE`.
    ProcessFdLimit,
    /// `ENFILE`: the system-wide file table is full.
    SystemFdLimit,
    /// `ENOBUFS`/`ENOMEM`: no kernel memory for the socket.
    Memory,
    /// `ECONNABORTED` and similar: the peer went away before the accept;
    /// only that connection is lost.
    Aborted,
    Other,
}

impl AcceptErrorKind {
    pub const ALL: [Self; 5] = [
        Self::ProcessFdLimit,
        Self::SystemFdLimit,
        Self::Memory,
        Self::Aborted,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProcessFdLimit => "process_fd_limit",
            Self::SystemFdLimit => "system_fd_limit",
            Self::Memory => "memory",
            Self::Aborted => "aborted",
            Self::Other => "other",
        }
    }

    /// Whether retrying at once would fail the same way: the listener stays
    /// readable while the cause lasts, so the loop must wait.
    pub fn persists(self) -> bool {
        !matches!(self, Self::Aborted)
    }
}

/// The wait after each failed accept: none after a lost connection,
/// otherwise [`ACCEPT_BACKOFF_MIN`] doubling per consecutive failure up to
/// [`ACCEPT_BACKOFF_MAX`]; a successful accept starts over.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    consecutive: u32,
}

impl AcceptBackoff {
    pub fn failed(&mut self, kind: AcceptErrorKind) -> Duration {
        if !kind.persists() {
            return Duration::ZERO;
        }
        let wait = ACCEPT_BACKOFF_MIN
            .saturating_mul(1u32 << self.consecutive.min(16))
            .min(ACCEPT_BACKOFF_MAX);
        self.consecutive = self.consecutive.saturating_add(1);
        wait
    }

    pub fn accepted(&mut self) {
        self.consecutive = 0;
    }
}

/// The soft `RLIMIT_NOFILE` to set, if higher than the current one: the
/// hard limit, at most [`NOFILE_CEILING`].
pub fn nofile_target(soft: u64, hard: u64) -> Option<u64> {
    let target = hard.min(NOFILE_CEILING);
    (target > soft).then_some(target)
}

/// The descriptors the listeners may hold at their caps, plus the reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    pub kms: u64,
    /// 0 when the listener is disabled.
    pub health: u64,
    pub metrics: u64,
}

impl FdBudget {
    pub fn needed(&self) -> u64 {
        self.kms + self.health + self.metrics + FD_RESERVE
    }

    /// How many descriptors the soft limit lacks for every listener at its
    /// cap with the reserve still free (`None`: it fits).
    pub fn shortfall(&self, nofile: u64) -> Option<u64> {
        let needed = self.needed();
        (needed > nofile).then(|| needed - nofile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_and_resets_on_success() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<u128> = (0..10)
            .map(|_| b.failed(AcceptErrorKind::ProcessFdLimit).as_millis())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        for _ in 0..100 {
            assert_eq!(b.failed(AcceptErrorKind::SystemFdLimit), ACCEPT_BACKOFF_MAX);
        }
        assert_eq!(
            b.failed(AcceptErrorKind::Aborted),
            Duration::ZERO,
            "a lost connection is not waited for"
        );
        b.accepted();
        assert_eq!(b.failed(AcceptErrorKind::Memory), ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn nofile_is_raised_to_the_hard_limit_within_the_ceiling() {
        assert_eq!(nofile_target(1024, 524_288), Some(524_288));
        assert_eq!(nofile_target(1024, 1024), None);
        assert_eq!(nofile_target(4096, 1024), None);
        assert_eq!(nofile_target(1024, u64::MAX), Some(NOFILE_CEILING));
    }

    #[test]
    fn default_caps_fit_under_the_smallest_common_soft_limit() {
        let defaults = FdBudget {
            kms: 64,
            health: 64,
            metrics: 64,
        };
        assert_eq!(defaults.needed(), 448);
        assert_eq!(defaults.shortfall(1024), None);
        assert_eq!(defaults.shortfall(400), Some(48));
    }

    #[test]
    fn kinds_have_distinct_labels() {
        let labels: std::collections::BTreeSet<_> = AcceptErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), AcceptErrorKind::ALL.len());
    }
}
