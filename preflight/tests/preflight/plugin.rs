//! The preflight binary as the kubectl plugin `kubectl bao-kms`: on the PATH
//! as `kubectl-bao_kms` (the Debian package's symlink), run through a real
//! `kubectl` and directly through the symlink, against the fake Kubernetes
//! API of `cluster.rs`:
//!
//! - every command (`node`, `agent`, `cluster`, `storage`, `rewrite`) is
//!   reachable and its usage names it `kubectl bao-kms <command>`;
//! - kubectl's conventions hold: `--kubeconfig` and `$KUBECONFIG`,
//!   `--context` (a kubeconfig whose current context points nowhere works
//!   with `--context` naming the good one, and fails without it), `-o
//!   json|yaml`, usage errors exit 2.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::cluster::Cluster;

/// A directory holding `kubectl-bao_kms` -> the preflight binary.
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    symlink(
        env!("CARGO_BIN_EXE_bao-kms-preflight"),
        dir.path().join(bao_kms_preflight::cli::KUBECTL_PLUGIN_FILE),
    )
    .unwrap();
    dir
}

fn kubectl() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is not on PATH: run `make deps` (Debian package kubernetes-client)")
}

/// `kubectl bao-kms <args>` with the plugin directory first on PATH.
fn via_kubectl(plugins: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let path = std::env::join_paths(
        std::iter::once(plugins.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut cmd = Command::new(kubectl());
    cmd.arg("bao-kms")
        .args(args)
        .env("PATH", path)
        .env_remove("KUBECONFIG")
        .env_remove("POD_NAMESPACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The symlink itself, as kubectl executes it.
fn via_symlink(plugins: &Path, args: &[&str]) -> Output {
    Command::new(plugins.join(bao_kms_preflight::cli::KUBECTL_PLUGIN_FILE))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("POD_NAMESPACE")
        .output()
        .unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A kubeconfig whose current context `nowhere` points at a closed port and
/// whose context `fake` is the fake API of `good`.
fn two_contexts(c: &Cluster) -> PathBuf {
    let good = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let server = good
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_owned();
    let path = c._dir.path().join("two-contexts");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n- name: nowhere\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: kube-system\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: fake\n    namespace: kube-system\ncurrent-context: nowhere\nusers:\n- name: fake\n  user:\n    token: fake-token\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn every_command_is_reachable_as_kubectl_bao_kms() {
    let plugins = plugin_dir();
    for command in ["node", "agent", "cluster", "storage", "rewrite"] {
        for out in [
            via_kubectl(plugins.path(), &[command, "--help"], &[]),
            via_symlink(plugins.path(), &[command, "--help"]),
        ] {
            assert_eq!(out.status.code(), Some(0), "{command}: {}", show(&out));
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(
                help.contains(&format!("Usage: kubectl bao-kms {command} ")),
                "{command}: {help}"
            );
        }
    }
    // A usage error exits 2 and names the plugin.
    let out = via_kubectl(plugins.path(), &["cluster", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kubectl bao-kms cluster"),
        "{}",
        show(&out)
    );
    // Under its own name the binary still calls itself bao-kms-preflight.
    let out = Command::new(env!("CARGO_BIN_EXE_bao-kms-preflight"))
        .args(["cluster", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: bao-kms-preflight cluster "));
}

#[test]
fn cluster_through_kubectl_honours_kubeconfig_context_and_output() {
    let c = Cluster::new();
    let plugins = plugin_dir();
    let kubeconfig = two_contexts(&c);
    let kc = kubeconfig.to_str().unwrap();

    // --kubeconfig and --context, -o json: the same report as the binary's.
    let out = via_kubectl(
        plugins.path(),
        &["cluster", "--kubeconfig", kc, "--context", "fake", "-o", "json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["namespace"], "kube-system");
    assert_eq!(report["nodes"].as_array().unwrap().len(), 3);

    // $KUBECONFIG, -o yaml, through the symlink alone.
    let out = via_kubectl(
        plugins.path(),
        &["cluster", "--context", "fake", "-o", "yaml"],
        &[("KUBECONFIG", kubeconfig.as_path())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let from_yaml: Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(from_yaml["checks"], report["checks"]);
    let out = via_symlink(
        plugins.path(),
        &["cluster", "--kubeconfig", kc, "--context", "fake", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // Without --context the current context (nowhere) is used, and fails.
    let out = via_kubectl(plugins.path(), &["cluster", "--kubeconfig", kc, "-o", "json"], &[]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    // An unknown context is refused, not replaced by the current one.
    let out = via_kubectl(
        plugins.path(),
        &["cluster", "--kubeconfig", kc, "--context", "missing"],
        &[],
    );
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{}",
        show(&out)
    );
}
