//! The provider keeps a short-lived token alive: inside
//! `auth.loginBeforeTokenExpiry` it renews with `auth.tokenRenewalIncrement`,
//! so it serves well past the token's original lifetime without an outage
//! and without logging in again. A login that hangs ends at
//! `auth.loginTimeout`, not at `openbao.timeout`.

use std::time::{Duration, Instant};

use bao_kms_system_tests::provider::dev_setup_with;
use bao_kms_system_tests::{Provider, counter, wait};
use serde_json::Value;

/// The token's lifetime when issued; the provider must outlive it.
const TOKEN_TTL_SECS: u64 = 6;
const RENEWALS_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn short_lived_token_is_renewed_before_it_expires() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(|b| {
        b.with(|s| {
            s.login_before_token_expiry = "4s".into();
            s.token_renewal_increment = "8s".into();
        })
    })
    .await?;
    let short = bao
        .bao(&[
            "token",
            "create",
            "-no-default-policy",
            &format!("-policy={}", p.policy_name),
            &format!("-ttl={TOKEN_TTL_SECS}s"),
            "-field=token",
        ])?
        .trim()
        .to_owned();
    env.write_token(&short)?;
    let issued = Instant::now();

    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;

    // Two renewals: the second one extends a lease that was itself renewed.
    wait::until(RENEWALS_WITHIN, "two successful renewals", || async {
        match provider.metrics_text().await {
            Ok(text) if counter(&text, "openbao_kms_auth_renewal_total", &[("status", "ok")]) >= 2.0 => Ok(()),
            Ok(text) => Err(text),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    // Outlive the token's original lifetime, then prove it still works.
    let original_expiry = Duration::from_secs(TOKEN_TTL_SECS + 1);
    if let Some(left) = original_expiry.checked_sub(issued.elapsed()) {
        tokio::time::sleep(left).await;
    }
    kms.decrypt(&stored).await?;
    let again = kms.prime().await?;
    assert_eq!(again.key_id, stored.key_id);

    let text = provider.metrics_text().await?;
    assert_eq!(
        counter(&text, "openbao_kms_auth_renewal_total", &[("status", "error")]),
        0.0,
        "{text}"
    );
    assert_eq!(
        counter(&text, "openbao_kms_auth_login_total", &[("status", "ok")]),
        1.0,
        "{text}"
    );
    let status = provider.status_json().await?;
    assert_eq!(status["healthy"], true, "{status}");
    assert!(!provider.stderr().contains(&short), "the token must never be logged");
    Ok(())
}

#[tokio::test]
async fn a_hung_login_ends_at_the_login_timeout_not_the_request_timeout() -> anyhow::Result<()> {
    let (bao, _p, env) = dev_setup_with(|b| {
        b.with(|s| {
            s.openbao_timeout = "1s".into();
            s.grace_timeout = "4s".into();
        })
    })
    .await?;
    let yaml = env.config_yaml().replace("auth:\n", "auth:\n  loginTimeout: 3s\n");
    env.write_config_text(&yaml)?;

    // OpenBao accepts connections but never answers.
    bao.freeze()?;
    let (code, stderr) = Provider::spawn(&env)?
        .wait_exit_without_socket(Duration::from_secs(20))
        .await?;
    bao.thaw()?;
    assert_eq!(code, 5, "{stderr}");
    let lines: Vec<Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let failed_login = lines
        .iter()
        .find(|l| l["message"] == "auth.login" && l["status"] == "error")
        .unwrap_or_else(|| panic!("no failed auth.login line in {stderr}"));
    assert_eq!(failed_login["error_class"], "timeout", "{failed_login}");
    assert!(
        failed_login["error"]
            .as_str()
            .is_some_and(|e| e.contains("within auth.loginTimeout (3s)")),
        "{failed_login}"
    );
    // openbao.timeout (1s) did not end the token file's lookup-self first
    // (the request is logged when its deadline fires before the login's).
    for line in lines
        .iter()
        .filter(|l| l["message"] == "openbao.request" && l["openbao_operation"] == "token_lookup_self")
    {
        assert!(line["duration_ms"].as_u64() >= Some(2900), "{line}");
    }

    // Answering again, the same configuration starts.
    let provider = Provider::start(&env).await?;
    provider.client().await?.prime().await?;
    Ok(())
}
