//! Build metadata for `bao-kms-provider version`, `/status` and the
//! `build_info` metric: the commit, the commit's date (not the wall clock,
//! so that the same commit builds the same bytes) and whether tracked files
//! differed from it. Values given in the environment win (release pipelines
//! building from a source archive); outside a git checkout they stay
//! "unknown".

use std::path::Path;
use std::process::Command;

const COMMIT: &str = "BAO_KMS_PROVIDER_COMMIT";
const BUILD_DATE: &str = "BAO_KMS_PROVIDER_BUILD_DATE";
const DIRTY: &str = "BAO_KMS_PROVIDER_DIRTY";

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    for var in [COMMIT, BUILD_DATE, DIRTY] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os(COMMIT).is_some() {
        return;
    }
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return;
    };
    // Rebuild when HEAD moves or the index changes.
    let mut watched = vec!["HEAD".to_owned(), "index".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for what in &watched {
        let path = git(&["rev-parse", "--path-format=absolute", "--git-path", what]);
        if let Some(p) = path.filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    // ... and when the sources of the binary change, so `dirty` is current.
    for dir in ["src", "core/src", "../proto", "../Cargo.lock"] {
        println!("cargo:rerun-if-changed={dir}");
    }
    println!("cargo:rustc-env={COMMIT}={commit}");
    if let Some(date) = git(&["show", "-s", "--format=%cI", "HEAD"]) {
        println!("cargo:rustc-env={BUILD_DATE}={date}");
    }
    if let Some(status) = git(&["status", "--porcelain", "--untracked-files=no"]) {
        println!("cargo:rustc-env={DIRTY}={}", !status.is_empty());
    }
}
