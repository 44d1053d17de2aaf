//! The tables of `docs/install.md` that tests check a node against, read
//! from the document itself so the document stays the one source:
//!
//! - the systemd model's "Directories, owners and modes" table
//!   ([`systemd_layout`]): path, owner, group, mode and who makes it;
//! - "What the package installs" ([`package_contents`]): path (a `*` matches
//!   within one file name) and mode of every file of the Debian package;
//! - the `systemd-analyze security` score the guide documents
//!   ([`documented_security_score`]).

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::provider::workspace_root;

/// Who creates a path of the systemd layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MadeBy {
    /// The package's maintainer script (sysusers.d, tmpfiles.d).
    Package,
    /// `node-setup.sh` rendered by `init`.
    NodeSetup,
    /// The running provider (the socket).
    Provider,
}

/// One row of the systemd layout table.
#[derive(Clone, Debug)]
pub struct LayoutRow {
    pub path: String,
    pub owner: String,
    pub group: String,
    /// Octal, as `stat -c %a` prints it (no leading zero).
    pub mode: u32,
    pub made_by: MadeBy,
}

/// One row of the package contents table.
#[derive(Clone, Debug)]
pub struct PackageRow {
    pub pattern: String,
    pub mode: u32,
}

pub fn install_md() -> PathBuf {
    workspace_root().join("docs/install.md")
}

fn document() -> anyhow::Result<String> {
    std::fs::read_to_string(install_md()).with_context(|| format!("reading {}", install_md().display()))
}

/// The rows of the first Markdown table after `heading`, as cells with the
/// backticks removed; the header and separator lines are skipped.
fn table_after(doc: &str, heading: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let start = doc
        .find(heading)
        .with_context(|| format!("docs/install.md has no {heading:?}"))?;
    let rows: Vec<Vec<String>> = doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect();
    if rows.is_empty() {
        bail!("docs/install.md: no table after {heading:?}");
    }
    Ok(rows)
}

fn octal(cell: &str) -> anyhow::Result<u32> {
    u32::from_str_radix(cell, 8).with_context(|| format!("mode {cell:?} is not octal"))
}

pub fn systemd_layout() -> anyhow::Result<Vec<LayoutRow>> {
    table_after(&document()?, "### systemd model")?
        .into_iter()
        .map(|cells| {
            let [path, owner_group, mode, made_by, ..] = cells.as_slice() else {
                bail!("systemd layout row {cells:?} has fewer than four cells");
            };
            let (owner, group) = owner_group
                .split_once(':')
                .with_context(|| format!("{path}: owner {owner_group:?} is not user:group"))?;
            let made_by = match made_by.as_str() {
                "package" => MadeBy::Package,
                "node-setup" => MadeBy::NodeSetup,
                "provider" => MadeBy::Provider,
                other => bail!("{path}: unknown 'Made by' {other:?}"),
            };
            Ok(LayoutRow {
                path: path.clone(),
                owner: owner.to_owned(),
                group: group.to_owned(),
                mode: octal(mode)?,
                made_by,
            })
        })
        .collect()
}

pub fn package_contents() -> anyhow::Result<Vec<PackageRow>> {
    table_after(&document()?, "### What the package installs")?
        .into_iter()
        .map(|cells| {
            let [pattern, mode, ..] = cells.as_slice() else {
                bail!("package row {cells:?} has fewer than two cells");
            };
            Ok(PackageRow {
                pattern: pattern.clone(),
                mode: octal(mode)?,
            })
        })
        .collect()
}

/// Whether `path` matches `pattern`: equal, or equal but for one `*` in the
/// last component standing for any characters other than `/`.
pub fn matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((prefix, suffix)) => {
            path.len() >= prefix.len() + suffix.len()
                && path.starts_with(prefix)
                && path.ends_with(suffix)
                && !path[prefix.len()..path.len() - suffix.len()].contains('/')
        }
    }
}

/// The score in "`systemd-analyze security` rates it **X (LABEL)**".
pub fn documented_security_score() -> anyhow::Result<(f64, String)> {
    // Line breaks of the Markdown source are spaces.
    let doc = document()?.split_whitespace().collect::<Vec<_>>().join(" ");
    let marker = "`systemd-analyze security` rates it **";
    let at = doc
        .find(marker)
        .context("docs/install.md documents no security score")?
        + marker.len();
    let rest = &doc[at..];
    let end = rest.find("**").context("unterminated score")?;
    let (score, label) = rest[..end].split_once(' ').context("score is not 'X (LABEL)'")?;
    Ok((
        score.parse().context("score is not a number")?,
        label.trim_matches(|c| c == '(' || c == ')').to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guide_tables_parse() {
        let layout = systemd_layout().unwrap();
        assert!(layout.iter().any(|r| r.path == "/run/openbao-kms" && r.mode == 0o2750));
        assert!(layout.iter().any(|r| r.made_by == MadeBy::Provider));
        assert!(!package_contents().unwrap().is_empty());
        assert!(documented_security_score().unwrap().0 > 0.0);
    }

    #[test]
    fn star_matches_within_one_name() {
        assert!(matches("/usr/share/man/man1/a*.1.gz", "/usr/share/man/man1/a-b.1.gz"));
        assert!(!matches("/usr/share/man/man1/a*.1.gz", "/usr/share/man/man1/x/a.1.gz"));
        assert!(matches("/usr/bin/x", "/usr/bin/x"));
        assert!(!matches("/usr/bin/x", "/usr/bin/xy"));
    }
}
