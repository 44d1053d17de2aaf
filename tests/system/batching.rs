//! Transit batching is item-for-item equivalent to single calls (DESIGN
//! 11), against a real OpenBao: random mixes of valid, tampered, wrong-AAD
//! and wrong-version Decrypts sent at once (so the provider batches them
//! into Transit `batch_input` calls) each get exactly the answer (code,
//! message, plaintext) the same Decrypt gets when sent alone.
//!
//! - valid: a DEK seed the provider encrypted, with its annotations;
//! - tampered: its ciphertext with one payload character changed;
//! - wrong AAD: a ciphertext of the same key and version that Transit made
//!   with other associated data, presented with valid annotations, so
//!   Transit itself refuses it;
//! - wrong version: a ciphertext naming a version the key_id does not
//!   (refused before Transit).

use std::sync::Arc;

use bao_kms_proto::v2::DecryptRequest;
use bao_kms_system_tests::provider::dev_setup;
use bao_kms_system_tests::{KmsClient, Provider, metric};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Valid,
    Tampered,
    WrongAad,
    WrongVersion,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Valid),
        1 => Just(Kind::Tampered),
        1 => Just(Kind::WrongAad),
        1 => Just(Kind::WrongVersion),
    ]
}

/// A Decrypt's answer: the plaintext, or the gRPC code and message.
type Outcome = Result<Vec<u8>, (i32, String)>;

async fn send(kms: &KmsClient, req: DecryptRequest) -> Outcome {
    kms.decrypt_raw(req)
        .await
        .map(|r| r.plaintext)
        .map_err(|s| (s.code() as i32, s.message().to_owned()))
}

/// Changes one character of the base64 payload after `vault:v1:`.
fn tamper(ciphertext: &[u8], at: usize) -> Vec<u8> {
    let mut c = ciphertext.to_vec();
    let i = 9 + at % (c.len() - 9);
    c[i] = if c[i] == b'A' { b'B' } else { b'A' };
    c
}

#[tokio::test]
async fn random_mixes_of_batched_decrypts_each_get_their_single_answer() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let mut seeds = Vec::new();
    for _ in 0..48 {
        seeds.push(kms.prime().await?);
    }
    let foreign_aad = STANDARD.encode(b"another cluster's AAD");
    let mut runner = TestRunner::deterministic();
    let mixes = proptest::collection::vec((kind(), any::<usize>()), 8..48);
    for case in 0..6 {
        let mix = mixes
            .new_tree(&mut runner)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .current();
        let mut requests = Vec::new();
        for (i, (kind, salt)) in mix.iter().enumerate() {
            let seed = &seeds[(i + case * 7) % seeds.len()];
            let mut req = seed.decrypt_request();
            match kind {
                Kind::Valid => {}
                Kind::Tampered => req.ciphertext = tamper(&req.ciphertext, *salt),
                Kind::WrongAad => {
                    let plaintext = format!("plaintext={}", STANDARD.encode(salt.to_be_bytes()));
                    let aad = format!("associated_data={foreign_aad}");
                    let path = format!("{}/encrypt/{}", p.mount, p.key);
                    let ciphertext =
                        bao.bao(&["write", "-field=ciphertext", &path, &plaintext, &aad, "key_version=1"])?;
                    req.ciphertext = ciphertext.trim().as_bytes().to_vec();
                }
                Kind::WrongVersion => {
                    let mut c = b"vault:v2:".to_vec();
                    c.extend_from_slice(&req.ciphertext[9..]);
                    req.ciphertext = c;
                }
            }
            requests.push(req);
        }
        let requests = Arc::new(requests);
        let mut at_once = JoinSet::new();
        for i in 0..requests.len() {
            let (kms, requests) = (kms.clone(), requests.clone());
            at_once.spawn(async move { (i, send(&kms, requests[i].clone()).await) });
        }
        let mut batched = vec![None; requests.len()];
        while let Some(joined) = at_once.join_next().await {
            let (i, outcome) = joined?;
            batched[i] = Some(outcome);
        }
        for (i, req) in requests.iter().enumerate() {
            let alone = send(&kms, req.clone()).await;
            assert_eq!(
                batched[i].as_ref(),
                Some(&alone),
                "case {case}, item {i} ({:?}) of mix {:?}",
                mix[i].0,
                mix.iter().map(|m| m.0).collect::<Vec<_>>()
            );
        }
    }
    let text = provider.metrics_text().await?;
    let batches = metric(&text, "openbao_kms_transit_decrypt_batch_size_count", &[]).unwrap_or(0.0);
    let items = metric(&text, "openbao_kms_transit_decrypt_batch_size_sum", &[]).unwrap_or(0.0);
    assert!(
        items > batches,
        "no Transit call carried more than one Decrypt ({items} items in {batches} calls)"
    );
    assert_eq!(
        metric(&text, "openbao_kms_transit_decrypt_batch_fallbacks_total", &[]),
        Some(0.0),
        "OpenBao 2.7 batches"
    );
    kms.healthy_status().await?;
    Ok(())
}
