//! The restart burst (DESIGN 11): several kube-apiservers starting together
//! each decrypt every distinct DEK seed they find. 3 connections x 200
//! distinct Decrypts sent at once to a provider with the default
//! configuration all succeed byte-exact, none refused with
//! RESOURCE_EXHAUSTED: `server.maxConcurrentDecrypt` (1024) admits the
//! whole burst and the batcher carries it to Transit in `batch_input`
//! calls. Timing is `make bench`'s business; nothing here is timed.

use std::sync::Arc;

use bao_kms_system_tests::provider::dev_setup;
use bao_kms_system_tests::{EncryptedSeed, KmsClient, Provider, metric};
use tokio::task::JoinSet;

const CONNECTIONS: usize = 3;
const DISTINCT_PER_CONNECTION: usize = 200;

/// `n` seeds encrypted through the provider, 32 at a time.
async fn seeds(kms: &KmsClient, n: usize) -> anyhow::Result<Vec<Arc<EncryptedSeed>>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut batch = JoinSet::new();
        for _ in 0..(n - out.len()).min(32) {
            let kms = kms.clone();
            batch.spawn(async move { kms.prime().await });
        }
        while let Some(seed) = batch.join_next().await {
            out.push(Arc::new(seed??));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn six_hundred_distinct_decrypts_at_once_all_succeed_with_the_defaults() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = seeds(&kms, CONNECTIONS * DISTINCT_PER_CONNECTION).await?;

    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(provider.client().await?);
    }
    let mut calls = JoinSet::new();
    for (i, seed) in stored.iter().enumerate() {
        let (client, seed) = (clients[i % CONNECTIONS].clone(), seed.clone());
        calls.spawn(async move { client.decrypt(&seed).await });
    }
    let mut failures = Vec::new();
    while let Some(result) = calls.join_next().await {
        if let Err(e) = result? {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 600 Decrypts failed, first: {:?}",
        failures.len(),
        failures.first()
    );

    let text = provider.metrics_text().await?;
    let decrypt = [("method", "decrypt")];
    assert_eq!(
        metric(&text, "openbao_kms_grpc_concurrency_rejections_total", &decrypt).unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        metric(&text, "openbao_kms_grpc_deadline_rejections_total", &decrypt).unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "openbao_kms_grpc_requests_total",
            &[("method", "decrypt"), ("status", "ok")]
        ),
        Some(600.0)
    );
    assert_eq!(metric(&text, "openbao_kms_grpc_queued", &decrypt), Some(0.0));
    kms.healthy_status().await?;
    Ok(())
}
