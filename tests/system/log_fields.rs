//! What the provider's logs carry for an operator correlating them with
//! OpenBao: the `request_id` of every OpenBao answer on the
//! `openbao.request` line (`logging.logOpenBaoRequestIDs`), matched against
//! OpenBao's own audit log, and nothing of it when switched off.

use std::collections::BTreeSet;

use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, provision};
use serde_json::Value;

/// The provider's JSON log lines.
pub fn log_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The `openbao.request` lines of one OpenBao operation.
fn request_lines<'a>(lines: &'a [Value], operation: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["message"] == "openbao.request" && l["openbao_operation"] == operation)
        .collect()
}

#[tokio::test]
async fn openbao_request_ids_match_the_audit_log_and_can_be_switched_off() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev_audited().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::new(&bao, &p)?;
    let audit = bao.audit_log();

    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;
    provider.terminate().await?;

    let lines = log_lines(&provider.stderr());
    let audited: BTreeSet<String> = std::fs::read_to_string(&audit)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["request"]["id"].as_str().map(str::to_owned))
        .collect();
    for operation in [
        "transit_encrypt",
        "transit_decrypt",
        "transit_metadata_read",
        "token_lookup_self",
    ] {
        let found = request_lines(&lines, operation);
        assert!(!found.is_empty(), "no openbao.request line for {operation}");
        for line in found {
            let id = line["openbao_request_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no openbao_request_id on {line}"));
            assert!(
                audited.contains(id),
                "{id} of {operation} is not in OpenBao's audit log"
            );
        }
    }

    // Switched off: the same lines without the field.
    env.write_config_text(&format!("{}  logOpenBaoRequestIDs: false\n", env.config_yaml()))?;
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.decrypt(&stored).await?;
    provider.terminate().await?;
    let lines = log_lines(&provider.stderr());
    let decrypts = request_lines(&lines, "transit_decrypt");
    assert!(!decrypts.is_empty(), "no openbao.request line for transit_decrypt");
    assert!(
        lines.iter().all(|l| l.get("openbao_request_id").is_none()),
        "openbao_request_id logged although logOpenBaoRequestIDs is false"
    );
    Ok(())
}
