//! Fault drills: the provider keeps failing closed, says why and loses
//! nothing when the network to OpenBao breaks (a TCP fault proxy between
//! the provider and a real OpenBao: paused, reset, blackholed or slowed
//! connections).
//!
//! Each drill primes ciphertexts through the KMS socket, injects the fault,
//! waits for it to be reported (KMS Status unhealthy, `/status` naming the
//! error class, Decrypt failing with the class's gRPC code), clears it,
//! waits for a healthy Status and decrypts every primed ciphertext. The
//! recovery time (fault cleared to healthy Status) is printed, never
//! asserted: `cargo test -p bao-kms-system-tests --test system -- drills::
//! --nocapture`.

use std::time::{Duration, Instant};

use bao_kms_system_tests::fault_proxy::{Fault, FaultProxy};
use bao_kms_system_tests::{KmsClient, OpenBao, Provider, ProviderEnv, provision};
use tonic::Code;

use crate::openbao_outage::{assert_probe_failed, wait_unhealthy};

/// How many ciphertexts each drill primes before its fault.
const PRIMED: usize = 5;
/// How long the provider may take to report healthy once the fault is gone.
const RECOVER_WITHIN: Duration = Duration::from_secs(20);

/// A dev OpenBao, a proxy in front of it and a ready provider that talks to
/// OpenBao only through the proxy.
struct Proxied {
    _bao: OpenBao,
    proxy: FaultProxy,
    _env: ProviderEnv,
    provider: Provider,
    kms: KmsClient,
}

impl Proxied {
    async fn start() -> anyhow::Result<Self> {
        let bao = OpenBao::start_dev().await?;
        let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
        let proxy = FaultProxy::in_front_of(&bao.address()).await?;
        let env = ProviderEnv::builder(&bao, &p)
            .with(|s| s.openbao_address = Some(proxy.address()))
            .build()?;
        let provider = Provider::start(&env).await?;
        let kms = provider.client().await?;
        Ok(Self {
            _bao: bao,
            proxy,
            _env: env,
            provider,
            kms,
        })
    }
}

/// Injects `fault`, checks it is reported as `class` (Decrypt answering
/// `code`), clears it and checks nothing was lost; prints the recovery time.
async fn drill(fault: Fault, class: &str, code: Code) -> anyhow::Result<()> {
    let run = Proxied::start().await?;
    let primed = run.kms.prime_many(PRIMED).await?;
    let key_id = primed[0].key_id.clone();

    run.proxy.set(fault);
    let injected = Instant::now();
    let status = wait_unhealthy(&run.kms).await?;
    let noticed = injected.elapsed();
    assert!(status.key_id.is_empty(), "unhealthy Status with a key_id: {status:?}");
    assert_probe_failed(&run.provider, class).await?;
    let err = run
        .kms
        .decrypt_raw(primed[0].decrypt_request())
        .await
        .expect_err("Decrypt must fail while OpenBao cannot be reached");
    assert_eq!(err.code(), code, "{fault:?}: {err:?}");
    assert!(
        err.message().starts_with(&format!("{class}: ")),
        "{fault:?}: Decrypt must name {class}: {err:?}"
    );

    run.proxy.set(Fault::Pass);
    let cleared = Instant::now();
    let status = run.kms.wait_healthy(RECOVER_WITHIN).await?;
    let recovered = cleared.elapsed();
    assert_eq!(status.key_id, key_id, "the key_id must not change across {fault:?}");
    run.kms.decrypt_all(&primed).await?;
    assert_eq!(run.kms.prime().await?.key_id, key_id);
    eprintln!(
        "drill {fault:?}: reported unhealthy after {noticed:?}; healthy {recovered:?} after the fault was cleared; {} primed ciphertexts decrypt",
        primed.len()
    );
    Ok(())
}

#[tokio::test]
async fn paused_connections_are_reported_and_nothing_is_lost() -> anyhow::Result<()> {
    drill(Fault::Pause, "timeout", Code::DeadlineExceeded).await
}

#[tokio::test]
async fn reset_connections_are_reported_and_nothing_is_lost() -> anyhow::Result<()> {
    drill(Fault::Reset, "openbao_connection_failed", Code::Unavailable).await
}

#[tokio::test]
async fn blackholed_connections_are_reported_and_nothing_is_lost() -> anyhow::Result<()> {
    drill(Fault::Blackhole, "timeout", Code::DeadlineExceeded).await
}

#[tokio::test]
async fn slow_connections_are_reported_and_nothing_is_lost() -> anyhow::Result<()> {
    drill(
        Fault::Slow(Duration::from_millis(1500)),
        "timeout",
        Code::DeadlineExceeded,
    )
    .await
}
