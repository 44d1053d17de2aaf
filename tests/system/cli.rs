//! The commands without a running provider: `version`, `completion`,
//! `config`, `config schema`, and the usage errors every command shares.
//! Exit codes: 0 ok, 2 usage, 3 configuration.

use std::process::{Command, Output};

use bao_kms_system_tests::ProviderEnv;
use bao_kms_system_tests::provider::{ALLOWED_SOCKET_DIR_ENV, dev_setup, provider_binary, workspace_root};
use serde_json::Value;

fn run(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(provider_binary()).args(args).output()?)
}

/// `config` for a test env (its socket lives in a temporary directory).
fn config_command(env: &ProviderEnv, path: &str, extra: &[(&str, &str)]) -> anyhow::Result<Output> {
    Ok(Command::new(provider_binary())
        .args(["config", "--config", path])
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .envs(extra.iter().copied())
        .output()?)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_names_the_release_and_the_commit_it_was_built_from() -> anyhow::Result<()> {
    let out = run(&["version"])?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    assert_eq!(field("version"), env!("CARGO_PKG_VERSION"));
    // Built from this checkout: the commit is HEAD's, the date its commit date.
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace_root())
        .output()?;
    if head.status.success() {
        assert_eq!(field("commit"), String::from_utf8_lossy(&head.stdout).trim());
        assert!(field("buildDate").starts_with("20"), "{text}");
        assert!(["true", "false"].contains(&field("dirty").as_str()), "{text}");
    }
    Ok(())
}

#[test]
fn completion_for_each_shell_and_usage_errors_exit_2() -> anyhow::Result<()> {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = run(&["completion", shell])?;
        assert_eq!(code(&out), 0, "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains("bao-kms-provider"), "{shell}");
        for sub in ["rotation-plan", "verify-rotation", "doctor", "probe"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    for args in [
        &["completion", "tcsh"][..],
        &["no-such-command"][..],
        &["doctor", "--no-such-flag"][..],
        &["probe", "--timeout", "soon"][..],
        &["version", "extra"][..],
    ] {
        let out = run(args)?;
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: usage errors go to stderr");
    }
    Ok(())
}

#[tokio::test]
async fn config_prints_the_resolved_configuration_and_fingerprint() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let path = env.config_path().display().to_string();
    let out = config_command(&env, &path, &[])?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let fingerprint = env.scope().fingerprint();
    assert!(
        text.trim_end()
            .ends_with(&format!("# identity fingerprint: {fingerprint}")),
        "{text}"
    );
    // Defaults are filled in: the output is the whole resolved configuration.
    for key in ["probeInterval:", "activationDelay:", "requireStableObservationCount:"] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    // An environment override shows up in the resolved output.
    let out = config_command(&env, &path, &[("BAO_KMS_PROVIDER_LOG_LEVEL", "debug")])?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("level: debug"), "{}", stdout(&out));

    // Broken files: exit 3, every problem named, nothing on stdout.
    let bad = env.dir().join("bad.yaml");
    std::fs::write(&bad, "configVersion: v1alpha1\nbogus: 1\n")?;
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let out = config_command(&env, &bad.display().to_string(), &[])?;
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    assert!(err.contains("bogus: unknown field"), "{err}");
    assert!(err.contains("transit: section is required"), "{err}");
    assert!(stdout(&out).is_empty());
    let out = config_command(&env, &env.dir().join("absent.yaml").display().to_string(), &[])?;
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("cannot read the configuration file"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn config_schema_is_a_json_schema_of_the_configuration() -> anyhow::Result<()> {
    let out = run(&["config", "schema"])?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let schema: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["$id"], "urn:bao-kms-provider:config:v1alpha1");
    assert_eq!(schema["additionalProperties"], false);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(required, ["server", "openbao", "auth", "transit"]);
    for section in [
        "server", "openbao", "auth", "transit", "rotation", "state", "status", "logging",
    ] {
        assert!(schema["properties"][section].is_object(), "no {section} in the schema");
    }
    Ok(())
}
