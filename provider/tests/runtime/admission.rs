//! Admission through the KMS service: a burst within the default
//! `server.maxConcurrentDecrypt` is admitted whole, one beyond a configured
//! limit waits in the queue instead of failing, a
//! full queue is refused as overload, and a call whose deadline cannot be
//! met is refused at once; distinct Decrypts in flight share Transit
//! `batch_input` calls, each getting exactly its single-call answer, and
//! fall back to single calls when batches are refused; all on a scripted
//! Transit whose decrypts take 20 ms of paused time.

use std::sync::Arc;
use std::time::Duration;

use bao_kms_proto::v2::DecryptRequest;
use bao_kms_proto::v2::key_management_service_server::KeyManagementService;
use bao_kms_provider::service::KmsService;
use tonic::{Code, Request};

use crate::support::*;

const CALL: Duration = Duration::from_millis(20);

fn request(stored: &Stored, grpc_timeout: Option<&str>) -> Request<DecryptRequest> {
    let mut r = Request::new(DecryptRequest {
        ciphertext: stored.ciphertext.clone(),
        uid: "uid".into(),
        key_id: stored.key_id.clone(),
        annotations: stored.annotations.clone(),
    });
    if let Some(t) = grpc_timeout {
        r.metadata_mut().insert("grpc-timeout", t.parse().unwrap());
    }
    r
}

/// `n` distinct stored DEK seeds.
async fn seeds(engine: &bao_kms_provider::runtime::Engine, n: usize) -> Vec<Arc<Stored>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut stored = encrypt(engine, (i % 251) as u8).await;
        stored.seed.extend_from_slice(&(i as u32).to_be_bytes());
        out.push(Arc::new(stored));
    }
    out
}

/// Sends every stored seed's Decrypt at once; the codes in order.
async fn burst(service: &Arc<KmsService>, stored: &[Arc<Stored>], grpc_timeout: Option<&'static str>) -> Vec<Code> {
    let tasks: Vec<_> = stored
        .iter()
        .map(|s| {
            let (service, s) = (service.clone(), s.clone());
            tokio::spawn(async move {
                match service.decrypt(request(&s, grpc_timeout)).await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                }
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes
}

fn metric(engine: &bao_kms_provider::runtime::Engine, line_start: &str) -> String {
    let text = engine.metrics().encode();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn six_hundred_distinct_decrypts_at_once_all_succeed_with_the_defaults() {
    let transit = ScriptedTransit::new();
    let node = Node::new();
    let engine = node.start(&transit).await;
    let stored = seeds(&engine, 600).await;
    transit.slow_decrypts(CALL);
    let service = Arc::new(KmsService::new(engine.clone()));
    let codes = burst(&service, &stored, Some("3S")).await;
    assert!(codes.iter().all(|c| *c == Code::Ok), "{codes:?}");
    assert!(transit.batch_calls() > 0, "distinct Decrypts in flight were batched");
    assert!(
        !engine
            .metrics()
            .encode()
            .contains("openbao_kms_grpc_concurrency_rejections_total{")
    );
    assert!(
        !engine
            .metrics()
            .encode()
            .contains("openbao_kms_grpc_queue_wait_seconds_count{method=\"decrypt\"}"),
        "the default 1024 slots admit the whole burst; the batcher holds it, not the queue"
    );
    assert!(metric(&engine, "openbao_kms_grpc_queued{method=\"decrypt\"}").ends_with(" 0"));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_is_refused_as_overload_and_counted() {
    let transit = ScriptedTransit::new();
    let node = Node::with_server("  maxConcurrentDecrypt: 4\n  maxQueuedDecrypt: 6\n");
    let engine = node.start(&transit).await;
    let stored = seeds(&engine, 16).await;
    transit.slow_decrypts(CALL);
    let service = Arc::new(KmsService::new(engine.clone()));
    let codes = burst(&service, &stored, None).await;
    let ok = codes.iter().filter(|c| **c == Code::Ok).count();
    let exhausted = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    assert_eq!((ok, exhausted), (10, 6), "{codes:?}");
    assert_eq!(
        metric(
            &engine,
            "openbao_kms_grpc_concurrency_rejections_total{method=\"decrypt\"}"
        ),
        "openbao_kms_grpc_concurrency_rejections_total{method=\"decrypt\"} 6"
    );
    assert_eq!(
        metric(
            &engine,
            "openbao_kms_grpc_requests_total{method=\"decrypt\",status=\"resource_exhausted\"}"
        ),
        "openbao_kms_grpc_requests_total{method=\"decrypt\",status=\"resource_exhausted\"} 6"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_the_queue_cannot_meet_is_refused_at_once() {
    let transit = ScriptedTransit::new();
    let node = Node::with_server("  maxConcurrentDecrypt: 2\n");
    let engine = node.start(&transit).await;
    let stored = seeds(&engine, 8).await;
    transit.slow_decrypts(CALL);
    let service = Arc::new(KmsService::new(engine.clone()));
    // Teach the service how long a call takes.
    assert!(burst(&service, &stored[..2], None).await.iter().all(|c| *c == Code::Ok));

    // Two slots busy for 20 ms, two callers queued: the next one needs
    // about 2 rounds of waiting plus its own call, 60 ms.
    let busy: Vec<_> = stored[2..6]
        .iter()
        .map(|s| {
            let (service, s) = (service.clone(), s.clone());
            tokio::spawn(async move { service.decrypt(request(&s, None)).await.map(|_| ()) })
        })
        .collect();
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let refused = service.decrypt(request(&stored[6], Some("30m"))).await.unwrap_err();
    assert_eq!(refused.code(), Code::DeadlineExceeded);
    assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");
    assert!(
        refused.message().starts_with(
            "queue_deadline: decrypt cannot finish within the caller's deadline: 30 ms left, about 60 ms expected"
        ),
        "{}",
        refused.message()
    );
    // With time enough, the same call waits its turn.
    assert!(service.decrypt(request(&stored[7], Some("100m"))).await.is_ok());
    for t in busy {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        metric(
            &engine,
            "openbao_kms_grpc_deadline_rejections_total{method=\"decrypt\"}"
        ),
        "openbao_kms_grpc_deadline_rejections_total{method=\"decrypt\"} 1"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_at_max_queue_wait_with_deadline_exceeded() {
    let transit = ScriptedTransit::new();
    let node = Node::with_server("  maxConcurrentDecrypt: 1\n  maxQueueWait: 50ms\n");
    let engine = node.start(&transit).await;
    let stored = seeds(&engine, 2).await;
    transit.slow_decrypts(Duration::from_millis(500));
    let service = Arc::new(KmsService::new(engine.clone()));
    let first = {
        let (service, s) = (service.clone(), stored[0].clone());
        tokio::spawn(async move { service.decrypt(request(&s, None)).await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let refused = service.decrypt(request(&stored[1], None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::DeadlineExceeded);
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert!(
        refused.message().contains("waited 50 ms for a free slot"),
        "{}",
        refused.message()
    );
    first.await.unwrap().unwrap();
}

/// A Decrypt's answer as compared between a batch and a single call.
fn outcome(r: Result<Vec<u8>, bao_kms_core::errors::KmsError>) -> Result<Vec<u8>, String> {
    r.map_err(|e| format!("{}: {}", e.class.as_str(), e.message))
}

#[tokio::test(start_paused = true)]
async fn batched_items_get_exactly_their_single_answer_and_one_bad_item_fails_alone() {
    let transit = ScriptedTransit::new();
    let node = Node::with_server("  maxConcurrentDecryptCalls: 1\n");
    let engine = node.start(&transit).await;
    let mut stored = Vec::new();
    for i in 0..40u8 {
        let mut s = encrypt(&engine, i).await;
        if i % 3 == 1 {
            // Tampered: still a version 1 ciphertext, unknown to Transit.
            s.ciphertext = format!("vault:v1:tampered{i}").into_bytes();
        }
        stored.push(Arc::new(s));
    }
    transit.slow_decrypts(CALL);
    let tasks: Vec<_> = stored
        .iter()
        .map(|s| {
            let (engine, s) = (engine.clone(), s.clone());
            tokio::spawn(async move { outcome(decrypt(&engine, &s).await) })
        })
        .collect();
    let mut batched = Vec::new();
    for t in tasks {
        batched.push(t.await.unwrap());
    }
    assert!(transit.batch_calls() > 0, "the items were batched");
    for (s, got) in stored.iter().zip(batched) {
        let alone = outcome(decrypt(&engine, s).await);
        assert_eq!(got, alone);
    }
    let bad = stored
        .iter()
        .filter(|s| s.ciphertext.starts_with(b"vault:v1:tampered"))
        .count();
    assert_eq!(bad, 13);
}

#[tokio::test(start_paused = true)]
async fn refused_batches_fall_back_to_single_calls() {
    let transit = ScriptedTransit::new();
    let node = Node::with_server("  maxConcurrentDecryptCalls: 2\n");
    let engine = node.start(&transit).await;
    let stored = seeds(&engine, 50).await;
    transit.slow_decrypts(CALL);
    transit.refuse_batches();
    let service = Arc::new(KmsService::new(engine.clone()));
    let codes = burst(&service, &stored, None).await;
    assert!(codes.iter().all(|c| *c == Code::Ok), "{codes:?}");
    assert_eq!(transit.batch_calls(), 0);
    let fallbacks = metric(&engine, "openbao_kms_transit_decrypt_batch_fallbacks_total");
    assert_ne!(fallbacks, "openbao_kms_transit_decrypt_batch_fallbacks_total 0");
}
