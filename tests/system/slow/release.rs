//! The release kit `make release` assembles in `dist/`
//! (`packaging/build-release.py`) from the image and package `make test`
//! already built:
//!
//! - exactly the documented files; `SHA256SUMS` names every other file with
//!   its right sum (`sha256sum -c` passes);
//! - the OCI archive and the .deb are the very bytes the image and package
//!   tiers test; the manifest names this commit, the workspace version, the
//!   image digest (the one `index.json` inside the archive points to) and
//!   every file's size and sum;
//! - the Helm chart package unpacks to the chart at this version;
//! - the kubectl plugin archive holds `kubectl-bao_kms` (the preflight,
//!   whose usage says `kubectl bao-kms`) and the krew manifest names the
//!   archive's sha256;
//! - the SBOMs are CycloneDX 1.5 documents describing each binary, whose
//!   components are Cargo.lock's packages (name, version, `pkg:cargo` purl)
//!   with a dependency graph over them;
//! - a second build into another directory gives the same `SHA256SUMS`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use bao_kms_system_tests::process::run_checked;
use bao_kms_system_tests::provider::workspace_root;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::image::{archive_path, published_digest};
use super::package::deb_path;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn dist() -> PathBuf {
    let dir = std::env::var_os("BAO_KMS_DIST").map_or_else(|| workspace_root().join("dist"), PathBuf::from);
    assert!(
        dir.join("SHA256SUMS").is_file(),
        "{} has no release kit: run `make release` first",
        dir.display()
    );
    dir
}

fn sha256_file(path: &Path) -> String {
    Sha256::digest(fs::read(path).expect("a file of the kit"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).expect("a JSON file of the kit"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run_checked(cmd).expect("the command succeeds").stdout).expect("UTF-8 output")
}

/// `name version` of every package in Cargo.lock.
fn locked_packages() -> BTreeSet<(String, String)> {
    let lock = fs::read_to_string(workspace_root().join("Cargo.lock")).expect("Cargo.lock");
    let mut out = BTreeSet::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .expect("every Cargo.lock package has a name and a version")
        };
        out.insert((field("name"), field("version")));
    }
    out
}

#[test]
fn the_release_kit_holds_checked_artifacts_and_rebuilds_identically() {
    let dist = dist();
    let archive = archive_path();
    let deb = deb_path();
    let names: BTreeSet<String> = fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let archive_name = archive.file_name().unwrap().to_str().unwrap().to_owned();
    let deb_name = deb.file_name().unwrap().to_str().unwrap().to_owned();
    let chart_name = format!("bao-kms-preflight-{VERSION}.tgz");
    let arch = archive_name.trim_end_matches(".oci.tar").rsplit('-').next().unwrap();
    let plugin_name = format!("kubectl-bao_kms-{VERSION}-linux-{arch}.tar.gz");
    let expected: BTreeSet<String> = [
        archive_name.as_str(),
        deb_name.as_str(),
        chart_name.as_str(),
        plugin_name.as_str(),
        "bao-kms.yaml",
        "bao-kms-provider.cdx.json",
        "bao-kms-preflight.cdx.json",
        "release-manifest.json",
        "SHA256SUMS",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);

    // SHA256SUMS: every other file, each with its sum; sha256sum agrees.
    let sums_text = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    let sums: BTreeMap<String, String> = sums_text
        .lines()
        .map(|l| {
            let (sum, name) = l.split_once("  ").unwrap_or_else(|| panic!("bad line {l:?}"));
            (name.to_owned(), sum.to_owned())
        })
        .collect();
    assert_eq!(
        sums.keys().cloned().collect::<BTreeSet<_>>(),
        expected.iter().filter(|n| *n != "SHA256SUMS").cloned().collect()
    );
    for (name, sum) in &sums {
        assert_eq!(&sha256_file(&dist.join(name)), sum, "{name}");
    }
    run_checked(
        Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(&dist),
    )
    .unwrap();

    // The image and the package are the ones the other tiers test.
    assert_eq!(fs::read(dist.join(&archive_name)).unwrap(), fs::read(&archive).unwrap());
    assert_eq!(fs::read(dist.join(&deb_name)).unwrap(), fs::read(&deb).unwrap());

    // The manifest: commit, version, image digest, files.
    let manifest = json(&dist.join("release-manifest.json"));
    let head = stdout(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(workspace_root()),
    );
    assert_eq!(manifest["commit"], head.trim());
    assert_eq!(manifest["version"], VERSION);
    let digest = published_digest(&archive).unwrap();
    assert_eq!(manifest["image"]["digest"], digest.as_str());
    assert!(
        manifest["image"]["reference"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{VERSION}@{digest}"))
    );
    let index: Value =
        serde_json::from_str(&stdout(Command::new("tar").arg("-xOf").arg(&archive).arg("index.json"))).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "{index:#}");
    let files = manifest["files"].as_object().unwrap();
    assert_eq!(
        files.keys().cloned().collect::<BTreeSet<_>>(),
        expected
            .iter()
            .filter(|n| !matches!(n.as_str(), "SHA256SUMS" | "release-manifest.json"))
            .cloned()
            .collect()
    );
    for (name, entry) in files {
        let path = dist.join(name);
        assert_eq!(entry["sha256"], sha256_file(&path).as_str(), "{name}");
        assert_eq!(entry["size"], fs::metadata(&path).unwrap().len(), "{name}");
    }

    // The chart package is the chart, at the workspace version.
    let chart_yaml = stdout(
        Command::new("tar")
            .arg("-xzOf")
            .arg(dist.join(&chart_name))
            .arg("bao-kms-preflight/Chart.yaml"),
    );
    let chart: serde_yaml_ng::Value = serde_yaml_ng::from_str(&chart_yaml).unwrap();
    assert_eq!(chart["version"].as_str(), Some(VERSION), "{chart_yaml}");
    assert_eq!(chart["appVersion"].as_str(), Some(VERSION), "{chart_yaml}");
    let listed = stdout(Command::new("tar").arg("-tzf").arg(dist.join(&chart_name)));
    for template in fs::read_dir(workspace_root().join("charts/bao-kms-preflight/templates")).unwrap() {
        let name = template.unwrap().file_name().into_string().unwrap();
        assert!(
            listed
                .lines()
                .any(|l| l == format!("bao-kms-preflight/templates/{name}")),
            "{name} missing from the chart package:\n{listed}"
        );
    }

    // The kubectl plugin: the archive krew unpacks, its manifest's sum.
    let unpacked = tempfile::tempdir().unwrap();
    run_checked(
        Command::new("tar")
            .arg("-xzf")
            .arg(dist.join(&plugin_name))
            .arg("-C")
            .arg(unpacked.path()),
    )
    .unwrap();
    let help = stdout(Command::new(unpacked.path().join("kubectl-bao_kms")).arg("--help"));
    assert!(help.contains("Usage: kubectl bao-kms "), "{help}");
    assert!(unpacked.path().join("LICENSE").is_file());
    let krew_text = fs::read_to_string(dist.join("bao-kms.yaml")).unwrap();
    assert!(!krew_text.contains('@'), "a placeholder is left: {krew_text}");
    let krew: serde_yaml_ng::Value = serde_yaml_ng::from_str(&krew_text).unwrap();
    assert_eq!(krew["kind"].as_str(), Some("Plugin"));
    assert_eq!(krew["metadata"]["name"].as_str(), Some("bao-kms"));
    assert_eq!(krew["spec"]["version"].as_str(), Some(format!("v{VERSION}").as_str()));
    let platform = &krew["spec"]["platforms"][0];
    assert_eq!(platform["sha256"].as_str(), Some(sums[&plugin_name].as_str()));
    assert!(platform["uri"].as_str().unwrap().ends_with(&format!("/{plugin_name}")));
    assert_eq!(platform["bin"].as_str(), Some("kubectl-bao_kms"));

    // The SBOMs: CycloneDX 1.5, one per binary, components from Cargo.lock.
    let locked = locked_packages();
    for (package, must_have) in [
        ("bao-kms-provider", ["tonic", "tokio", "reqwest", "opentelemetry"]),
        ("bao-kms-preflight", ["kube", "tokio", "clap", "serde_json"]),
    ] {
        let bom = json(&dist.join(format!("{package}.cdx.json")));
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["specVersion"], "1.5");
        assert!(bom["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
        assert_eq!(bom["metadata"]["component"]["name"], package, "{:#}", bom["metadata"]);
        assert_eq!(bom["metadata"]["component"]["version"], VERSION);
        let components = bom["components"].as_array().unwrap();
        let names: BTreeSet<&str> = components.iter().map(|c| c["name"].as_str().unwrap()).collect();
        for name in must_have {
            assert!(names.contains(name), "{package}: no component {name}");
        }
        for c in components {
            let (name, version) = (c["name"].as_str().unwrap(), c["version"].as_str().unwrap());
            assert!(
                locked.contains(&(name.to_owned(), version.to_owned())),
                "{package}: component {name} {version} is not in Cargo.lock"
            );
            assert!(
                c["purl"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("pkg:cargo/{name}@{version}")),
                "{c:#}"
            );
        }
        // The graph: every component is a ref that some ref depends on.
        let graph = bom["dependencies"].as_array().unwrap();
        let refs: BTreeSet<&str> = graph.iter().map(|d| d["ref"].as_str().unwrap()).collect();
        let depended: BTreeSet<&str> = graph
            .iter()
            .flat_map(|d| d["dependsOn"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()))
            .collect();
        for c in components {
            let r = c["bom-ref"].as_str().unwrap();
            assert!(
                refs.contains(r) && depended.contains(r),
                "{package}: {r} is outside the graph"
            );
        }
    }

    // Built again from the same inputs: the same sums.
    let again = tempfile::tempdir().unwrap();
    run_checked(
        Command::new("python3")
            .arg(workspace_root().join("packaging/build-release.py"))
            .arg("--out")
            .arg(again.path().join("dist"))
            .arg("--deb")
            .arg(&deb)
            .arg("--image-dir")
            .arg(archive.parent().unwrap())
            // The preflight binary the kit's plugin archive was built from
            // (default: target/release, as `make release` builds it).
            .args(
                std::env::var_os("BAO_KMS_RELEASE_PREFLIGHT")
                    .map(|p| vec![std::ffi::OsString::from("--preflight"), p])
                    .unwrap_or_default(),
            ),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(again.path().join("dist/SHA256SUMS")).unwrap(),
        sums_text
    );
}
