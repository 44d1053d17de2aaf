//! Runs the JSON report commands (`bao-kms-provider doctor`, `verify-key`,
//! `rotation-plan`, ..., and `bao-kms-preflight node`) against a test env and
//! inspects their checks.

use std::process::{Command, Output};

use serde_json::Value;

use crate::provider::{ALLOWED_SOCKET_DIR_ENV, ProviderEnv, preflight_binary, provider_binary};

/// Exit code of a failed diagnostic.
pub const EXIT_DIAGNOSTIC: i32 = 4;

/// Runs doctor (with `extra` environment variables); returns the exit code
/// and the checks of its JSON report.
pub fn run_doctor(env: &ProviderEnv, extra: &[(&str, &str)]) -> anyhow::Result<(i32, Vec<Value>)> {
    run_report(env, "doctor", extra)
}

/// Runs a check-report command (`doctor`, `verify-key`) with JSON output.
pub fn run_report(env: &ProviderEnv, command: &str, extra: &[(&str, &str)]) -> anyhow::Result<(i32, Vec<Value>)> {
    run_report_with(env, command, &[], extra)
}

/// [`run_report`] with extra command-line arguments.
pub fn run_report_with(
    env: &ProviderEnv,
    command: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> anyhow::Result<(i32, Vec<Value>)> {
    let (code, report) = run_json(env, command, args, extra)?;
    anyhow::ensure!(report["name"] == command, "not a {command} report: {report}");
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    Ok((code, checks))
}

/// Runs `bao-kms-provider <command> --output json --config <env's config>
/// <args>` (with `extra` environment variables); returns the exit code and
/// the whole JSON report.
pub fn run_json(
    env: &ProviderEnv,
    command: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> anyhow::Result<(i32, Value)> {
    let out = Command::new(provider_binary())
        .args([command, "--output", "json", "--config"])
        .arg(env.config_path())
        .args(args)
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .envs(extra.iter().copied())
        .output()?;
    json_report(command, &out)
}

/// Runs `bao-kms-preflight node <args> -o json`; returns the exit code and
/// the report.
pub fn run_preflight_node(args: &[String]) -> anyhow::Result<(i32, Value)> {
    let out = Command::new(preflight_binary())
        .arg("node")
        .args(args)
        .args(["-o", "json"])
        .env_remove(ALLOWED_SOCKET_DIR_ENV)
        .output()?;
    json_report("bao-kms-preflight node", &out)
}

/// The exit code and the JSON report a command printed; an error with its
/// whole output when stdout is not JSON.
fn json_report(what: &str, out: &Output) -> anyhow::Result<(i32, Value)> {
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "{what} exited {code} and printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((code, report))
}

/// The check with `id` in a whole report; panics with the report when absent.
pub fn report_check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

/// The check with `id`; panics with the whole report when absent.
pub fn check<'a>(checks: &'a [Value], id: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {checks:#?}"))
}

/// Asserts that check `id` failed with a one-line message containing `needle`.
pub fn assert_fails(checks: &[Value], id: &str, needle: &str) {
    let c = check(checks, id);
    assert_eq!(c["status"], "fail", "{id} in {checks:#?}");
    let message = c["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{id}: {message:?} should mention {needle:?}");
    assert!(!message.contains('\n'), "{id}: one line expected: {message:?}");
}
