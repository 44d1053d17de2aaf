//! OpenBao goes away under a running provider (stopped, or sealed): Status
//! turns unhealthy within a bounded time and withdraws the key_id, `/ready`
//! answers 503, Decrypt fails fast with `Unavailable` well inside
//! kube-apiserver's 3 s deadline; when OpenBao returns (restarted on its
//! raft data, or unsealed), the provider is healthy again with the same
//! key_id and every ciphertext written before the outage decrypts. The
//! recovery time (OpenBao active again to a healthy Status) is printed,
//! never asserted: `cargo test -p bao-kms-system-tests --test system --
//! openbao_outage:: --nocapture`.

use std::time::{Duration, Instant};

use bao_kms_proto::v2::StatusResponse;
use bao_kms_system_tests::wait;
use bao_kms_system_tests::{EncryptedSeed, KmsClient, OpenBao, Provider, ProviderEnv, provision};
use tonic::Code;

/// How long the provider may take to notice OpenBao is gone.
const NOTICE_OUTAGE_WITHIN: Duration = Duration::from_secs(10);
/// How long the provider may take to report healthy once OpenBao is back.
const RECOVER_WITHIN: Duration = Duration::from_secs(15);
/// A failing Decrypt must answer well inside kube-apiserver's 3 s deadline.
const FAIL_FAST_WITHIN: Duration = Duration::from_millis(2500);
/// How many ciphertexts are written before the outage.
const PRIMED: usize = 5;

struct Running {
    bao: OpenBao,
    provider: Provider,
    kms: KmsClient,
    stored: EncryptedSeed,
    primed: Vec<EncryptedSeed>,
}

/// A raft OpenBao, a ready provider, and seeds encrypted and decrypted.
async fn healthy_stack() -> anyhow::Result<(Running, ProviderEnv)> {
    let bao = OpenBao::start_raft().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::new(&bao, &p)?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let primed = kms.prime_many(PRIMED).await?;
    kms.decrypt_all(&primed).await?;
    let stored = primed[0].clone();
    Ok((
        Running {
            bao,
            provider,
            kms,
            stored,
            primed,
        },
        env,
    ))
}

pub(crate) async fn wait_unhealthy(kms: &KmsClient) -> anyhow::Result<StatusResponse> {
    wait::until(NOTICE_OUTAGE_WITHIN, "Status to turn unhealthy", || async {
        match kms.status().await {
            Ok(s) if s.healthz != "ok" => Ok(s),
            Ok(s) => Err(format!("{s:?}")),
            Err(e) => Err(format!("{e}")),
        }
    })
    .await
}

/// `/ready` answers 503 and `/status` is unhealthy, naming the outage
/// `probe_failed` with the error `class`.
pub(crate) async fn assert_probe_failed(provider: &Provider, class: &str) -> anyhow::Result<()> {
    let (ready, body) = provider.ready().await?;
    assert_eq!(ready, 503, "/ready during the outage: {body}");
    let doc = provider.status_json().await?;
    assert_eq!(doc["healthy"], false, "/status: {doc}");
    let named = format!("probe_failed: {class}: ");
    assert!(
        doc["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r.as_str().is_some_and(|r| r.starts_with(&named)))),
        "/status must say why ({named}…): {doc}"
    );
    Ok(())
}

/// What kube-apiserver sees during the outage; `/status` names it
/// `probe_failed` with the error `class`.
async fn assert_outage_reported(run: &Running, class: &str) -> anyhow::Result<()> {
    let status = wait_unhealthy(&run.kms).await?;
    assert_eq!(status.version, "v2");
    assert!(
        status.key_id.is_empty(),
        "an unhealthy Status must not publish a key_id: {status:?}"
    );

    // Status answers from the probe's snapshot, never by calling OpenBao.
    let started = Instant::now();
    run.kms.status().await?;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "Status took {:?}",
        started.elapsed()
    );

    assert_probe_failed(&run.provider, class).await?;

    let started = Instant::now();
    let result = run.kms.decrypt_raw(run.stored.decrypt_request()).await;
    let took = started.elapsed();
    let Err(status) = result else {
        panic!("Decrypt succeeded while OpenBao is unavailable");
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(took < FAIL_FAST_WITHIN, "Decrypt took {took:?} to fail");

    let result = run.kms.encrypt(&[0; 32]).await;
    let Err(status) = result else {
        panic!("Encrypt succeeded while the provider is unhealthy");
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    Ok(())
}

/// What kube-apiserver sees once OpenBao is back (active since `back`):
/// nothing written before the outage is lost.
async fn assert_recovered(run: &Running, outage: &str, back: Instant) -> anyhow::Result<()> {
    let status = run.kms.wait_healthy(RECOVER_WITHIN).await?;
    let recovered = back.elapsed();
    assert_eq!(
        status.key_id, run.stored.key_id,
        "the key_id must not change across an outage"
    );
    run.kms.decrypt_all(&run.primed).await?;
    eprintln!(
        "{outage}: healthy {recovered:?} after OpenBao was active again; {} ciphertexts from before the outage decrypt",
        run.primed.len()
    );
    assert_eq!(run.kms.prime().await?.key_id, run.stored.key_id);
    let (ready, body) = run.provider.ready().await?;
    assert_eq!(ready, 200, "/ready after recovery: {body}");
    Ok(())
}

#[tokio::test]
async fn stopped_openbao_is_reported_and_recovered_from() -> anyhow::Result<()> {
    let (mut run, _env) = healthy_stack().await?;

    run.bao.stop().await?;
    assert_outage_reported(&run, "openbao_connection_failed").await?;

    run.bao.start_again().await?;
    assert_recovered(&run, "OpenBao restarted on its raft data", Instant::now()).await
}

#[tokio::test]
async fn sealed_openbao_is_reported_and_recovered_from() -> anyhow::Result<()> {
    let (mut run, _env) = healthy_stack().await?;

    run.bao.seal().await?;
    assert_outage_reported(&run, "openbao_sealed").await?;

    run.bao.unseal().await?;
    assert_recovered(&run, "OpenBao unsealed", Instant::now()).await
}
