//! The promotion hold (`rotation.holdAtVersion`, docs/rotation.md "Holding
//! a promotion") against a real OpenBao: two nodes on one Transit key, one
//! of them held at version 1. After a rotation the free node promotes and
//! writes data under version 2; the held node keeps serving the version 1
//! key_id, decrypts that data (version 2 is pending there), reports the
//! hold in `/status` and `rotation-plan`, and never promotes while
//! probes go by; with the hold removed and the provider restarted it
//! promotes like any node.

use anyhow::Context as _;
use bao_kms_core::hash::h;
use bao_kms_system_tests::doctor::run_json;
use bao_kms_system_tests::provider::{expected_key_id, fast_rotation, read_json, registry_record};
use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, counter, provision, wait};

use crate::rotation::wait_key_id;

const KEY: &str = "k8s-workload-a-etcd";
const METADATA_READS: (&str, &[(&str, &str)]) = (
    "openbao_kms_openbao_requests_total",
    &[("operation", "transit_metadata_read")],
);

async fn metadata_reads(node: &Provider) -> anyhow::Result<f64> {
    Ok(counter(&node.metrics_text().await?, METADATA_READS.0, METADATA_READS.1))
}

#[tokio::test]
async fn a_held_node_serves_the_old_key_id_decrypts_the_new_version_and_promotes_when_released() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, "transit", KEY)?;
    let free_env = fast_rotation(ProviderEnv::builder(&bao, &p)).build()?;
    let lineage = free_env.settings().key_lineage_id.clone();
    let mut held_env = fast_rotation(ProviderEnv::builder(&bao, &p))
        .with(|s| {
            s.key_lineage_id = lineage;
            s.hold_at_version = Some(1);
        })
        .build()?;
    let free = Provider::start(&free_env).await?;
    let mut held = Provider::start(&held_env).await?;
    let (free_kms, held_kms) = (free.client().await?, held.client().await?);
    let seed_v1 = held_kms.prime().await?;
    let status = held.status_json().await?;
    assert_eq!(status["holdAtVersion"], 1, "/status: {status}");
    assert_eq!(status["rotationState"], "active", "/status: {status}");

    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &free_env, 2)?;
    wait_key_id(&free, &k2).await?;
    let seed_v2 = free_kms.prime().await?;
    assert_eq!(seed_v2.key_id, k2);

    // The held node records version 2 stable, then lets probes go by: the
    // fast profile would promote one probe plus 500 ms after that.
    wait::until(
        std::time::Duration::from_secs(15),
        "version 2 stable on the held node",
        || async {
            let state = read_json(held_env.state_path()).map_err(|e| format!("{e:#}"))?;
            match registry_record(&state, 2) {
                Some(r) if r["stableAtUnix"].as_i64().unwrap_or(0) > 0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let reads = metadata_reads(&held).await?;
    wait::until(
        std::time::Duration::from_secs(15),
        "six more probes on the held node",
        || async {
            match metadata_reads(&held).await {
                Ok(n) if n >= reads + 6.0 => Ok(()),
                Ok(n) => Err(format!("{n} metadata reads")),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await?;

    let status = held.status_json().await?;
    assert_eq!(
        status["keyID"],
        seed_v1.key_id.as_str(),
        "still the old key_id: {status}"
    );
    assert_eq!(status["rotationState"], "pending", "/status: {status}");
    assert_eq!(status["pendingVersion"], 2, "/status: {status}");
    assert_eq!(status["holdAtVersion"], 1, "/status: {status}");
    assert_eq!(status["healthy"], true, "a hold is not a health problem: {status}");
    assert_eq!(held_kms.healthy_status().await?.key_id, seed_v1.key_id);
    held_kms.decrypt(&seed_v2).await?;
    held_kms.decrypt(&seed_v1).await?;
    assert_eq!(
        held_kms.prime().await?.key_id,
        seed_v1.key_id,
        "Encrypt stays on version 1"
    );
    assert!(held.stderr().contains("rotation.held"), "the hold is logged");

    let (code, plan) = run_json(&held_env, "rotation-plan", &[], &[])?;
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(plan["holdAtVersion"], 1, "{plan:#}");
    assert_eq!(plan["pendingHeld"], true, "{plan:#}");
    assert_eq!(plan["pendingKeyIdHash"], h(&k2), "{plan:#}");
    let after = plan["pendingPromotesAfter"].as_str().context("pendingPromotesAfter")?;
    assert!(
        after.starts_with("never while rotation.holdAtVersion=1 holds it"),
        "{after}"
    );

    // Release: remove the hold, restart the provider.
    held.terminate().await?;
    held_env.edit_settings(|s| s.hold_at_version = None)?;
    let held = Provider::start(&held_env).await?;
    let status = wait_key_id(&held, &k2).await?;
    assert_eq!(status["activeVersion"], 2, "/status: {status}");
    assert!(status.get("holdAtVersion").is_none(), "/status: {status}");
    let kms = held.client().await?;
    assert_eq!(kms.prime().await?.key_id, k2);
    kms.decrypt(&seed_v1).await?;
    Ok(())
}
