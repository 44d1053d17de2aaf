//! Trust in the directories above the files the provider relies on (the
//! state directory, the socket directory, the credential files): whoever can
//! rename or replace any ancestor can substitute the file, so checking only
//! the last component is not enough. Pure rules over facts the shell reads
//! with `lstat` (`fsutil::check_ancestors`); `serve` and `doctor` apply them.
//!
//! Every ancestor, from `/` down to the file's own directory:
//! - is not a symlink (the path as configured is the path used);
//! - is owned by root or by the service user;
//! - is not group- or world-writable, except a root-owned directory with the
//!   sticky bit (`/tmp`, `/var/tmp`): there only an entry's owner can rename
//!   or remove it, which is what hardened tools (sudo, ssh-agent sockets,
//!   systemd's `PrivateTmp` users) rely on too.
//!
//! The state file itself must be owned by the service user.

use std::path::PathBuf;

use crate::config::{AuthMethod, CertSource, Config, JwtSource};

/// What `lstat` says about one path component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub path: String,
    pub is_symlink: bool,
    pub uid: u32,
    /// Permission bits including the sticky bit (`st_mode & 0o7777`).
    pub mode: u32,
}

const STICKY: u32 = 0o1000;

/// The verdict for the ancestors of one file, in order from `/`: `Err`
/// names the first offending directory and why.
pub fn ancestors_verdict(components: &[Component], service_uid: u32) -> Result<(), String> {
    for c in components {
        if c.is_symlink {
            return Err(format!(
                "{} is a symlink; configure the real path (every ancestor must be a real directory)",
                c.path
            ));
        }
        if c.uid != 0 && c.uid != service_uid {
            return Err(format!(
                "{} is owned by uid {}; an ancestor must be owned by root or the service user (uid {service_uid})",
                c.path, c.uid
            ));
        }
        let writable = c.mode & 0o022 != 0;
        let sticky_root = c.uid == 0 && c.mode & STICKY != 0;
        if writable && !sticky_root {
            return Err(format!(
                "{} has mode {:04o}: an ancestor must not be group- or world-writable (unless root-owned and sticky, like /tmp)",
                c.path, c.mode
            ));
        }
    }
    Ok(())
}

/// The state file must belong to the service user.
pub fn state_owner_verdict(path: &str, uid: u32, service_uid: u32) -> Result<(), String> {
    if uid == service_uid {
        Ok(())
    } else {
        Err(format!(
            "{path} is owned by uid {uid}; the state file must be owned by the service user (uid {service_uid})"
        ))
    }
}

/// Every path whose ancestors must be trusted, with the config key naming it.
pub fn trusted_paths(cfg: &Config) -> Vec<(&'static str, PathBuf)> {
    let mut out = vec![
        ("state.path", cfg.state.path.clone()),
        ("server.socketPath", cfg.server.socket_path.clone()),
        ("openbao.caCertFile", cfg.openbao.ca_cert_file.clone()),
    ];
    match &cfg.auth.method {
        AuthMethod::Jwt(j) => match &j.source {
            JwtSource::File { jwt_file } => out.push(("auth.jwt.jwtFile", jwt_file.clone())),
            JwtSource::OAuth2(o) => {
                out.push(("auth.jwt.oauth2.clientSecretFile", o.client_secret_file.clone()));
                if let Some(ca) = &o.ca_cert_file {
                    out.push(("auth.jwt.oauth2.caCertFile", ca.clone()));
                }
            }
        },
        AuthMethod::Cert(c) => match &c.source {
            CertSource::File {
                certificate_file,
                key_file,
            } => {
                out.push(("auth.cert.certificateFile", certificate_file.clone()));
                out.push(("auth.cert.keyFile", key_file.clone()));
            }
            CertSource::Pkcs11(p) => {
                out.push(("auth.cert.pkcs11.certificateFile", p.certificate_file.clone()));
                out.push(("auth.cert.pkcs11.pinFile", p.pin_file.clone()));
            }
        },
        AuthMethod::AppRole(a) => {
            out.push(("auth.approle.roleIdFile", a.role_id_file.clone()));
            out.push(("auth.approle.secretIdFile", a.secret_id_file.clone()));
        }
        AuthMethod::Token(t) => out.push(("auth.token.tokenFile", t.token_file.clone())),
    }
    if let Some(o) = &cfg.telemetry.otlp {
        for (key, path) in [
            ("telemetry.otlp.caFile", &o.ca_file),
            ("telemetry.otlp.clientCertFile", &o.client_cert_file),
            ("telemetry.otlp.clientKeyFile", &o.client_key_file),
        ] {
            if let Some(path) = path {
                out.push((key, path.clone()));
            }
        }
        for (_, path) in &o.header_files {
            out.push(("telemetry.otlp.headerFiles", path.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str, uid: u32, mode: u32) -> Component {
        Component {
            path: path.into(),
            is_symlink: false,
            uid,
            mode,
        }
    }

    #[test]
    fn ancestors_are_real_owned_and_not_writable_by_others() {
        let svc = 65532;
        let good = [
            dir("/", 0, 0o755),
            dir("/var", 0, 0o755),
            dir("/var/lib/kms", svc, 0o750),
        ];
        assert_eq!(ancestors_verdict(&good, svc), Ok(()));
        // Root-owned sticky /tmp is accepted; a sticky dir of another user is not.
        assert_eq!(
            ancestors_verdict(&[dir("/", 0, 0o755), dir("/tmp", 0, 0o1777)], svc),
            Ok(())
        );
        let err = ancestors_verdict(&[dir("/tmp", 1000, 0o1777)], svc).unwrap_err();
        assert!(err.contains("owned by uid 1000"), "{err}");
        let err = ancestors_verdict(&[dir("/", 0, 0o755), dir("/srv", 0, 0o775)], svc).unwrap_err();
        assert!(err.contains("/srv has mode 0775"), "{err}");
        let err = ancestors_verdict(&[dir("/", 0, 0o755), dir("/opt/x", 1000, 0o755)], svc).unwrap_err();
        assert!(err.contains("/opt/x is owned by uid 1000"), "{err}");
        let mut link = dir("/var/lib/kms", 0, 0o777);
        link.is_symlink = true;
        let err = ancestors_verdict(&[dir("/", 0, 0o755), link], svc).unwrap_err();
        assert!(err.contains("/var/lib/kms is a symlink"), "{err}");
    }

    #[test]
    fn the_state_file_belongs_to_the_service_user() {
        assert_eq!(state_owner_verdict("/s", 7, 7), Ok(()));
        let err = state_owner_verdict("/s", 0, 7).unwrap_err();
        assert!(err.contains("/s is owned by uid 0"), "{err}");
    }

    #[test]
    fn the_otlp_files_are_trusted_paths_when_configured() {
        use crate::config::validate::tests::{FULL, with};
        let keys = |text: &str| -> Vec<&'static str> {
            trusted_paths(&crate::config::parse_yaml(text).unwrap())
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| k.starts_with("telemetry"))
                .collect()
        };
        assert!(keys(FULL).is_empty());
        let otlp = with(
            FULL,
            "telemetry.otlp",
            "{endpoint: \"https://c:4317\", caFile: /ca.pem, clientCertFile: /c.pem, clientKeyFile: /k.pem, headerFiles: {authorization: /a, x-tenant: /t}}",
        );
        assert_eq!(
            keys(&otlp),
            [
                "telemetry.otlp.caFile",
                "telemetry.otlp.clientCertFile",
                "telemetry.otlp.clientKeyFile",
                "telemetry.otlp.headerFiles",
                "telemetry.otlp.headerFiles"
            ]
        );
    }
}
