//! Shares one in-flight computation among identical concurrent requests.
//!
//! After a restart kube-apiserver sometimes sends the same Decrypt twice
//! within milliseconds (two caches warming up at once); the second caller
//! waits for the first call's result instead of calling Transit again.
//! Results are not cached: the entry is removed as soon as the call
//! completes. If the caller running the call is cancelled, a waiting caller
//! takes over.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub struct SingleFlight<K, V> {
    calls: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    /// Runs `call` unless an identical call (same `key`) is in flight, in
    /// which case its result is returned.
    pub async fn run<F, Fut>(&self, key: K, call: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = {
            // A poisoned lock only means another caller panicked; the map is still consistent.
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            calls
                .entry(key.clone())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        let value = cell.get_or_init(call).await.clone();
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if calls.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            calls.remove(&key);
        }
        value
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.calls.lock().map(|c| c.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn identical_concurrent_calls_share_one_execution() {
        let flight = Arc::new(SingleFlight::<&str, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (flight, runs, mut release) = (flight.clone(), runs.clone(), release_rx.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .run("ciphertext-a", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = release.wait_for(|r| *r).await;
                        42
                    })
                    .await
            }));
        }
        // All five are waiting on the one execution before it is released.
        while flight.in_flight() == 0 || runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        release_tx.send(true).unwrap();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flight.in_flight(), 0, "finished calls are not cached");
    }

    #[tokio::test]
    async fn different_keys_and_later_calls_run_separately() {
        let flight = SingleFlight::<u8, u8>::default();
        let runs = AtomicUsize::new(0);
        let count = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            1
        };
        flight.run(1, count).await;
        flight.run(1, count).await;
        flight.run(2, count).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_to_a_waiter() {
        let flight = Arc::new(SingleFlight::<u8, u8>::default());
        let leader = {
            let flight = flight.clone();
            tokio::spawn(async move { flight.run(7, std::future::pending::<u8>).await })
        };
        while flight.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        leader.abort();
        let _ = leader.await;
        assert_eq!(flight.run(7, || async { 9 }).await, 9);
    }
}
