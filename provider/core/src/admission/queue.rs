//! The wait queue in front of each KMS method: when all of a method's
//! `server.maxConcurrent*` slots are busy, a call waits for one instead of
//! failing, unless the queue is full (`server.maxQueued*`: true overload,
//! `concurrency_limit`, RESOURCE_EXHAUSTED) or the caller's remaining gRPC
//! deadline cannot cover the expected wait plus the call itself
//! (`queue_deadline`, DEADLINE_EXCEEDED, answered at once so kube-apiserver
//! can retry elsewhere instead of timing out). The wait is bounded by the
//! smaller of the remaining deadline and `server.maxQueueWait`.
//!
//! The expected wait comes from a moving average of the method's recent
//! call durations ([`Ewma`]); the shell measures, these functions decide.

use std::time::Duration;

use crate::errors::{ErrorClass, KmsError};

/// The `grpc-timeout` request header: 1 to 8 ASCII digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), as the gRPC over HTTP/2 protocol
/// defines it. `None` for a malformed value (treated as no deadline, as
/// gRPC servers do).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A method's queue settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `server.maxConcurrent*`: calls served at once.
    pub concurrent: u32,
    /// `server.maxQueued*`: calls that may wait for a slot (0: none).
    pub queued: u32,
    /// `server.maxQueueWait`: the longest wait without a shorter deadline.
    pub max_wait: Duration,
}

/// What happens to a call that found every slot busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Wait at most this long for a slot.
    Wait(Duration),
    /// Refuse now.
    Reject(KmsError),
}

/// Whether a call that found every slot busy may wait. `waiting` counts
/// the calls already queued, `mean_call` is the method's recent mean call
/// duration (`None` before the first call), `remaining` the caller's
/// remaining gRPC deadline (`None` without one).
pub fn admit(
    method: &str,
    limits: QueueLimits,
    waiting: u32,
    mean_call: Option<Duration>,
    remaining: Option<Duration>,
) -> Queued {
    if waiting >= limits.queued {
        return Queued::Reject(KmsError::new(
            ErrorClass::ConcurrencyLimit,
            format!(
                "too many concurrent {method} requests: {} in progress and {waiting} waiting (server.maxConcurrent*, server.maxQueued*)",
                limits.concurrent
            ),
        ));
    }
    let Some(remaining) = remaining else {
        return Queued::Wait(limits.max_wait);
    };
    if let Some(mean) = mean_call {
        let expected = expected_wait(waiting, limits.concurrent, mean) + mean;
        if expected > remaining {
            return Queued::Reject(deadline_unmeetable(method, expected, remaining));
        }
    }
    // A slot found later than this leaves too little time for the call.
    let own_call = mean_call.unwrap_or_default();
    Queued::Wait(remaining.saturating_sub(own_call).min(limits.max_wait))
}

/// How long the call behind `waiting` queued calls waits for one of
/// `concurrent` slots, each freed every `mean` on average.
pub fn expected_wait(waiting: u32, concurrent: u32, mean: Duration) -> Duration {
    let rounds = waiting / concurrent.max(1) + 1;
    mean.saturating_mul(rounds)
}

fn deadline_unmeetable(method: &str, expected: Duration, remaining: Duration) -> KmsError {
    KmsError::new(
        ErrorClass::QueueDeadline,
        format!(
            "{method} cannot finish within the caller's deadline: {} ms left, about {} ms expected in the queue and the call",
            remaining.as_millis(),
            expected.as_millis()
        ),
    )
}

/// A call that waited its whole bound without getting a slot.
pub fn wait_expired(method: &str, waited: Duration) -> KmsError {
    KmsError::new(
        ErrorClass::QueueDeadline,
        format!(
            "{method} waited {} ms for a free slot without getting one (caller's deadline or server.maxQueueWait)",
            waited.as_millis()
        ),
    )
}

/// An exponentially weighted moving average of call durations (weight
/// 1/8 for the newest sample), kept as nanoseconds so the shell can store
/// it in an atomic. 0 means no sample yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ewma(pub u64);

impl Ewma {
    pub fn mean(self) -> Option<Duration> {
        (self.0 > 0).then(|| Duration::from_nanos(self.0))
    }

    /// The average after one more call of `sample`.
    #[must_use]
    pub fn update(self, sample: Duration) -> Self {
        let s = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX).max(1);
        if self.0 == 0 {
            return Self(s);
        }
        let old = i128::from(self.0);
        let next = old + (i128::from(s) - old) / 8;
        Self(u64::try_from(next.max(1)).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits() -> QueueLimits {
        QueueLimits {
            concurrent: 64,
            queued: 1024,
            max_wait: Duration::from_secs(5),
        }
    }

    #[test]
    fn grpc_timeout_units_and_malformed_values() {
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("2999999u"), Some(Duration::from_micros(2_999_999)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("500m"), Some(500 * MS));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_grpc_timeout("0m"), Some(Duration::ZERO));
        for bad in ["", "S", "3", "3s", "123456789S", "-1S", "1.5S", "3 S", "３S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_full_queue_is_overload() {
        let q = admit("decrypt", limits(), 1024, Some(MS), None);
        let Queued::Reject(e) = q else { panic!("{q:?}") };
        assert_eq!(e.class, ErrorClass::ConcurrencyLimit);
        assert!(e.message.contains("64 in progress and 1024 waiting"), "{}", e.message);
        let no_queue = QueueLimits { queued: 0, ..limits() };
        assert!(matches!(admit("status", no_queue, 0, None, None), Queued::Reject(_)));
    }

    #[test]
    fn without_a_deadline_the_wait_is_max_queue_wait() {
        assert_eq!(
            admit("decrypt", limits(), 500, Some(MS), None),
            Queued::Wait(Duration::from_secs(5))
        );
    }

    #[test]
    fn a_deadline_bounds_the_wait_and_an_unmeetable_one_is_refused_at_once() {
        // 536 waiting before us on 64 slots: 9 rounds of 5 ms, plus our own call.
        assert_eq!(expected_wait(536, 64, 5 * MS), 45 * MS);
        let three_s = Some(Duration::from_secs(3));
        assert_eq!(
            admit("decrypt", limits(), 536, Some(5 * MS), three_s),
            Queued::Wait(Duration::from_secs(3) - 5 * MS)
        );
        let q = admit("decrypt", limits(), 536, Some(5 * MS), Some(49 * MS));
        let Queued::Reject(e) = q else { panic!("{q:?}") };
        assert_eq!(e.class, ErrorClass::QueueDeadline);
        assert!(e.message.contains("49 ms left, about 50 ms expected"), "{}", e.message);
        assert_eq!(
            admit("decrypt", limits(), 536, Some(5 * MS), Some(50 * MS)),
            Queued::Wait(45 * MS)
        );
        // Before the first call nothing is known: wait within the deadline.
        assert_eq!(admit("decrypt", limits(), 536, None, Some(MS)), Queued::Wait(MS));
    }

    #[test]
    fn the_average_follows_the_samples() {
        let e = Ewma::default();
        assert_eq!(e.mean(), None);
        let e = e.update(8 * MS);
        assert_eq!(e.mean(), Some(8 * MS));
        let e = e.update(16 * MS);
        assert_eq!(e.mean(), Some(9 * MS));
        let mut e = e;
        for _ in 0..200 {
            e = e.update(MS);
        }
        assert!(e.mean().unwrap() < MS + Duration::from_micros(10));
        assert_eq!(
            Ewma::default().update(Duration::ZERO).mean(),
            Some(Duration::from_nanos(1))
        );
    }
}
