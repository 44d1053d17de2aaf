//! Transit key rotation against a real OpenBao (docs/rotation.md, rotation runbook):
//! a rotated key is observed as pending, promoted only after the stable
//! observations and the activation delay, old data keeps decrypting, new
//! data uses the new key_id with the explicit Transit version; skipped
//! versions are retained; a re-created key and a raised
//! `min_decryption_version` fail closed; save failures turn the node
//! unhealthy (`state_unavailable`, `state_save_failed`) while Decrypt goes on; three nodes converge and read each other's data
//! before they promote.
//!
//! Fast profile: `probeInterval` 500 ms, 1–3 stable observations, activation
//! delays of 0.5–8 s. Every wait polls `/status`, `/ready`, metrics or the
//! state file with a deadline.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use bao_kms_core::hash::h;
use bao_kms_core::keyid::KeyId;
use bao_kms_system_tests::provider::{ProviderEnvBuilder, dev_setup_with, expected_key_id, read_json, registry_record};
use bao_kms_system_tests::{
    EncryptedSeed, KmsClient, OpenBao, Provider, ProviderEnv, counter, metric, provision, wait,
};
use serde_json::Value;
use tonic::Code;

const KEY: &str = "k8s-workload-a-etcd";
const VERSION_ANNOTATION: &str = "transit-key-version.kms.openbao.org";
/// Bound on any one state change once its preconditions hold (a few probes).
const CHANGE_WITHIN: Duration = Duration::from_secs(10);

pub(crate) fn fast(b: ProviderEnvBuilder<'_>) -> ProviderEnvBuilder<'_> {
    b.probe_interval("500ms")
        .deep_probe_interval("2s")
        .status_max_staleness("3s")
}

async fn wait_status(provider: &Provider, what: &str, want: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    wait::until(CHANGE_WITHIN, what, || async {
        match provider.status_json().await {
            Ok(s) if want(&s) => Ok(s),
            Ok(s) => Err(s.to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await
}

pub(crate) async fn wait_key_id(provider: &Provider, key_id: &str) -> anyhow::Result<Value> {
    wait_status(provider, &format!("Status key_id {key_id}"), |s| {
        s["keyID"] == key_id && s["healthy"] == true
    })
    .await
}

fn reason_codes(doc: &Value) -> Vec<String> {
    doc["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|r| r.split(':').next().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn has_reason(doc: &Value, code: &str) -> bool {
    reason_codes(doc).iter().any(|c| c == code)
}

/// The state file and checkpoint agree (generation and hash).
fn assert_checkpoint_matches(env: &ProviderEnv) -> anyhow::Result<Value> {
    let state = read_json(env.state_path())?;
    let checkpoint = read_json(&env.checkpoint_path())?;
    assert_eq!(
        checkpoint["generation"], state["generation"],
        "checkpoint: {checkpoint}"
    );
    assert_eq!(
        checkpoint["currentHash"], state["currentHash"],
        "checkpoint: {checkpoint}"
    );
    Ok(state)
}

/// A kube-apiserver-like client calling Status then Encrypt in a loop while
/// a promotion happens. Every Encrypt answer must be self-consistent (its
/// key_id, version annotation and `vault:vN:` prefix name one snapshot), and
/// once Status reported the new key_id, neither Status nor Encrypt may go back.
struct Hammer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<(usize, usize)>>,
}

impl Hammer {
    fn start(kms: KmsClient, old: (String, u64), new: (String, u64)) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut old_seen, mut new_seen) = (0, 0);
            let mut switched = false;
            while !flag.load(Ordering::Relaxed) {
                let status = kms.status().await?;
                if status.key_id == new.0 {
                    switched = true;
                } else if switched {
                    anyhow::bail!("Status flipped back to {:?} after the new key_id", status.key_id);
                }
                let resp = kms
                    .encrypt(&[7u8; 32])
                    .await
                    .map_err(|s| anyhow::anyhow!("Encrypt: {s}"))?;
                let version = match resp.key_id.as_str() {
                    k if k == old.0 => {
                        ensure!(
                            !switched,
                            "Encrypt used the old key_id after Status reported the new one"
                        );
                        old_seen += 1;
                        old.1
                    }
                    k if k == new.0 => {
                        new_seen += 1;
                        new.1
                    }
                    other => anyhow::bail!("Encrypt returned an unexpected key_id {other:?}"),
                };
                let annotated = resp.annotations.get(VERSION_ANNOTATION).map(|v| v.as_slice());
                ensure!(
                    annotated == Some(version.to_string().as_bytes()),
                    "key_id of version {version} with annotation {annotated:?}"
                );
                ensure!(
                    resp.ciphertext.starts_with(format!("vault:v{version}:").as_bytes()),
                    "key_id of version {version} with another ciphertext version"
                );
            }
            Ok((old_seen, new_seen))
        });
        Self { stop, task }
    }

    async fn finish(self) -> anyhow::Result<(usize, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

#[tokio::test]
async fn rotation_is_promoted_after_stable_observations_and_the_activation_delay() -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_secs(2);
    let (bao, p, env) = dev_setup_with(|b| fast(b).rotation(3, "2s")).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let old = kms.prime().await?;
    let k1 = expected_key_id(&bao, &p, &env, 1)?;
    assert_eq!(old.key_id, k1);

    let rotated = Instant::now();
    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &env, 2)?;

    // Observed: pending, the key_id unchanged, the new version decryptable.
    let status = wait_status(&provider, "rotationState pending", |s| s["rotationState"] == "pending").await?;
    assert_eq!(status["keyID"], k1, "/status: {status}");
    assert_eq!(status["healthy"], true, "/status: {status}");
    assert_eq!(status["pendingVersion"], 2, "/status: {status}");
    assert_eq!(status["latestVersion"], 2, "/status: {status}");
    let m = provider.metrics_text().await?;
    assert_eq!(
        metric(&m, "openbao_kms_rotation_state", &[("state", "pending")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "openbao_kms_rotation_state", &[("state", "active")]),
        Some(0.0)
    );
    assert_eq!(metric(&m, "openbao_kms_key_version", &[]), Some(1.0));
    assert_eq!(
        metric(&m, "openbao_kms_status_key_id_hash", &[("hash", &h(&k1))]),
        Some(1.0)
    );
    let (code, ready) = provider.ready().await?;
    assert_eq!(code, 200, "/ready while pending: {ready}");
    assert_eq!(ready["rotation_state"], "pending", "/ready: {ready}");

    // Stable after three observations, durably. `not_stable_at`: when the
    // last read that found it not yet stable began; the stable state was
    // written after it, so the promotion comes at least DELAY later,
    // however late the test notices (no bound depends on the test's speed).
    let not_stable_at = std::cell::Cell::new(Instant::now());
    let state = wait::until(CHANGE_WITHIN, "stableAtUnix for version 2", || async {
        let read_at = Instant::now();
        let state = read_json(env.state_path()).map_err(|e| format!("{e:#}"))?;
        match registry_record(&state, 2) {
            Some(r) if r["stableAtUnix"].as_i64().unwrap_or(0) > 0 => Ok(state),
            other => {
                not_stable_at.set(read_at);
                Err(format!("{other:?}"))
            }
        }
    })
    .await?;
    let not_stable_at = not_stable_at.get();
    let v2 = registry_record(&state, 2).context("version 2 record")?;
    assert_eq!(v2["state"], "pending", "{v2}");
    assert_eq!(v2["stableObservationCount"], 3, "{v2}");
    assert_eq!(state["activeKeyId"], k1.as_str());
    // Not promoted yet: an answer read before not_stable_at + DELAY.
    let status = provider.status_json().await?;
    if not_stable_at.elapsed() < DELAY {
        assert_eq!(status["keyID"], k1, "promoted without the delay: {status}");
    }

    let hammer = Hammer::start(kms.clone(), (k1.clone(), 1), (k2.clone(), 2));
    let status = wait_key_id(&provider, &k2).await?;
    let promoted = Instant::now();
    assert!(
        promoted - not_stable_at >= DELAY,
        "promoted {:?} after the last read without the stable state, activation delay is {DELAY:?}",
        promoted - not_stable_at
    );
    // Three observations a probe interval (500ms) apart, then the delay.
    assert!(
        promoted - rotated >= DELAY + Duration::from_millis(700),
        "promoted {:?} after the rotation",
        promoted - rotated
    );
    let (old_encrypts, _) = hammer.finish().await?;
    assert!(old_encrypts > 0, "no Encrypt ran before the promotion");

    assert_eq!(status["activeVersion"], 2, "/status: {status}");
    assert_eq!(status["rotationState"], "active", "/status: {status}");
    assert_eq!(status["keyIDHash"], h(&k2), "/status: {status}");
    // Three observations and one promotion after the bootstrap generation.
    assert_eq!(status["generation"], 5, "/status: {status}");
    let state = assert_checkpoint_matches(&env)?;
    assert_eq!(state["generation"], 5);
    assert_eq!(state["activeKeyId"], k2.as_str());
    let v1 = registry_record(&state, 1).context("version 1 record")?;
    assert_eq!(v1["state"], "retired", "{v1}");
    let v2 = registry_record(&state, 2).context("version 2 record")?;
    assert_eq!(v2["state"], "active", "{v2}");
    // The content digest: v2 active, v1 retired, nothing else.
    let digest = bao_kms_core::registry::content_digest(
        &h(&k2),
        &[
            (h(&k2), bao_kms_core::registry::SnapshotState::Active),
            (
                h(v1["kubernetesKeyId"].as_str().context("v1 key_id")?),
                bao_kms_core::registry::SnapshotState::Retired,
            ),
        ],
    );
    assert_eq!(status["contentDigest"], digest.as_str(), "/status: {status}");
    // Whole seconds: floor(stable + DELAY) >= floor(stable) + DELAY.
    assert!(
        v2["promotedAtUnix"].as_i64().unwrap_or(0)
            >= v2["stableAtUnix"].as_i64().unwrap_or(i64::MAX) + DELAY.as_secs() as i64,
        "{v2}"
    );

    // Old data decrypts; new data uses version 2 explicitly.
    kms.decrypt(&old).await?;
    let new = kms.prime().await?;
    assert_eq!(new.key_id, k2);
    assert_eq!(new.annotation(VERSION_ANNOTATION).as_deref(), Some("2"));
    assert!(new.ciphertext.starts_with(b"vault:v2:"));
    kms.decrypt(&new).await?;

    let m = provider.metrics_text().await?;
    assert_eq!(metric(&m, "openbao_kms_key_version", &[]), Some(2.0));
    assert_eq!(
        metric(&m, "openbao_kms_rotation_state", &[("state", "active")]),
        Some(1.0)
    );
    assert_eq!(metric(&m, "openbao_kms_rotation_promotions_total", &[]), Some(1.0));
    assert_eq!(
        metric(&m, "openbao_kms_status_key_id_hash", &[("hash", &h(&k2))]),
        Some(1.0)
    );
    assert_eq!(metric(&m, "openbao_kms_status_key_id_hash", &[("hash", &h(&k1))]), None);

    let log = provider.stderr();
    let promoted_line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "key.promoted")
        .context("no key.promoted log line")?;
    assert_eq!(promoted_line["old_key_id_hash"], h(&k1), "{promoted_line}");
    assert_eq!(promoted_line["new_key_id_hash"], h(&k2), "{promoted_line}");
    assert_eq!(promoted_line["old_transit_key_version"], 1, "{promoted_line}");
    assert_eq!(promoted_line["new_transit_key_version"], 2, "{promoted_line}");
    assert!(
        !log.contains(&k1) && !log.contains(&k2),
        "logs carry key_id hashes only"
    );
    Ok(())
}

#[tokio::test]
async fn back_to_back_rotations_retain_the_skipped_version_a_peer_encrypted_with() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, "transit", KEY)?;
    let node_a = fast(ProviderEnv::builder(&bao, &p)).rotation(2, "1s").build()?;
    let lineage = node_a.settings().key_lineage_id.clone();
    let node_b = fast(ProviderEnv::builder(&bao, &p))
        .with(|s| s.key_lineage_id = lineage)
        .rotation(1, "500ms")
        .build()?;

    let mut a = Provider::start(&node_a).await?;
    let seed_v1 = a.client().await?.prime().await?;
    // Node A goes down for maintenance; B promotes v2 and encrypts with it.
    assert_eq!(a.terminate().await?, 0);
    let b = Provider::start(&node_b).await?;
    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &node_a, 2)?;
    wait_key_id(&b, &k2).await?;
    let seed_v2 = b.client().await?.prime().await?;
    assert_eq!(seed_v2.key_id, k2);
    // The second rotation lands before A ever saw version 2.
    bao.rotate_key(&p)?;
    let k3 = expected_key_id(&bao, &p, &node_a, 3)?;

    let a = Provider::start(&node_a).await?;
    let status = wait_status(&a, "version 3 pending on node A", |s| s["pendingVersion"] == 3).await?;
    assert_eq!(status["keyID"], seed_v1.key_id.as_str(), "/status: {status}");
    assert_eq!(status["rotationState"], "pending", "/status: {status}");
    let state = assert_checkpoint_matches(&node_a)?;
    let v2 = registry_record(&state, 2).context("skipped version 2 is not retained")?;
    assert_eq!(v2["state"], "retired", "{v2}");
    assert_eq!(v2["kubernetesKeyId"], k2.as_str(), "{v2}");
    assert_eq!(
        v2["transitVersionCreatedAtUnix"].as_i64(),
        Some(bao.key_metadata(&p)?.created_unix(2)?),
        "{v2}"
    );
    assert!(
        v2.get("stableObservationCount").is_none(),
        "a skipped version is never counted: {v2}"
    );
    assert_eq!(registry_record(&state, 3).context("version 3")?["state"], "pending");

    // The peer's v2 data decrypts on A, before and after A promotes v3.
    let kms = a.client().await?;
    kms.decrypt(&seed_v2).await?;
    kms.decrypt(&seed_v1).await?;
    wait_key_id(&a, &k3).await?;
    let state = assert_checkpoint_matches(&node_a)?;
    assert_eq!(registry_record(&state, 2).context("version 2")?["state"], "retired");
    assert_eq!(registry_record(&state, 1).context("version 1")?["state"], "retired");
    kms.decrypt(&seed_v2).await?;
    kms.decrypt(&seed_v1).await?;
    let seed_v3 = kms.prime().await?;
    assert_eq!(seed_v3.annotation(VERSION_ANNOTATION).as_deref(), Some("3"));
    assert!(seed_v3.ciphertext.starts_with(b"vault:v3:"));
    let log = a.stderr();
    assert!(
        log.contains("rotation.skipped_version_retained"),
        "no skipped-version log line"
    );
    Ok(())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[tokio::test]
async fn a_key_deleted_and_recreated_under_the_same_name_fails_closed() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(fast).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    let created = bao.key_metadata(&p)?.created_unix(1)?;
    let state_before = fs::read(env.state_path())?;

    // The re-created key must be created in a later second to differ.
    wait::until(Duration::from_secs(3), "a later wall-clock second", || async {
        if now_unix() > created {
            Ok(())
        } else {
            Err(format!("still {created}"))
        }
    })
    .await?;
    let path = format!("{}/keys/{}", p.mount, p.key);
    bao.bao(&["write", &format!("{path}/config"), "deletion_allowed=true"])?;
    bao.bao(&["delete", &path])?;
    bao.bao(&["write", "-f", &path, "type=aes256-gcm96"])?;
    let recreated = bao.key_metadata(&p)?.created_unix(1)?;
    assert_ne!(recreated, created, "the re-created key kept the creation second");

    let status = wait_status(&provider, "identity_drift", |s| has_reason(s, "identity_drift")).await?;
    assert_eq!(status["healthy"], false, "/status: {status}");
    assert_eq!(status["keyID"], "", "/status: {status}");
    assert_eq!(status["rotationState"], "unknown", "/status: {status}");
    let text = status["reasons"].to_string();
    assert!(text.contains("version 1 creation time changed"), "/status: {status}");

    let kms_status = kms.status().await?;
    assert_ne!(kms_status.healthz, "ok");
    assert!(kms_status.key_id.is_empty(), "{kms_status:?}");
    let (code, ready) = provider.ready().await?;
    assert_eq!(code, 503, "/ready: {ready}");
    assert!(has_reason(&ready, "identity_drift"), "/ready: {ready}");
    let err = kms
        .encrypt(&[1u8; 32])
        .await
        .expect_err("Encrypt under a re-created key");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    // The old data is not readable with the new key material either.
    assert!(kms.decrypt(&stored).await.is_err());
    let m = provider.metrics_text().await?;
    assert_eq!(
        metric(&m, "openbao_kms_rotation_state", &[("state", "unknown")]),
        Some(1.0)
    );
    assert_eq!(metric(&m, "openbao_kms_status_key_id_hash", &[]), None);
    assert_eq!(
        fs::read(env.state_path())?,
        state_before,
        "the registry must not be rewritten"
    );
    Ok(())
}

#[tokio::test]
async fn min_decryption_version_above_a_referenced_version_is_an_availability_finding() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(|b| fast(b).rotation(1, "500ms")).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let seed_v1 = kms.prime().await?;
    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &env, 2)?;
    wait_key_id(&provider, &k2).await?;
    let seed_v2 = kms.prime().await?;

    let config = format!("{}/keys/{}/config", p.mount, p.key);
    bao.bao(&["write", &config, "min_decryption_version=2"])?;
    let (code, ready) = wait::until(CHANGE_WITHIN, "/ready 503 with profile_invalid", || async {
        match provider.ready().await {
            Ok((503, r)) if has_reason(&r, "profile_invalid") => Ok((503, r)),
            Ok((c, r)) => Err(format!("{c} {r}")),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    assert_eq!(code, 503);
    assert_eq!(ready["status"], "unavailable", "/ready: {ready}");
    let status = provider.status_json().await?;
    let text = status["reasons"].to_string();
    assert!(
        text.contains("blocking/api_server_availability: min_decryption_version=2 excludes version 1"),
        "/status: {status}"
    );
    assert_eq!(status["keyID"], "", "/status: {status}");
    assert!(kms.decrypt(&seed_v1).await.is_err(), "Transit refuses version 1 now");

    // Repaired without a restart: the same key_id comes back, old data reads.
    bao.bao(&["write", &config, "min_decryption_version=1"])?;
    wait_key_id(&provider, &k2).await?;
    kms.decrypt(&seed_v1).await?;
    kms.decrypt(&seed_v2).await?;
    Ok(())
}

#[tokio::test]
async fn save_failures_are_unhealthy_and_stop_encrypt_while_decrypt_continues() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(|b| fast(b).rotation(2, "2s")).await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let seed_v1 = kms.prime().await?;
    let k1 = seed_v1.key_id.clone();
    // A directory where the state file's temp file goes: every save fails
    // before anything on disk changes (the provider runs as any user).
    let blocker = env
        .state_path()
        .parent()
        .context("state dir")?
        .join(".key-registry.json.tmp");
    fs::create_dir(&blocker)?;

    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &env, 2)?;
    let ready = wait::until(CHANGE_WITHIN, "persistence_degraded", || async {
        match provider.ready().await {
            Ok((503, r)) if r["persistence_degraded"] == true => Ok(r),
            Ok((c, r)) => Err(format!("{c} {r}")),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    assert_eq!(ready["rotation_state"], "pending", "/ready: {ready}");
    assert!(has_reason(&ready, "state_unavailable"), "/ready: {ready}");
    let status = provider.status_json().await?;
    assert_eq!(status["healthy"], false, "/status: {status}");
    assert!(has_reason(&status, "state_unavailable"), "/status: {status}");
    assert_eq!(status["generation"], 1, "nothing new is published: {status}");
    kms.decrypt(&seed_v1).await?;
    let m = provider.metrics_text().await?;
    assert_eq!(metric(&m, "openbao_kms_rotation_persistence_degraded", &[]), Some(1.0));
    assert_eq!(read_json(env.state_path())?["generation"], 1);

    // Disk repaired: the observations are saved and become stable.
    fs::remove_dir(&blocker)?;
    wait::until(CHANGE_WITHIN, "stable version 2 on disk", || async {
        let state = read_json(env.state_path()).map_err(|e| format!("{e:#}"))?;
        match registry_record(&state, 2) {
            Some(r) if r["stableAtUnix"].as_i64().unwrap_or(0) > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    // The promotion save fails: Encrypt stops, Decrypt continues.
    fs::create_dir(&blocker)?;
    let status = wait_status(&provider, "state_save_failed", |s| has_reason(s, "state_save_failed")).await?;
    assert_eq!(status["healthy"], false, "/status: {status}");
    assert_eq!(status["keyID"], "", "/status: {status}");
    assert_eq!(
        status["activeVersion"], 1,
        "nothing is published before it is durable: {status}"
    );
    let (code, ready) = provider.ready().await?;
    assert_eq!(code, 503, "/ready: {ready}");
    let err = kms
        .encrypt(&[2u8; 32])
        .await
        .expect_err("Encrypt after a failed promotion save");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    kms.decrypt(&seed_v1).await?;
    assert_eq!(read_json(env.state_path())?["activeKeyId"], k1.as_str());

    fs::remove_dir(&blocker)?;
    let status = wait_key_id(&provider, &k2).await?;
    assert_eq!(status["persistenceDegraded"], false, "/status: {status}");
    assert_checkpoint_matches(&env)?;
    let m = provider.metrics_text().await?;
    assert_eq!(metric(&m, "openbao_kms_rotation_persistence_degraded", &[]), Some(0.0));
    assert_eq!(counter(&m, "openbao_kms_rotation_promotions_total", &[]), 1.0);
    kms.decrypt(&seed_v1).await?;
    assert_eq!(kms.prime().await?.key_id, k2);
    Ok(())
}

#[tokio::test]
async fn three_nodes_converge_and_read_data_of_the_first_to_promote_before_they_promote() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, "transit", KEY)?;
    let first = fast(ProviderEnv::builder(&bao, &p)).rotation(2, "500ms").build()?;
    let lineage = first.settings().key_lineage_id.clone();
    let mut envs = vec![first];
    for delay in ["5s", "7s"] {
        let lineage = lineage.clone();
        envs.push(
            fast(ProviderEnv::builder(&bao, &p))
                .with(move |s| s.key_lineage_id = lineage)
                .rotation(2, delay)
                .build()?,
        );
    }
    let mut nodes = Vec::new();
    for env in &envs {
        nodes.push(Provider::start(env).await?);
    }
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.client().await?);
    }
    let seed_v1: EncryptedSeed = clients[0].prime().await?;
    for kms in &clients {
        assert_eq!(kms.healthy_status().await?.key_id, seed_v1.key_id);
    }

    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &envs[0], 2)?;
    wait_key_id(&nodes[0], &k2).await?;
    let seed_v2 = clients[0].prime().await?;
    assert_eq!(seed_v2.key_id, k2);
    for (node, kms) in nodes.iter().zip(&clients).skip(1) {
        kms.decrypt(&seed_v2).await?;
        // Still the old key_id after that Decrypt: it was served from the
        // pending snapshot, before this node promoted.
        let status = node.status_json().await?;
        assert_eq!(status["keyID"], seed_v1.key_id.as_str(), "/status: {status}");
        assert_eq!(status["rotationState"], "pending", "/status: {status}");
    }

    let mut statuses = Vec::new();
    for node in &nodes {
        statuses.push(wait_key_id(node, &k2).await?);
    }
    for s in &statuses {
        assert_eq!(s["keyIDHash"], h(&k2), "/status: {s}");
        assert_eq!(s["generation"], statuses[0]["generation"], "/status: {s}");
        assert_eq!(s["activeVersion"], 2, "/status: {s}");
    }
    for (node, kms) in nodes.iter().zip(&clients) {
        let m = node.metrics_text().await?;
        assert_eq!(
            metric(&m, "openbao_kms_status_key_id_hash", &[("hash", &h(&k2))]),
            Some(1.0)
        );
        kms.decrypt(&seed_v1).await?;
        kms.decrypt(&seed_v2).await?;
        assert_eq!(kms.prime().await?.key_id, k2);
    }
    Ok(())
}

#[tokio::test]
async fn an_unknown_key_id_of_a_newer_version_is_discovered_once_per_probe_interval() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev().await?;
    let p = provision(&bao, "transit", KEY)?;
    // Node A probes rarely: it will not observe the rotation during the test.
    let node_a = ProviderEnv::builder(&bao, &p)
        .probe_interval("30s")
        .deep_probe_interval("30s")
        .status_max_staleness("60s")
        .build()?;
    let lineage = node_a.settings().key_lineage_id.clone();
    let node_b = fast(ProviderEnv::builder(&bao, &p))
        .with(|s| s.key_lineage_id = lineage)
        .rotation(1, "500ms")
        .build()?;
    let a = Provider::start(&node_a).await?;
    let b = Provider::start(&node_b).await?;
    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &node_a, 2)?;
    wait_key_id(&b, &k2).await?;
    let seed_v2 = b.client().await?.prime().await?;

    let kms = a.client().await?;
    let before = a.metrics_text().await?;
    kms.decrypt(&seed_v2).await?;
    let after = a.metrics_text().await?;
    let reads = [("operation", "transit_metadata_read")];
    assert_eq!(
        bao_kms_system_tests::increase(&before, &after, "openbao_kms_openbao_requests_total", &reads),
        1.0,
        "one metadata read for the discovery"
    );
    let status = a.status_json().await?;
    assert_eq!(status["rotationState"], "active", "never an observation: {status}");
    assert_ne!(status["keyID"], k2.as_str(), "never promoted: {status}");
    assert_eq!(status["pendingVersion"], 2, "/status: {status}");
    let state = assert_checkpoint_matches(&node_a)?;
    let v2 = registry_record(&state, 2).context("discovered version 2 is not saved")?;
    assert_eq!(v2["state"], "pending", "{v2}");
    assert!(
        v2.get("stableObservationCount").is_none(),
        "discovery never counts: {v2}"
    );
    assert!(a.stderr().contains("rotation.discovered"));
    // Known now: no further read.
    kms.decrypt(&seed_v2).await?;

    // Another unknown key_id within the probe interval: refused without a read.
    let mut forged = seed_v2.decrypt_request();
    forged.key_id = KeyId::derive(&node_a.scope(), 3, 1_700_000_000)?.as_str().to_owned();
    let before = a.metrics_text().await?;
    let err = kms.decrypt_raw(forged).await.expect_err("unknown key_id");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let after = a.metrics_text().await?;
    assert_eq!(
        bao_kms_system_tests::increase(&before, &after, "openbao_kms_openbao_requests_total", &reads),
        0.0,
        "discovery is rate-limited to one attempt per probe interval"
    );
    assert_eq!(
        bao_kms_system_tests::increase(
            &before,
            &after,
            "openbao_kms_decrypt_key_id_errors_total",
            &[("reason", "key_id_unknown")]
        ),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn a_node_restarted_after_min_encryption_version_was_raised_starts_and_promotes() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(|b| fast(b).rotation(2, "1s")).await?;
    let mut provider = Provider::start(&env).await?;
    let seed_v1 = provider.client().await?.prime().await?;
    provider.terminate().await?;

    // While this node is down, the operator rotates and forbids version 1
    // for new encryptions before the node could observe the rotation.
    bao.rotate_key(&p)?;
    let k2 = expected_key_id(&bao, &p, &env, 2)?;
    let config = format!("{}/keys/{}/config", p.mount, p.key);
    bao.bao(&["write", &config, "min_encryption_version=2"])?;

    // It starts (serving Decrypt, refusing Encrypt) instead of exiting ...
    let provider = Provider::spawn(&env)?;
    let status = wait_status(&provider, "encryption_blocked after start", |s| {
        has_reason(s, "encryption_blocked")
    })
    .await?;
    assert_eq!(status["healthy"], false, "/status: {status}");
    assert_eq!(status["keyID"], "", "/status: {status}");
    let (code, _) = provider.ready().await?;
    assert_eq!(code, 503);
    let kms = provider.client().await?;
    let refused = kms.prime().await;
    assert!(refused.is_err(), "Encrypt must be refused while encryption is blocked");
    kms.decrypt(&seed_v1).await?;
    assert!(provider.stderr().contains("serve.started_observing"));

    // ... and the probes promote version 2, which clears the block.
    wait_key_id(&provider, &k2).await?;
    let seed_v2 = kms.prime().await?;
    assert_eq!(seed_v2.key_id, k2);
    assert!(seed_v2.ciphertext.starts_with(b"vault:v2:"));
    kms.decrypt(&seed_v1).await?;
    let state = assert_checkpoint_matches(&env)?;
    assert_eq!(state["activeKeyId"], k2.as_str());
    Ok(())
}
