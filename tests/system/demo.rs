//! `make demo`'s script (`scripts/demo.sh`) end to end, in a demo directory
//! of its own (`BAO_KMS_DEMO_DIR`) with the binaries under test
//! (`BAO_KMS_DEMO_BIN_DIR`): it starts OpenBao and the provider, and the
//! "Try next" block it prints at the end runs as printed, line by line, from
//! the repository: the export, `doctor`, `rotation-plan`, `probe` and
//! `make demo-rotate` each exit 0 with nothing but the printed environment
//! (no demo variable of this process reaches them). Without the export,
//! `doctor` on the demo's configuration fails on the socket directory: the
//! export is what makes the commands work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bao_kms_system_tests::provider::{provider_binary, workspace_root};

/// Stops what the demo started, whatever the test's outcome.
struct DemoStop(PathBuf);

impl Drop for DemoStop {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("scripts/demo-stop.sh"))
            .arg("--quiet")
            .env("BAO_KMS_DEMO_DIR", &self.0)
            .status();
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs one printed line in bash from `dir`, after the printed exports,
/// with none of the demo's variables inherited from this process.
fn run_line(dir: &Path, exports: &[String], line: &str) -> Output {
    let script = format!("set -euo pipefail\n{}\n{line}\n", exports.join("\n"));
    Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir)
        .env_remove("BAO_KMS_DEMO_DIR")
        .env_remove("BAO_KMS_DEMO_BIN_DIR")
        .env_remove("BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR")
        .env_remove("BAO_KMS_PROVIDER_CONFIG")
        .env_remove("BAO_KMS_PROVIDER_CONFIG_PATH")
        .env_remove("BAO_ADDR")
        .env_remove("BAO_TOKEN")
        .env_remove("BAO_CACERT")
        .output()
        .expect("bash")
}

#[test]
fn the_demo_prints_next_commands_that_run_as_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let demo_dir = tmp.path().join("demo");
    let bin_dir = provider_binary().parent().unwrap().to_path_buf();
    let _stop = DemoStop(demo_dir.clone());

    let out = Command::new(workspace_root().join("scripts/demo.sh"))
        .env("BAO_KMS_DEMO_DIR", &demo_dir)
        .env("BAO_KMS_DEMO_BIN_DIR", &bin_dir)
        .env_remove("BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/demo.sh failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();

    // The block: a header naming the directory, then indented lines.
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Try next, in a shell in "));
    let header = lines.next().unwrap_or_else(|| panic!("no 'Try next' block:\n{stdout}"));
    let dir = PathBuf::from(
        header
            .trim_start_matches("Try next, in a shell in ")
            .trim_end_matches(':'),
    );
    assert_eq!(
        dir.canonicalize().unwrap(),
        workspace_root().canonicalize().unwrap(),
        "{header}"
    );
    let block: Vec<String> = lines
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect();
    let (exports, commands): (Vec<String>, Vec<String>) = block.into_iter().partition(|l| l.starts_with("export "));
    assert_eq!(exports.len(), 1, "one export line: {stdout}");
    assert!(
        exports[0].contains("BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR=") && exports[0].contains("BAO_KMS_DEMO_DIR="),
        "{}",
        exports[0]
    );
    let wanted = [
        "bao-kms-provider doctor ",
        "bao-kms-provider rotation-plan ",
        "bao-kms-provider probe ",
        "make demo-rotate",
    ];
    assert_eq!(commands.len(), wanted.len(), "{commands:#?}");
    for (command, prefix) in commands.iter().zip(wanted) {
        assert!(command.starts_with(prefix), "{command} should start with {prefix}");
    }

    // Without the printed environment the demo's socket path is refused.
    let bare = format!("{}/{}", bin_dir.display(), commands[0]);
    let out = run_line(&dir, &[], &bare);
    assert!(
        !out.status.success(),
        "doctor passed without the export: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("server.socketPath")
            || String::from_utf8_lossy(&out.stderr).contains("server.socketPath"),
        "{}",
        text(&out)
    );

    for command in &commands {
        let out = run_line(&dir, &exports, command);
        assert!(out.status.success(), "`{command}` as printed: {}", text(&out));
    }
}
