//! How many per-request warning lines reach the log. Anyone who can reach
//! the KMS socket can make every request fail (an unknown key_id, a
//! tampered annotation); one line per failure would let them fill the
//! node's disk. Each (event, error class) pair may log `burst` lines per
//! `window`; the rest are counted, and when the window ends the count is
//! handed out once for a summary line. Metrics still count every request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lines let through per key and window, and the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub burst: u32,
    pub window: Duration,
}

impl Budget {
    pub const DEFAULT: Budget = Budget {
        burst: 10,
        window: Duration::from_secs(10),
    };
}

/// What a line is: its event (`kms.request`, `openbao.request`) and class.
pub type Key = (&'static str, &'static str);

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// The decision for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// Write this line.
    pub log: bool,
    /// Lines of this key suppressed in its previous window, to report in a
    /// summary line now (only once per window, only when not zero).
    pub suppressed_before: u64,
}

/// The windows of every key seen; the key space is bounded (events x
/// error classes).
#[derive(Debug)]
pub struct LogBudget {
    budget: Budget,
    windows: HashMap<Key, Window>,
}

impl LogBudget {
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            windows: HashMap::new(),
        }
    }

    /// Whether a line of `key` at `now` is written.
    pub fn admit(&mut self, key: Key, now: Instant) -> Admit {
        let budget = self.budget;
        let w = self.windows.entry(key).or_insert(Window {
            started: now,
            logged: 0,
            suppressed: 0,
        });
        let mut suppressed_before = 0;
        if now.saturating_duration_since(w.started) >= budget.window {
            suppressed_before = w.suppressed;
            *w = Window {
                started: now,
                logged: 0,
                suppressed: 0,
            };
        }
        let log = w.logged < budget.burst;
        if log {
            w.logged += 1;
        } else {
            w.suppressed += 1;
        }
        Admit { log, suppressed_before }
    }

    /// The keys whose window ended with lines suppressed, with their
    /// counts; those windows are closed (a later line opens a new one).
    pub fn flush(&mut self, now: Instant) -> Vec<(Key, u64)> {
        let window = self.budget.window;
        let mut ended: Vec<(Key, u64)> = Vec::new();
        self.windows.retain(|key, w| {
            if now.saturating_duration_since(w.started) < window {
                return true;
            }
            if w.suppressed > 0 {
                ended.push((*key, w.suppressed));
            }
            false
        });
        ended.sort_unstable();
        ended
    }

    /// Every key's suppressed count, ended windows or not, closing all of
    /// them: at shutdown, so no suppressed line goes unreported.
    pub fn drain(&mut self) -> Vec<(Key, u64)> {
        let mut all: Vec<(Key, u64)> = self
            .windows
            .drain()
            .filter(|(_, w)| w.suppressed > 0)
            .map(|(key, w)| (key, w.suppressed))
            .collect();
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = ("kms.request", "key_id_unknown");
    const OTHER: Key = ("kms.request", "aad_mismatch");

    fn budget(burst: u32) -> LogBudget {
        LogBudget::new(Budget {
            burst,
            window: Duration::from_secs(10),
        })
    }

    #[test]
    fn a_burst_is_logged_then_counted() {
        let mut b = budget(3);
        let t0 = Instant::now();
        let logged = (0..100).filter(|_| b.admit(KEY, t0).log).count();
        assert_eq!(logged, 3);
        // Another class has its own budget.
        assert!(b.admit(OTHER, t0).log);
        // Nothing is reported before the window ends.
        assert_eq!(b.flush(t0 + Duration::from_secs(9)), vec![]);
        assert_eq!(b.flush(t0 + Duration::from_secs(10)), vec![(KEY, 97)]);
        // Reported once; the next line opens a fresh window.
        assert_eq!(b.flush(t0 + Duration::from_secs(30)), vec![]);
        let next = b.admit(KEY, t0 + Duration::from_secs(31));
        assert_eq!(
            next,
            Admit {
                log: true,
                suppressed_before: 0
            }
        );
    }

    #[test]
    fn a_line_after_the_window_carries_the_count_when_no_flush_ran() {
        let mut b = budget(1);
        let t0 = Instant::now();
        assert!(b.admit(KEY, t0).log);
        assert!(!b.admit(KEY, t0 + Duration::from_secs(1)).log);
        assert!(!b.admit(KEY, t0 + Duration::from_secs(2)).log);
        assert_eq!(
            b.admit(KEY, t0 + Duration::from_secs(10)),
            Admit {
                log: true,
                suppressed_before: 2
            }
        );
        assert_eq!(b.flush(t0 + Duration::from_secs(25)), vec![]);
    }

    #[test]
    fn drain_reports_open_windows_once() {
        let mut b = budget(2);
        let t0 = Instant::now();
        for _ in 0..7 {
            b.admit(KEY, t0);
        }
        b.admit(OTHER, t0);
        assert_eq!(b.drain(), vec![(KEY, 5)]);
        assert_eq!(b.drain(), vec![]);
        assert!(b.admit(KEY, t0).log, "a drained key starts a fresh window");
    }

    #[test]
    fn quiet_keys_are_forgotten() {
        let mut b = budget(5);
        let t0 = Instant::now();
        b.admit(KEY, t0);
        assert_eq!(b.flush(t0 + Duration::from_secs(10)), vec![]);
        assert!(b.windows.is_empty());
    }
}
