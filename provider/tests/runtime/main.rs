//! In-process component tests of the provider's runtime over a scripted
//! Transit (`support`), with time paused: the event orders that matter for
//! a rotation (observe, stabilise, promote; discovery before promotion; two
//! rotations close together), a failed save during promotion, and
//! re-login after OpenBao rejects the token; admission (`admission`): the
//! wait queue in front of each method under a burst, overload and deadlines. Each runs in milliseconds; the
//! system tests in `tests/system/` cover the same paths against a real
//! OpenBao.

#![allow(clippy::unwrap_used)]

mod admission;
mod panic_recovery;
mod support;

use std::fs;

use bao_kms_core::errors::ErrorClass;
use bao_kms_core::reason::ReasonCode;
use bao_kms_core::registry::{SnapshotState, StateFile};
use bao_kms_provider::runtime::RotationState;
use bao_kms_provider::transit::Transit;
use support::*;

fn registry(node: &Node) -> StateFile {
    StateFile::decode(&fs::read(node.state_path()).unwrap()).unwrap()
}

fn record_state(state: &StateFile, version: u64) -> Option<SnapshotState> {
    state
        .snapshots
        .iter()
        .find(|r| r.transit_version == version)
        .map(|r| r.state)
}

#[tokio::test(start_paused = true)]
async fn a_rotation_is_observed_then_promoted_after_the_delay() {
    let transit = ScriptedTransit::new();
    let node = Node::new();
    let engine = node.start(&transit).await;
    let v1 = node.snapshot(&transit, 1);
    assert_eq!(status_key_id(&engine).as_deref(), Some(v1.key_id.as_str()));
    let old = encrypt(&engine, 1).await;
    let bootstrapped = registry(&node).generation;

    transit.rotate(60);
    let v2 = node.snapshot(&transit, 2);
    engine.probe_once(false).await;
    let view = engine.view();
    assert_eq!(view.published.rotation_state, RotationState::Pending);
    assert_eq!(view.published.pending_version, Some(2));
    // Pending: decryptable, never the key_id Status reports.
    assert!(view.published.decryptable.contains_key(v2.key_id.as_str()));
    assert_eq!(status_key_id(&engine).as_deref(), Some(v1.key_id.as_str()));
    assert_eq!(record_state(&registry(&node), 2), Some(SnapshotState::Pending));

    // Stable observations alone do not promote: the delay runs on from
    // the confirmation.
    for _ in 1..STABLE_COUNT {
        engine.probe_once(false).await;
    }
    tokio::time::advance(std::time::Duration::from_secs(ACTIVATION_DELAY_SECS - 1)).await;
    engine.probe_once(false).await;
    assert_eq!(status_key_id(&engine).as_deref(), Some(v1.key_id.as_str()));
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    engine.probe_once(false).await;

    assert_eq!(status_key_id(&engine).as_deref(), Some(v2.key_id.as_str()));
    assert_eq!(engine.view().published.rotation_state, RotationState::Active);
    let state = registry(&node);
    assert_eq!(state.active().transit_version, 2);
    assert_eq!(record_state(&state, 1), Some(SnapshotState::Retired));
    assert!(state.generation > bootstrapped);
    // Encrypt now names version 2 explicitly; old data still decrypts.
    let new = encrypt(&engine, 2).await;
    assert_eq!(new.key_id, v2.key_id.as_str());
    assert_eq!(transit.encrypt_versions().last(), Some(&2));
    assert_eq!(decrypt(&engine, &old).await.unwrap(), old.seed);
    assert_eq!(decrypt(&engine, &new).await.unwrap(), new.seed);
}

#[tokio::test(start_paused = true)]
async fn data_written_by_a_node_that_promoted_first_is_discovered_then_promoted() {
    let transit = ScriptedTransit::new();
    let (ahead, behind) = (Node::new(), Node::new());
    let fast = ahead.start(&transit).await;
    let slow = behind.start(&transit).await;
    transit.rotate(60);
    // The first node promotes; its kube-apiserver writes under version 2.
    probe_until_promoted(&fast).await;
    let written = encrypt(&fast, 7).await;
    assert_eq!(written.key_id, ahead.snapshot(&transit, 2).key_id.as_str());

    // The other node has not probed since: its kube-apiserver reads that
    // object, and the unknown key_id is discovered, saved, and decrypts.
    assert_eq!(slow.view().published.pending_version, None);
    assert_eq!(decrypt(&slow, &written).await.unwrap(), written.seed);
    let state = registry(&behind);
    assert_eq!(record_state(&state, 2), Some(SnapshotState::Pending));
    assert_eq!(state.active().transit_version, 1);
    // Discovery never promotes: Status keeps version 1 ...
    let v1 = behind.snapshot(&transit, 1);
    assert_eq!(status_key_id(&slow).as_deref(), Some(v1.key_id.as_str()));
    // ... until this node's own observations and delay promote it.
    probe_until_promoted(&slow).await;
    assert_eq!(status_key_id(&slow).as_deref(), Some(written.key_id.as_str()));
    assert_eq!(registry(&behind).active().transit_version, 2);
}

#[tokio::test(start_paused = true)]
async fn discovery_reads_metadata_at_most_once_per_probe_interval() {
    let transit = ScriptedTransit::new();
    let node = Node::new();
    let engine = node.start(&transit).await;
    let reads = transit.metadata_reads();
    // A well-formed key_id of this identity that Transit does not have.
    let phantom = bao_kms_core::snapshot::KeySnapshot::new(&node.cfg.identity_scope(), 9, 1).unwrap();
    let stored = Stored {
        ciphertext: b"vault:v9:AAAA".to_vec(),
        key_id: phantom.key_id.to_string(),
        annotations: node.annotations(&phantom),
        seed: Vec::new(),
    };
    for _ in 0..5 {
        let e = decrypt(&engine, &stored).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::KeyIdUnknown, "{e}");
    }
    assert_eq!(transit.metadata_reads(), reads + 1);
    tokio::time::advance(node.cfg.status.probe_interval).await;
    decrypt(&engine, &stored).await.unwrap_err();
    assert_eq!(transit.metadata_reads(), reads + 2);
}

#[tokio::test(start_paused = true)]
async fn two_rotations_close_together_promote_the_newest_and_keep_both() {
    let transit = ScriptedTransit::new();
    let node = Node::new();
    let engine = node.start(&transit).await;
    let v1_data = encrypt(&engine, 1).await;
    transit.rotate(60);
    engine.probe_once(false).await;
    // Before version 2 is stable, version 3 arrives.
    transit.rotate(3);
    probe_until_promoted(&engine).await;
    let v3 = node.snapshot(&transit, 3);
    assert_eq!(status_key_id(&engine).as_deref(), Some(v3.key_id.as_str()));
    let state = registry(&node);
    assert_eq!(state.active().transit_version, 3);
    // Version 2 was never active here but stays decryptable: another node
    // may have promoted it and written under it.
    assert!(record_state(&state, 2).is_some_and(|s| s.decrypts()), "{state:?}");
    let v2 = node.snapshot(&transit, 2);
    assert!(engine.view().published.decryptable.contains_key(v2.key_id.as_str()));
    assert_eq!(decrypt(&engine, &v1_data).await.unwrap(), v1_data.seed);
    let v3_data = encrypt(&engine, 3).await;
    assert_eq!(transit.encrypt_versions().last(), Some(&3));
    assert_eq!(decrypt(&engine, &v3_data).await.unwrap(), v3_data.seed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_save_during_promotion_publishes_nothing_new_and_recovers() {
    let transit = ScriptedTransit::new();
    let node = Node::new();
    let engine = node.start(&transit).await;
    let v1 = node.snapshot(&transit, 1);
    transit.rotate(60);
    for _ in 0..STABLE_COUNT {
        engine.probe_once(false).await;
    }
    tokio::time::advance(std::time::Duration::from_secs(ACTIVATION_DELAY_SECS)).await;
    // The state file's place is taken by a directory: the atomic rename
    // of the promotion fails on the real file system.
    let path = node.state_path();
    let saved = fs::read(&path).unwrap();
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    fs::write(path.join("occupied"), b"x").unwrap();
    engine.probe_once(false).await;

    let view = engine.view();
    assert!(!view.healthy());
    assert!(
        view.reasons.iter().any(|r| r.code == ReasonCode::StateSaveFailed),
        "{:?}",
        view.reasons
    );
    assert_eq!(view.published.rotation_state, RotationState::Pending);
    // Nothing that is not durable is published: still version 1, and
    // Encrypt is refused rather than answered with either key.
    assert_eq!(view.published.active.key_id, v1.key_id);
    assert!(status_key_id(&engine).is_none());
    let e = engine.encrypt(&[1; 32], "uid").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::StatusUnhealthy);

    fs::remove_dir_all(&path).unwrap();
    fs::write(&path, saved).unwrap();
    engine.probe_once(false).await;
    let v2 = node.snapshot(&transit, 2);
    assert_eq!(status_key_id(&engine).as_deref(), Some(v2.key_id.as_str()));
    assert_eq!(registry(&node).active().transit_version, 2);
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_is_replaced_and_the_call_retried_once() {
    let transit = ScriptedTransit::new();
    let node = Node::new();
    let engine = node.start(&transit).await;
    let stored = encrypt(&engine, 3).await;
    assert_eq!(transit.tokens_issued(), 1);

    transit.revoke_current_token();
    assert_eq!(decrypt(&engine, &stored).await.unwrap(), stored.seed);
    assert_eq!(transit.tokens_issued(), 2);

    // The probe drops a rejected token and logs in again on the next one.
    transit.revoke_current_token();
    engine.probe_once(false).await;
    let view = engine.view();
    assert!(
        view.reasons.iter().any(|r| r.code == ReasonCode::MetadataReadFailed),
        "{:?}",
        view.reasons
    );
    assert_eq!(
        view.published.metadata_error_class,
        Some(ErrorClass::TransitPolicyDenied)
    );
    engine.probe_once(false).await;
    assert!(engine.view().healthy(), "{:?}", engine.view().reasons);
    assert_eq!(transit.tokens_issued(), 3);
    // The token in use now is the third one.
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&transit.token().await.unwrap()),
        "token-3"
    );
}

#[tokio::test(start_paused = true)]
async fn an_outage_keeps_the_key_and_goes_stale_then_recovers() {
    let transit = ScriptedTransit::new();
    let node = Node::new();
    let engine = node.start(&transit).await;
    let v1 = node.snapshot(&transit, 1);
    transit.fail_metadata(Some(bao_kms_provider::transit::BaoError {
        class: ErrorClass::OpenBaoSealed,
        op: bao_kms_provider::transit::Op::TransitMetadataRead,
        http_status: Some(503),
        message: "Vault is sealed".into(),
    }));
    engine.probe_once(false).await;
    let view = engine.view();
    assert_eq!(view.published.rotation_state, RotationState::Unknown);
    assert_eq!(view.published.active.key_id, v1.key_id);
    assert_eq!(view.published.metadata_error_class, Some(ErrorClass::OpenBaoSealed));
    transit.fail_metadata(None);
    engine.probe_once(false).await;
    assert_eq!(status_key_id(&engine).as_deref(), Some(v1.key_id.as_str()));
    // A probe that stops confirming turns into status_stale on its own.
    tokio::time::advance(node.cfg.status.status_max_staleness + std::time::Duration::from_secs(1)).await;
    let view = engine.view();
    assert!(view.stale);
    assert_eq!(view.reasons[0].code, ReasonCode::StatusStale);
    assert_eq!(
        engine.encrypt(&[1; 32], "uid").await.unwrap_err().class,
        ErrorClass::StatusStale
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_the_registry_and_the_key_id() {
    let transit = ScriptedTransit::new();
    let node = Node::new();
    let engine = node.start(&transit).await;
    transit.rotate(60);
    probe_until_promoted(&engine).await;
    let stored = encrypt(&engine, 5).await;
    let generation = registry(&node).generation;
    drop(engine);
    let again = node.start(&transit).await;
    assert_eq!(status_key_id(&again).as_deref(), Some(stored.key_id.as_str()));
    assert_eq!(again.view().published.generation, generation);
    assert_eq!(decrypt(&again, &stored).await.unwrap(), stored.seed);
}
