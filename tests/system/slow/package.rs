//! The Debian package `make deb` builds (`packaging/build-deb.py`):
//!
//! - its files are exactly the rows of docs/install.md's "What the package
//!   installs" (modes included, owned by root), with a man page for every
//!   command and subcommand the packaged binaries accept;
//! - `dpkg --root` installs it into a throwaway root, where its maintainer
//!   script creates the users, groups and every *package* directory of the
//!   systemd layout table with the documented owner and mode (names
//!   resolved through the root's own passwd and group files); a second
//!   install changes nothing; removal and purge keep the configuration and
//!   the key registry;
//! - the maintainer scripts never start, restart or enable the service;
//! - lintian reports nothing but the overrides the package justifies;
//! - the same inputs build a byte-identical package.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use bao_kms_system_tests::install_doc::{MadeBy, matches, package_contents, systemd_layout};
use bao_kms_system_tests::process::run_checked;
use bao_kms_system_tests::provider::workspace_root;
use tempfile::TempDir;

/// The package `make deb` wrote: `$BAO_KMS_DEB`, else the builder's path.
pub fn deb_path() -> PathBuf {
    let path = match std::env::var_os("BAO_KMS_DEB") {
        Some(p) => PathBuf::from(p),
        None => {
            let out = run_checked(
                Command::new("python3")
                    .arg(workspace_root().join("packaging/build-deb.py"))
                    .arg("--print-deb-path"),
            )
            .expect("packaging/build-deb.py --print-deb-path");
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    assert!(path.is_file(), "{} is missing: run `make deb` first", path.display());
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dpkg` acting on `root` only: its own database, the maintainer scripts
/// run on this host with DPKG_ROOT set (they must honour it), and the
/// dependencies (systemd, libc) are this host's.
fn dpkg(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = run_checked(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--force-not-root",
                "--log=/dev/null",
            ])
            .args(args),
    )?;
    Ok(format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

fn throwaway_root() -> anyhow::Result<TempDir> {
    let root = tempfile::Builder::new().prefix("deb-root-").tempdir()?;
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755))?;
    for dir in ["etc", "var/lib/dpkg/info", "var/lib/dpkg/updates", "run"] {
        fs::create_dir_all(root.path().join(dir))?;
    }
    fs::write(root.path().join("var/lib/dpkg/status"), "")?;
    Ok(root)
}

/// `name -> id` from a passwd or group file of the root.
fn ids(file: &Path) -> anyhow::Result<std::collections::HashMap<u32, String>> {
    Ok(fs::read_to_string(file)?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, (*f.first()?).to_owned()))
        })
        .collect())
}

/// (owner, group, mode) of `path` inside `root`, owners by name.
fn stat_in(root: &Path, path: &str) -> anyhow::Result<(String, String, u32)> {
    let meta = fs::symlink_metadata(root.join(path.trim_start_matches('/')))?;
    let users = ids(&root.join("etc/passwd"))?;
    let groups = ids(&root.join("etc/group"))?;
    let name = |table: &std::collections::HashMap<u32, String>, id: u32| match (id, table.get(&id)) {
        (_, Some(n)) => n.clone(),
        (0, None) => "root".to_owned(),
        (id, None) => id.to_string(),
    };
    Ok((
        name(&users, meta.uid()),
        name(&groups, meta.gid()),
        meta.mode() & 0o7777,
    ))
}

/// `dpkg-deb --contents`: (mode, owner/group, path) of every entry.
fn contents(deb: &Path) -> anyhow::Result<Vec<(String, String, String)>> {
    let out = run_checked(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    Ok(text(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_owned();
            (f[0].to_owned(), f[1].to_owned(), path)
        })
        .collect())
}

fn symbolic_mode(mode: u32) -> String {
    let bits = ["---", "--x", "-w-", "-wx", "r--", "r-x", "rw-", "rwx"];
    (0..3).rev().map(|i| bits[((mode >> (i * 3)) & 7) as usize]).collect()
}

#[test]
fn package_files_are_the_documented_ones() -> anyhow::Result<()> {
    let deb = deb_path();
    let rows = package_contents()?;
    let mut used = BTreeSet::new();
    for (mode, owner, path) in contents(&deb)? {
        assert_eq!(owner, "root/root", "{path}");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{path}");
            continue;
        }
        let row = rows
            .iter()
            .position(|r| matches(&r.pattern, &path))
            .unwrap_or_else(|| panic!("{path} is in the package but in no row of docs/install.md"));
        used.insert(row);
        let kind = if mode.starts_with('l') { 'l' } else { '-' };
        let want = format!("{kind}{}", symbolic_mode(rows[row].mode));
        assert_eq!(mode, want, "{path}");
    }
    for (i, row) in rows.iter().enumerate() {
        assert!(
            used.contains(&i),
            "{} is documented but not in the package",
            row.pattern
        );
    }
    Ok(())
}

/// The commands of `bin args... --help`, recursively: `[["serve"],
/// ["policy"], ["policy", "openbao"], ...]`.
fn commands(bin: &Path, prefix: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    let out = run_checked(Command::new(bin).args(prefix).arg("--help"))?;
    let help = text(&out.stdout);
    let mut found = Vec::new();
    for line in help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
    {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name == "help" {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(name.to_owned());
        found.extend(commands(bin, &path)?);
        found.push(path);
    }
    Ok(found)
}

#[test]
fn installs_into_a_throwaway_root_with_the_documented_layout() -> anyhow::Result<()> {
    let deb = deb_path();
    let root = throwaway_root()?;
    let r = root.path();
    dpkg(r, &["--install", &deb.display().to_string()])?;

    // Users and groups from sysusers.d.
    let passwd = fs::read_to_string(r.join("etc/passwd"))?;
    let group = fs::read_to_string(r.join("etc/group"))?;
    let user = passwd
        .lines()
        .find(|l| l.starts_with("openbao-kms:"))
        .unwrap_or_else(|| panic!("no openbao-kms user: {passwd}"));
    assert!(user.ends_with(":/var/lib/openbao-kms:/usr/sbin/nologin"), "{user}");
    let socket_group = group
        .lines()
        .find(|l| l.starts_with("openbao-kms-socket:"))
        .unwrap_or_else(|| panic!("no socket group: {group}"));
    assert!(socket_group.ends_with(":openbao-kms"), "{socket_group}");

    // Every directory the package makes, as the guide documents it.
    let layout = systemd_layout()?;
    let package_rows: Vec<_> = layout.iter().filter(|row| row.made_by == MadeBy::Package).collect();
    assert!(package_rows.len() >= 5, "{layout:?}");
    for row in &package_rows {
        let got = stat_in(r, &row.path).map_err(|e| anyhow::anyhow!("{}: {e}", row.path))?;
        assert_eq!(
            got,
            (row.owner.clone(), row.group.clone(), row.mode),
            "{}: (owner, group, mode)",
            row.path
        );
    }
    // The rest is not the package's to create.
    for row in layout.iter().filter(|row| row.made_by != MadeBy::Package) {
        assert!(!r.join(row.path.trim_start_matches('/')).exists(), "{}", row.path);
    }

    // A man page for every command the packaged binaries accept.
    let man = r.join("usr/share/man/man1");
    for bin in ["bao-kms-provider", "bao-kms-preflight"] {
        let binary = r.join("usr/bin").join(bin);
        let mut pages = vec![format!("{bin}.1.gz")];
        pages.extend(
            commands(&binary, &[])?
                .iter()
                .map(|c| format!("{bin}-{}.1.gz", c.join("-"))),
        );
        for page in pages {
            assert!(man.join(&page).is_file(), "no man page {page}");
        }
    }

    // The kubectl plugin name runs the preflight, whose usage then says
    // `kubectl bao-kms`.
    assert_eq!(
        fs::read_link(r.join("usr/bin/kubectl-bao_kms"))?,
        Path::new("bao-kms-preflight")
    );
    assert_eq!(
        fs::read_link(man.join("kubectl-bao_kms.1.gz"))?,
        Path::new("bao-kms-preflight.1.gz")
    );
    let help = run_checked(Command::new(r.join("usr/bin/kubectl-bao_kms")).arg("--help"))?;
    assert!(
        text(&help.stdout).contains("Usage: kubectl bao-kms "),
        "{}",
        text(&help.stdout)
    );

    // Installing again (an upgrade to the same version) changes nothing.
    dpkg(r, &["--install", &deb.display().to_string()])?;
    assert_eq!(fs::read_to_string(r.join("etc/passwd"))?, passwd);
    assert_eq!(fs::read_to_string(r.join("etc/group"))?, group);

    // Purge removes the package's files but keeps what decrypts the
    // cluster's data and what the operator wrote.
    fs::write(r.join("var/lib/openbao-kms/state/key-registry.json"), "{}")?;
    dpkg(r, &["--purge", "bao-kms-provider"])?;
    assert!(!r.join("usr/bin/bao-kms-provider").exists());
    assert!(!r.join("usr/lib/systemd/system/bao-kms-provider.service").exists());
    assert!(r.join("var/lib/openbao-kms/state/key-registry.json").is_file());
    assert!(r.join("etc/openbao-kms").is_dir());
    Ok(())
}

#[test]
fn maintainer_scripts_never_start_the_service() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    run_checked(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(deb_path())
            .arg(dir.path()),
    )?;
    let mut scripts = 0;
    for entry in fs::read_dir(dir.path())? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !["preinst", "postinst", "prerm", "postrm"].contains(&name.as_str()) {
            continue;
        }
        scripts += 1;
        let script = fs::read_to_string(&path)?;
        for line in script.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            for verb in ["start", "restart", "try-restart", "reload-or-restart", "enable", "stop"] {
                assert!(
                    !(line.contains("systemctl") && line.split_whitespace().any(|w| w == verb)),
                    "{name}: {line}"
                );
            }
            for helper in ["deb-systemd-invoke", "deb-systemd-helper", "invoke-rc.d", "service "] {
                assert!(!line.contains(helper), "{name}: {line}");
            }
        }
    }
    assert_eq!(scripts, 2, "postinst and postrm");
    Ok(())
}

#[test]
fn lintian_reports_nothing_unexplained() -> anyhow::Result<()> {
    let out = Command::new("lintian")
        .args([
            "--fail-on",
            "error,warning",
            "--display-info",
            "--tag-display-limit",
            "0",
        ])
        .arg(deb_path())
        .output()
        .map_err(|e| anyhow::anyhow!("lintian (make deps-deb installs it): {e}"))?;
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("lintian:\n{report}");
    assert!(out.status.success(), "{report}");
    // Informational tags too: each finding is fixed or overridden with its
    // reason. The spelling override covers byte sequences whose presence
    // depends on the build's layout, so a build without one may leave it
    // unused.
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| ["E: ", "W: ", "I: "].iter().any(|p| l.starts_with(p)))
        .filter(|l| !l.contains("unused-override spelling-error-in-binary * [usr/bin/*]"))
        .collect();
    assert!(findings.is_empty(), "{findings:#?}");
    Ok(())
}

#[test]
fn the_same_inputs_build_the_same_package() -> anyhow::Result<()> {
    let deb = deb_path();
    let dir = TempDir::new()?;
    let out = run_checked(
        Command::new("python3")
            .arg(workspace_root().join("packaging/build-deb.py"))
            .arg("--out")
            .arg(dir.path()),
    )?;
    let rebuilt = dir.path().join(deb.file_name().expect("a file name"));
    assert!(
        fs::read(&rebuilt)? == fs::read(&deb)?,
        "a rebuild differs from {} (rebuild the package with `make deb`): {}",
        deb.display(),
        text(&out.stdout)
    );
    Ok(())
}
