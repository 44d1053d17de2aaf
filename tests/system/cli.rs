//! The commands without a running provider: `version`, `completion`,
//! `config`, `config schema`, and the usage errors every command shares.
//! Exit codes: 0 ok, 2 usage, 3 configuration.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use bao_kms_system_tests::provider::{
    ALLOWED_SOCKET_DIR_ENV, dev_setup, preflight_binary, provider_binary, workspace_root,
};
use bao_kms_system_tests::{Provider, ProviderEnv};
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

/// Runs `binary args` in `cwd` with stdout a pipe whose reading end is
/// already closed, so every write fails with `BrokenPipe`.
fn run_into_closed_pipe(binary: &Path, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let (read_end, write_end) = nix::unistd::pipe()?;
    drop(read_end);
    Ok(Command::new(binary)
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()?)
}

/// A process that stopped because its reader went away: exit 0, nothing on
/// stderr (no panic, no backtrace).
fn assert_quiet_exit(what: &str, out: &Output) {
    assert_eq!(code(out), 0, "{what}: {}", stderr(out));
    assert!(stderr(out).is_empty(), "{what}: {}", stderr(out));
}

#[tokio::test]
async fn a_closed_pipe_ends_every_command_quietly() -> anyhow::Result<()> {
    // What an operator types.
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", "\"$0\" completion bash | head -2"])
        .arg(provider_binary())
        .output()?;
    assert_quiet_exit("completion bash | head -2", &out);
    assert_eq!(stdout(&out).lines().count(), 2);

    let (_bao, _p, env) = dev_setup().await?;
    let config = env.config_path().display().to_string();
    let allowed = env.socket_dir().display().to_string();
    let socket_env = [(ALLOWED_SOCKET_DIR_ENV, allowed.as_str())];
    for args in [
        &["completion", "bash"][..],
        &["completion", "zsh"],
        &["version"],
        &["--help"],
        &["config", "schema"],
        &["config", "--config", &config],
        &["policy", "openbao", "--config", &config],
        &["doctor", "--config", &config],
        &["doctor", "-o", "json", "--config", &config],
        &["verify-key", "--config", &config],
        &["rotation-plan", "--config", &config],
    ] {
        let out = run_into_closed_pipe(&provider_binary(), args, env.dir(), &socket_env)?;
        assert_quiet_exit(&format!("{args:?}"), &out);
    }
    let out = run_into_closed_pipe(
        &preflight_binary(),
        &[
            "node",
            "--no-live",
            "--config",
            &config,
            "--allowed-socket-dir",
            &allowed,
        ],
        env.dir(),
        &[],
    )?;
    // The node report still decides the exit code; it must not panic.
    assert!(matches!(code(&out), 0 | 4), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test]
async fn relative_paths_are_taken_from_the_working_directory() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    let config_name = env
        .config_path()
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let run_in = |cwd: &Path, binary: &Path, args: &[&str]| -> anyhow::Result<Output> {
        Ok(Command::new(binary)
            .args(args)
            .current_dir(cwd)
            .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
            .output()?)
    };

    // doctor, verify-key and config read ./<config> from the env directory.
    for command in ["doctor", "verify-key"] {
        let out = run_in(
            env.dir(),
            &provider_binary(),
            &[command, "-o", "json", "--config", &config_name],
        )?;
        let report: Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(
            bao_kms_system_tests::doctor::report_check(&report, "config.load")["status"],
            "pass",
            "{command}: {report:#}"
        );
        assert_eq!(code(&out), 0, "{command}: {report:#}");
    }
    let out = run_in(env.dir(), &provider_binary(), &["config", "--config", &config_name])?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A relative BAO_KMS_PROVIDER_CONFIG too.
    let out = Command::new(provider_binary())
        .args(["config"])
        .current_dir(env.dir())
        .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
        .env("BAO_KMS_PROVIDER_CONFIG", &config_name)
        .output()?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // probe finds ./<socket> from the socket directory.
    let socket_name = env
        .socket_path()
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let out = run_in(
        &env.socket_dir(),
        &provider_binary(),
        &["probe", "-o", "json", "--socket", &socket_name],
    )?;
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));

    // The preflight's path flags as well: the configuration validates only
    // with the socket directory allowed.
    let socket_dir = env.socket_dir();
    let socket_dir_name = socket_dir
        .strip_prefix(env.dir())?
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let out = Command::new(preflight_binary())
        .args([
            "node",
            "-o",
            "json",
            "--config",
            &config_name,
            "--allowed-socket-dir",
            &socket_dir_name,
        ])
        .current_dir(env.dir())
        .env_remove(ALLOWED_SOCKET_DIR_ENV)
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        bao_kms_system_tests::doctor::report_check(&report, "config.validate")["status"],
        "pass",
        "{report:#}"
    );
    drop(provider);
    Ok(())
}

/// The JSON log lines a command wrote on stderr.
fn log_lines(out: &Output) -> Vec<Value> {
    stderr(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("level").is_some())
        .collect()
}

#[tokio::test]
async fn every_report_command_takes_output_and_log_level() -> anyhow::Result<()> {
    let (_bao, _p, env) = dev_setup().await?;
    let provider = Provider::start(&env).await?;
    let config = env.config_path().display().to_string();
    let socket = env.socket_path().display().to_string();
    // (arguments, whether the command talks to OpenBao)
    let commands: [(&[&str], bool); 9] = [
        (&["doctor", "--config", &config], true),
        (&["verify-key", "--config", &config], true),
        (&["rotation-plan", "--config", &config], true),
        (&["verify-rotation", "--config", &config], true),
        (&["retire-versions", "--config", &config, "--before-version", "2"], true),
        (&["restore-versions", "--config", &config, "--versions", "1"], true),
        (&["key-snapshots", "--config", &config], false),
        (&["probe", "--socket", &socket], false),
        (&["benchmark", "--socket", &socket, "--iterations", "1"], false),
    ];
    for (args, talks_to_openbao) in commands {
        for output in ["-o", "--output"] {
            let out = Command::new(provider_binary())
                .args(args)
                .args([output, "json", "--log-level", "debug"])
                .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
                .output()?;
            assert_ne!(code(&out), 2, "{args:?}: {}", stderr(&out));
            serde_json::from_slice::<Value>(&out.stdout)
                .map_err(|e| anyhow::anyhow!("{args:?} {output} json printed no JSON ({e}): {}", stdout(&out)))?;
            if talks_to_openbao {
                assert!(
                    log_lines(&out)
                        .iter()
                        .any(|l| l["message"] == "openbao.request" && l["level"] == "debug"),
                    "{args:?} --log-level debug: no openbao.request line in {}",
                    stderr(&out)
                );
            }
        }
        // Without the flag the report commands keep stderr free of logs.
        let out = Command::new(provider_binary())
            .args(args)
            .args(["-o", "json"])
            .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
            .output()?;
        assert!(log_lines(&out).is_empty(), "{args:?}: {}", stderr(&out));
    }
    // The remaining commands take --log-level too (init refuses it, as it
    // refuses every override).
    for args in [
        &["version"][..],
        &["config", "schema"],
        &["config", "--config", &config],
        &["policy", "openbao", "--config", &config],
        &["completion", "bash"],
    ] {
        let out = Command::new(provider_binary())
            .args(args)
            .args(["--log-level", "warn"])
            .env(ALLOWED_SOCKET_DIR_ENV, env.socket_dir())
            .output()?;
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    }

    // The preflight: -o/--output and --log-level on its report commands.
    let allowed = env.socket_dir().display().to_string();
    for output in ["-o", "--output"] {
        let out = Command::new(preflight_binary())
            .args(["node", "--config", &config, "--allowed-socket-dir", &allowed])
            .args([output, "json", "--log-level", "debug"])
            .env_remove(ALLOWED_SOCKET_DIR_ENV)
            .output()?;
        // Its verdict on this temp directory's modes does not matter here.
        assert!(matches!(code(&out), 0 | 4), "{}{}", stdout(&out), stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout)?;
        assert!(
            log_lines(&out).iter().any(|l| l["level"] == "DEBUG"),
            "node --log-level debug logged nothing: {}",
            stderr(&out)
        );
    }
    let missing = env.dir().join("no-kubeconfig").display().to_string();
    for args in [
        &["cluster", "--kubeconfig", &missing][..],
        &["rewrite", "--kubeconfig", &missing, "--encryption-config", &config],
        &["storage", "--etcd-servers", "https://127.0.0.1:1", "--timeout", "1s"],
    ] {
        let out = Command::new(preflight_binary())
            .args(args)
            .args(["-o", "json", "--log-level", "debug"])
            .output()?;
        // Flags accepted (no usage error); the missing cluster is a runtime failure.
        assert_eq!(code(&out), 5, "{args:?}: {}", stderr(&out));
    }
    drop(provider);
    Ok(())
}

#[test]
fn usage_errors_of_both_binaries_exit_2() -> anyhow::Result<()> {
    for args in [
        &["doctor", "-o", "yaml"][..],
        &["doctor", "--log-level", "loud"],
        &["probe", "--socket"],
        &["--log-level"],
    ] {
        let out = run(args)?;
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    for args in [
        &["no-such-command"][..],
        &["node", "--no-such-flag"],
        &["node", "-o", "xml"],
        &["node", "--log-level", "loud"],
        &["cluster", "--max-age", "soon"],
        &["storage", "--page-size", "0"],
        &["node", "extra"],
    ] {
        let out = Command::new(preflight_binary()).args(args).output()?;
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    Ok(())
}
