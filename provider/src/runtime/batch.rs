//! Micro-batching of distinct in-flight Decrypts into Transit `batch_input`
//! calls (DESIGN 11).
//!
//! At most `server.maxConcurrentDecryptCalls` Transit decrypt calls are in
//! flight. A Decrypt that finds a free call and no queue goes out at once,
//! alone and in its caller's own task (so an idle provider adds no wait and
//! no task hop); the others queue per key_id, and every call that ends
//! takes up to `server.decryptBatchMaxItems` queued Decrypts of one key_id
//! into its next call. A Decrypt that waited
//! `server.decryptBatchMaxWait` without a free call gets a call of its own
//! (with whatever queued beside it), so batching never delays a Decrypt by
//! more than that.
//!
//! Safety: a batch carries the Decrypts of one key_id only (one Transit key
//! version and one AAD) and every item its own ciphertext and AAD, exactly
//! the fields a single call sends. Only plaintexts are taken from a batch
//! answer: an item Transit refused is decrypted again alone, so its caller
//! gets exactly the answer a single call gives (integrity failure, unknown
//! version, ...), and a batch OpenBao refuses or answers unusably falls back
//! to single calls for every item. A failure of the path to OpenBao
//! (unreachable, sealed, timeout, denied) is every item's answer, as it
//! would be alone. Calls that serve queued Decrypts run in tasks of their
//! own, so a caller that goes away never cancels its neighbours' call; a
//! call made in its caller's task serves that caller only, and however it
//! ends (answered, cancelled, panicked) it hands its place to whatever
//! queued meanwhile. A single call keeps its caller's debug-correlation
//! tag, a batch call (serving several callers) carries none.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bao_kms_core::errors::{ErrorClass, KmsError};
use futures_util::FutureExt as _;
use opentelemetry::context::FutureExt as _;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::call::call_with_token;
use crate::correlation::{self, Tag};
use crate::metrics::Metrics;
use crate::transit::Transit;

pub(super) struct Batcher {
    transit: Arc<dyn Transit>,
    metrics: Arc<Metrics>,
    max_items: usize,
    max_wait: Duration,
    max_calls: usize,
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Transit decrypt calls in flight.
    calls: usize,
    /// Decrypts waiting for a call, per key_id, oldest first.
    queues: HashMap<String, VecDeque<Pending>>,
}

struct Pending {
    id: u64,
    ciphertext: String,
    aad: Vec<u8>,
    reply: oneshot::Sender<DecryptResult>,
    /// The caller's debug-correlation tag: the call runs in another task,
    /// so it is carried along for the OpenBao request's log line.
    tag: Option<Tag>,
    /// The caller's trace context (OTLP traces on only), for the same
    /// reason: the OpenBao request's span is a child of the KMS call's.
    trace: Option<opentelemetry::Context>,
}

type DecryptResult = Result<Zeroizing<Vec<u8>>, KmsError>;

/// A call made in its caller's task; however it ends (answered, the caller
/// gone, a panic), the call is given back or handed to the queued Decrypts.
struct CallPlace<'a> {
    batcher: &'a Arc<Batcher>,
}

impl Drop for CallPlace<'_> {
    fn drop(&mut self) {
        self.batcher.release();
    }
}

/// A poisoned lock only means a caller panicked while holding it; the
/// queues are only ever pushed to and drained whole, so they stay consistent.
fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A reply channel dropped without an answer: the Transit call serving
/// this Decrypt panicked in its task. The panic is raised again in each
/// caller it served, where the service's panic guard answers and counts it
/// as it would for a call made in the caller's own task.
fn lost() -> ! {
    std::panic::resume_unwind(Box::new("the Transit call serving this Decrypt panicked"))
}

impl Batcher {
    pub(super) fn new(
        transit: Arc<dyn Transit>,
        metrics: Arc<Metrics>,
        max_items: u32,
        max_wait: Duration,
        max_calls: u32,
    ) -> Self {
        Self {
            transit,
            metrics,
            max_items: max_items.max(1) as usize,
            max_wait,
            max_calls: max_calls.max(1) as usize,
            next_id: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    /// Decrypts `ciphertext` (a ciphertext of the snapshot `key_id` names)
    /// with that snapshot's `aad`, alone or in a batch.
    pub(super) async fn decrypt(self: &Arc<Self>, key_id: &str, ciphertext: &str, aad: Vec<u8>) -> DecryptResult {
        let alone = {
            let mut st = lock(&self.state);
            (st.calls < self.max_calls && st.queues.is_empty()).then(|| {
                st.calls += 1;
                CallPlace { batcher: self }
            })
        };
        if let Some(_place) = alone {
            self.metrics.transit_decrypt_batch_size.observe(1.0);
            let transit = &*self.transit;
            let aad = aad.as_slice();
            return call_with_token(transit, |t| async move { transit.decrypt(&t, ciphertext, aad).await }).await;
        }
        let (reply, mut answer) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            id,
            ciphertext: ciphertext.to_owned(),
            aad,
            reply,
            tag: correlation::current(),
            trace: self.metrics.tracer.is_some().then(opentelemetry::Context::current),
        };
        let batch = {
            let mut st = lock(&self.state);
            st.queues.entry(key_id.to_owned()).or_default().push_back(pending);
            (st.calls < self.max_calls).then(|| {
                st.calls += 1;
                self.take(&mut st, key_id)
            })
        };
        if let Some(batch) = batch {
            self.spawn(batch);
        }
        match tokio::time::timeout(self.max_wait, &mut answer).await {
            Ok(result) => result.unwrap_or_else(|_| lost()),
            Err(_) => {
                // Still queued after the wait: a call of its own, beyond the limit.
                let batch = {
                    let mut st = lock(&self.state);
                    let queued = st.queues.get(key_id).is_some_and(|q| q.iter().any(|p| p.id == id));
                    queued.then(|| {
                        st.calls += 1;
                        self.take(&mut st, key_id)
                    })
                };
                if let Some(batch) = batch {
                    self.spawn(batch);
                }
                answer.await.unwrap_or_else(|_| lost())
            }
        }
    }

    /// Gives back a call made in its caller's task, or hands it to the
    /// queued Decrypts.
    fn release(self: &Arc<Self>) {
        let batch = {
            let mut st = lock(&self.state);
            match st.queues.keys().next().cloned() {
                Some(key_id) => Some(self.take(&mut st, &key_id)),
                None => {
                    st.calls -= 1;
                    None
                }
            }
        };
        if let Some(batch) = batch {
            self.spawn(batch);
        }
    }

    /// Up to `max_items` queued Decrypts of `key_id`, oldest first.
    fn take(&self, st: &mut State, key_id: &str) -> Vec<Pending> {
        let Some(queue) = st.queues.get_mut(key_id) else {
            return Vec::new();
        };
        let n = queue.len().min(self.max_items);
        let batch: Vec<Pending> = queue.drain(..n).collect();
        if queue.is_empty() {
            st.queues.remove(key_id);
        }
        batch
    }

    fn spawn(self: &Arc<Self>, batch: Vec<Pending>) {
        let me = self.clone();
        tokio::spawn(async move { me.run(batch).await });
    }

    /// Serves `batch`, then whatever queued meanwhile, until the queues are
    /// empty; then gives the call back.
    async fn run(self: Arc<Self>, mut batch: Vec<Pending>) {
        loop {
            // A panic ends only this batch (its callers see it); the call
            // is given back either way.
            let _ = AssertUnwindSafe(self.serve(batch)).catch_unwind().await;
            let mut st = lock(&self.state);
            let Some(key_id) = st.queues.keys().next().cloned() else {
                st.calls -= 1;
                return;
            };
            batch = self.take(&mut st, &key_id);
        }
    }

    async fn serve(&self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        self.metrics.transit_decrypt_batch_size.observe(batch.len() as f64);
        if batch.len() == 1 {
            for p in batch {
                let result = self.single(&p).await;
                let _ = p.reply.send(result);
            }
            return;
        }
        let items: Vec<(&str, &[u8])> = batch
            .iter()
            .map(|p| (p.ciphertext.as_str(), p.aad.as_slice()))
            .collect();
        let transit = &*self.transit;
        let call = call_with_token(transit, |t| {
            let items = &items;
            async move { transit.decrypt_batch(&t, items).await }
        });
        // One request for many calls: its span is a child of the first.
        let answer = match batch.first().and_then(|p| p.trace.clone()) {
            Some(cx) => call.with_context(cx).await,
            None => call.await,
        };
        drop(items);
        let mut alone = Vec::new();
        match answer {
            Ok(results) => {
                for (p, plaintext) in batch.into_iter().zip(results) {
                    match plaintext {
                        Some(plaintext) => {
                            let _ = p.reply.send(Ok(plaintext));
                        }
                        None => alone.push(p),
                    }
                }
            }
            // OpenBao refused the batch or answered it unusably: one by one.
            Err(e) if matches!(e.class, ErrorClass::TransitBadRequest | ErrorClass::InvalidResponse) => {
                self.metrics.transit_decrypt_batch_fallbacks.inc();
                alone = batch;
            }
            // The path to OpenBao failed: the same answer each would get alone.
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
        let answers = futures_util::future::join_all(alone.iter().map(|p| self.single(p))).await;
        for (p, result) in alone.into_iter().zip(answers) {
            let _ = p.reply.send(result);
        }
    }

    async fn single(&self, p: &Pending) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let transit = &*self.transit;
        let call = call_with_token(
            transit,
            |t| async move { transit.decrypt(&t, &p.ciphertext, &p.aad).await },
        );
        let call = correlation::scope(p.tag.clone(), call);
        match &p.trace {
            Some(cx) => call.with_context(cx.clone()).await,
            None => call.await,
        }
    }
}
