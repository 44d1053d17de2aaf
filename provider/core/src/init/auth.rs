//! What `init` renders for each `auth.method`: the node's credential files
//! (placed by `node-setup.sh install`), the OpenBao auth mount, role and
//! policy binding (written by `openbao-setup.sh`), and the rules `init`
//! adds for the method.
//!
//! | method / source | node credentials (`install` flag)            | OpenBao side                                   |
//! |-----------------|----------------------------------------------|------------------------------------------------|
//! | jwt, file       | JWT (`--credential`)                         | jwt mount, issuer keys, role bound to iss/aud/sub |
//! | jwt, oauth2     | client secret (`--client-secret`), IdP CA    | the same jwt mount and role                    |
//! | approle         | role ID (`--role-id`), secret ID (`--secret-id`) | approle mount, role named like the policy  |
//! | cert, file      | certificate (`--client-cert`), key (`--client-key`) | cert mount, `certs/<name>` trusting the client CA |
//! | cert, pkcs11    | certificate (`--client-cert`), PIN (`--pin`) | the same cert mount and role                   |
//! | token           | token (`--token`)                            | token role named like the policy, periodic token |
//!
//! Every role issues tokens with only the provider's policy
//! (`token_no_default_policy`), a 30m TTL and a 1h maximum (the token
//! method: a 30m period, renewed by the provider).

use std::path::{Path, PathBuf};

use serde_yaml_ng::Mapping;

use std::time::Duration;

use super::template::sh_str;
use super::values::{problem, section, set_if_absent, str_at};
use crate::config::{AuthMethod, CertSource, Config, ConfigError, JwtSource, format_duration};

/// The credentials directory the defaults below live in.
const CREDENTIALS_DIR: &str = "/var/lib/openbao-kms/credentials";
/// Filled in when `auth.jwt.jwtFile` is omitted (file source). Its directory
/// is mounted, not the file, so the JWT can be replaced by an atomic rename.
pub const DEFAULT_JWT_FILE: &str = "/var/lib/openbao-kms/credentials/identity.jwt";
/// TTL of the tokens the generated auth role issues (max 1h), and the
/// period of the token method's periodic token.
pub const ROLE_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);

/// One file the node holds to log in.
#[derive(Debug, Clone)]
pub(super) struct Credential {
    /// `node-setup.sh install` flag that places it.
    pub flag: &'static str,
    /// The configuration field that names it.
    pub field: &'static str,
    pub path: PathBuf,
    /// What the operator passes, for usage text.
    pub what: &'static str,
    /// A PEM label the file must contain (`CERTIFICATE`), if any.
    pub pem: Option<&'static str>,
    /// Mode on the node: readable by the provider's group only.
    pub mode: &'static str,
}

impl Credential {
    fn new(flag: &'static str, field: &'static str, path: &Path, what: &'static str) -> Self {
        Self {
            flag,
            field,
            path: path.to_path_buf(),
            what,
            pem: None,
            mode: "0640",
        }
    }

    fn pem(mut self, label: &'static str) -> Self {
        self.pem = Some(label);
        self
    }
}

/// Everything method-specific `init` renders.
#[derive(Debug, Clone)]
pub(super) struct AuthPlan {
    /// `auth.method`, with the source where there is one (`jwt/oauth2`).
    pub label: String,
    /// The auth mount without `auth/`; `token` for the token method.
    pub mount: String,
    /// The role the provider logs in with (cert: `certs/<name>`).
    pub role: String,
    pub credentials: Vec<Credential>,
    /// Step 4 of `openbao-setup.sh` (shell, already quoted).
    pub setup: String,
    /// The header lines of `openbao-setup.sh` that name what step 4 needs.
    pub setup_header: String,
    /// The OpenBao operator's action in `installation.json`.
    pub operator_action: String,
}

/// Default credential paths filled in when the values leave them out.
pub(super) fn fill_defaults(auth: &mut Mapping) {
    let default = |name: &str| format!("{CREDENTIALS_DIR}/{name}");
    match str_at(auth, "method").unwrap_or("jwt") {
        "jwt" => {
            if let Some(jwt) = section(auth, "jwt") {
                match str_at(jwt, "source") {
                    Some("oauth2") => {
                        if let Some(o) = section(jwt, "oauth2") {
                            set_if_absent(o, "clientSecretFile", &default("oauth2-client-secret"));
                        }
                    }
                    _ => set_if_absent(jwt, "jwtFile", DEFAULT_JWT_FILE),
                }
            }
        }
        "approle" => {
            if let Some(a) = section(auth, "approle") {
                set_if_absent(a, "roleIdFile", &default("role-id"));
                set_if_absent(a, "secretIdFile", &default("secret-id"));
            }
        }
        "token" => {
            if let Some(t) = section(auth, "token") {
                set_if_absent(t, "tokenFile", &default("token"));
            }
        }
        "cert" => {
            if let Some(c) = section(auth, "cert") {
                match str_at(c, "source") {
                    Some("pkcs11") => {
                        if let Some(k) = section(c, "pkcs11") {
                            set_if_absent(k, "certificateFile", &default("client.crt"));
                            set_if_absent(k, "pinFile", &default("pkcs11.pin"));
                        }
                    }
                    Some("file") => {
                        if let Some(f) = section(c, "file") {
                            set_if_absent(f, "certificateFile", &default("client.crt"));
                            set_if_absent(f, "keyFile", &default("client.key"));
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn mount_name(mount_path: &str) -> &str {
    mount_path.strip_prefix("auth/").unwrap_or(mount_path)
}

/// The plan for `cfg`'s method, or every problem `init` has with it.
pub(super) fn plan(cfg: &Config, policy_name: &str, static_pod: bool) -> Result<AuthPlan, Vec<ConfigError>> {
    let mut problems = Vec::new();
    let ttl = format_duration(ROLE_TOKEN_TTL);
    let plan = match &cfg.auth.method {
        AuthMethod::Jwt(jwt) => {
            if jwt.expected_issuer.as_deref().is_none_or(str::is_empty) {
                problems.push(problem(
                    "auth.jwt.expectedIssuer",
                    "required by init: the generated OpenBao auth mount is bound to this issuer",
                ));
            }
            if jwt.expected_audience.is_empty() {
                problems.push(problem(
                    "auth.jwt.expectedAudience",
                    "required by init: the generated OpenBao role is bound to these audiences",
                ));
            }
            if jwt.expected_audience.iter().any(|a| a.contains(',')) {
                problems.push(problem(
                    "auth.jwt.expectedAudience",
                    "an audience must not contain ',' (OpenBao reads bound_audiences as a comma-separated list)",
                ));
            }
            if jwt.expected_subject.as_deref().is_none_or(str::is_empty) {
                problems.push(problem(
                    "auth.jwt.expectedSubject",
                    "required by init: the generated OpenBao role is bound to this subject (user_claim sub)",
                ));
            }
            segment_rule(&mut problems, "auth.jwt.role", &jwt.role);
            let (label, credentials) = match &jwt.source {
                JwtSource::File { jwt_file } => (
                    "jwt".to_owned(),
                    vec![Credential::new(
                        "--credential",
                        "auth.jwt.jwtFile",
                        jwt_file,
                        "<JWT for the configured subject>",
                    )],
                ),
                JwtSource::OAuth2(o) => {
                    let mut c = vec![Credential::new(
                        "--client-secret",
                        "auth.jwt.oauth2.clientSecretFile",
                        &o.client_secret_file,
                        "<OAuth2 client secret file>",
                    )];
                    if let Some(ca) = &o.ca_cert_file {
                        let mut issuer_ca = Credential::new(
                            "--issuer-ca",
                            "auth.jwt.oauth2.caCertFile",
                            ca,
                            "<token endpoint CA PEM>",
                        )
                        .pem("CERTIFICATE");
                        issuer_ca.mode = "0644";
                        c.push(issuer_ca);
                    }
                    ("jwt/oauth2".to_owned(), c)
                }
            };
            let mount = mount_name(&jwt.mount_path).to_owned();
            AuthPlan {
                label,
                setup: jwt_setup(
                    &mount,
                    &jwt.role,
                    jwt.expected_issuer.as_deref().unwrap_or_default(),
                    &jwt.expected_audience.join(","),
                    jwt.expected_subject.as_deref().unwrap_or_default(),
                    &ttl,
                ),
                setup_header: format!(
                    "# The JWT auth mount needs the issuer's verification keys once. Give one of\n\
                     #   BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE  PEM public key(s) of the issuer\n\
                     #   BAO_KMS_JWKS_URL                     the issuer's JWKS URL\n\
                     #                                        (BAO_KMS_JWKS_CA_FILE: its CA, optional)\n\
                     # or configure auth/{mount}/config yourself before running this."
                ),
                operator_action: "OpenBao operator: run openbao-setup.sh with BAO_ADDR, BAO_CACERT and an operator token in the environment \
                     (BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE or BAO_KMS_JWKS_URL gives the JWT issuer's keys)"
                    .to_owned(),
                role: jwt.role.clone(),
                mount,
                credentials,
            }
        }
        AuthMethod::AppRole(a) => {
            let mount = mount_name(&a.mount_path).to_owned();
            AuthPlan {
                label: "approle".into(),
                setup: approle_setup(&mount, policy_name, &ttl),
                setup_header: credentials_out_header("role-id and secret-id"),
                operator_action: format!(
                    "OpenBao operator: run openbao-setup.sh with BAO_ADDR, BAO_CACERT and an operator token in the environment, \
                     and BAO_KMS_CREDENTIALS_OUT=<private directory> to receive role-id and secret-id for the node \
                     (or read auth/{mount}/role/{policy_name}/role-id and write auth/{mount}/role/{policy_name}/secret-id yourself)"
                ),
                role: policy_name.to_owned(),
                mount,
                credentials: vec![
                    Credential::new(
                        "--role-id",
                        "auth.approle.roleIdFile",
                        &a.role_id_file,
                        "<role ID file>",
                    ),
                    Credential::new(
                        "--secret-id",
                        "auth.approle.secretIdFile",
                        &a.secret_id_file,
                        "<secret ID file>",
                    ),
                ],
            }
        }
        AuthMethod::Cert(c) => {
            if c.name.is_empty() {
                problems.push(problem(
                    "auth.cert.name",
                    "required by init: the generated OpenBao cert role is named by it",
                ));
            }
            segment_rule(&mut problems, "auth.cert.name", &c.name);
            let (label, credentials) = match &c.source {
                CertSource::File {
                    certificate_file,
                    key_file,
                } => (
                    "cert/file",
                    vec![
                        Credential::new(
                            "--client-cert",
                            "auth.cert.file.certificateFile",
                            certificate_file,
                            "<client certificate PEM>",
                        )
                        .pem("CERTIFICATE"),
                        Credential::new("--client-key", "auth.cert.file.keyFile", key_file, "<client key PEM>")
                            .pem("PRIVATE KEY"),
                    ],
                ),
                CertSource::Pkcs11(k) => {
                    if static_pod {
                        problems.push(problem(
                            "auth.cert.source",
                            "pkcs11 needs the PKCS#11 module and its token store on the host, which the static pod \
                             does not mount; use --model systemd for a PKCS#11 key",
                        ));
                    }
                    (
                        "cert/pkcs11",
                        vec![
                            Credential::new(
                                "--client-cert",
                                "auth.cert.pkcs11.certificateFile",
                                &k.certificate_file,
                                "<client certificate PEM>",
                            )
                            .pem("CERTIFICATE"),
                            Credential::new(
                                "--pin",
                                "auth.cert.pkcs11.pinFile",
                                &k.pin_file,
                                "<PKCS#11 user PIN file>",
                            ),
                        ],
                    )
                }
            };
            let mount = mount_name(&c.mount_path).to_owned();
            AuthPlan {
                label: label.into(),
                setup: cert_setup(&mount, &c.name, &ttl),
                setup_header: "# The cert role trusts the CA that signs the nodes' client certificates:\n\
                     #   BAO_KMS_CLIENT_CA_FILE  its PEM certificate (required to write the role)\n\
                     # OpenBao's listener must request client certificates (the default;\n\
                     # not tls_disable_client_certs)."
                    .into(),
                operator_action: "OpenBao operator: run openbao-setup.sh with BAO_ADDR, BAO_CACERT and an operator token in the environment \
                     (BAO_KMS_CLIENT_CA_FILE gives the CA that signs the nodes' client certificates)"
                    .to_owned(),
                role: c.name.clone(),
                mount,
                credentials,
            }
        }
        AuthMethod::Token(t) => AuthPlan {
            label: "token".into(),
            setup: token_setup(policy_name, &ttl),
            setup_header: credentials_out_header("token"),
            operator_action: format!(
                "OpenBao operator: run openbao-setup.sh with BAO_ADDR, BAO_CACERT and an operator token in the environment, \
                 and BAO_KMS_CREDENTIALS_OUT=<private directory> to receive the node's token \
                 (or write auth/token/create/{policy_name} yourself); the token method is for development"
            ),
            role: policy_name.to_owned(),
            mount: "token".into(),
            credentials: vec![Credential::new(
                "--token",
                "auth.token.tokenFile",
                &t.token_file,
                "<OpenBao token file>",
            )],
        },
    };
    if problems.is_empty() { Ok(plan) } else { Err(problems) }
}

fn segment_rule(problems: &mut Vec<ConfigError>, field: &str, value: &str) {
    if value.contains('/') || value.chars().any(char::is_whitespace) {
        problems.push(problem(
            field,
            "must be one path segment without whitespace (it names a role under the auth mount)",
        ));
    }
}

fn credentials_out_header(what: &str) -> String {
    format!(
        "# The node's {what} are written, mode 0600, into the directory\n\
         #   BAO_KMS_CREDENTIALS_OUT  (optional; never printed)\n\
         # when it is set and does not hold them yet; copy them to the node for\n\
         # node-setup.sh install, then delete them."
    )
}

/// Shared by the methods that hand the node a secret through
/// `BAO_KMS_CREDENTIALS_OUT`: `write_secret NAME COMMAND...` runs the
/// command into `$BAO_KMS_CREDENTIALS_OUT/NAME` (umask 077) unless it exists.
const WRITE_SECRET_FN: &str = r#"write_secret() {
    name=$1
    shift
    target="$BAO_KMS_CREDENTIALS_OUT/$name"
    if [ -e "$target" ]; then
        say "$target exists; not replaced"
        return 0
    fi
    if ! (umask 077 && "$@" >"$target.tmp"); then
        rm -f -- "$target.tmp"
        die "cannot write $target"
    fi
    mv -f -- "$target.tmp" "$target"
    say "wrote $target (mode 0600)"
}
"#;

fn enable_auth(kind: &str) -> String {
    format!(
        r#"auth_type=$("$BAO" read -field=type "sys/auth/$AUTH_MOUNT" 2>/dev/null || true)
case "$auth_type" in
    {kind}) say "{kind} auth at auth/$AUTH_MOUNT exists" ;;
    "")
        "$BAO" auth enable -path="$AUTH_MOUNT" {kind} >/dev/null
        say "enabled {kind} auth at auth/$AUTH_MOUNT"
        ;;
    *) die "auth/$AUTH_MOUNT is a $auth_type auth mount, not {kind}" ;;
esac
"#
    )
}

fn jwt_setup(mount: &str, role: &str, issuer: &str, audiences: &str, subject: &str, ttl: &str) -> String {
    format!(
        r#"# 4. JWT auth: mount, issuer keys, role.
AUTH_MOUNT={mount}
JWT_ROLE={role}
JWT_ISSUER={issuer}
JWT_AUDIENCES={audiences}
JWT_SUBJECT={subject}
{enable}if [ -n "${{BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE:-}}" ]; then
    [ -f "$BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE" ] || die "BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE is not a file"
    "$BAO" write "auth/$AUTH_MOUNT/config" "jwt_validation_pubkeys=@$BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE" bound_issuer="$JWT_ISSUER" >/dev/null
    say "configured auth/$AUTH_MOUNT with the issuer's public keys"
elif [ -n "${{BAO_KMS_JWKS_URL:-}}" ]; then
    if [ -n "${{BAO_KMS_JWKS_CA_FILE:-}}" ]; then
        "$BAO" write "auth/$AUTH_MOUNT/config" jwks_url="$BAO_KMS_JWKS_URL" "jwks_ca_pem=@$BAO_KMS_JWKS_CA_FILE" bound_issuer="$JWT_ISSUER" >/dev/null
    else
        "$BAO" write "auth/$AUTH_MOUNT/config" jwks_url="$BAO_KMS_JWKS_URL" bound_issuer="$JWT_ISSUER" >/dev/null
    fi
    say "configured auth/$AUTH_MOUNT with the issuer's JWKS URL"
else
    "$BAO" read "auth/$AUTH_MOUNT/config" >/dev/null 2>&1 \
        || die "auth/$AUTH_MOUNT has no issuer keys; set BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE or BAO_KMS_JWKS_URL"
    say "auth/$AUTH_MOUNT is already configured"
fi
"$BAO" write "auth/$AUTH_MOUNT/role/$JWT_ROLE" \
    role_type=jwt \
    bound_audiences="$JWT_AUDIENCES" \
    bound_subject="$JWT_SUBJECT" \
    user_claim=sub \
    token_ttl={ttl} \
    token_max_ttl=1h \
    token_no_default_policy=true \
    token_policies="$POLICY_NAME" >/dev/null
say "wrote role auth/$AUTH_MOUNT/role/$JWT_ROLE (policy $POLICY_NAME, token TTL {ttl}, max 1h)"
"#,
        mount = sh_str(mount),
        role = sh_str(role),
        issuer = sh_str(issuer),
        audiences = sh_str(audiences),
        subject = sh_str(subject),
        enable = enable_auth("jwt"),
    )
}

fn approle_setup(mount: &str, role: &str, ttl: &str) -> String {
    format!(
        r#"# 4. AppRole auth: mount, role, the node's role ID and secret ID.
AUTH_MOUNT={mount}
APPROLE_ROLE={role}
{enable}# The provider logs in again with the same secret ID whenever its token
# ends: the secret ID neither expires nor runs out of uses.
"$BAO" write "auth/$AUTH_MOUNT/role/$APPROLE_ROLE" \
    bind_secret_id=true \
    secret_id_ttl=0 \
    secret_id_num_uses=0 \
    token_ttl={ttl} \
    token_max_ttl=1h \
    token_no_default_policy=true \
    token_policies="$POLICY_NAME" >/dev/null
say "wrote role auth/$AUTH_MOUNT/role/$APPROLE_ROLE (policy $POLICY_NAME, token TTL {ttl}, max 1h)"
if [ -n "${{BAO_KMS_CREDENTIALS_OUT:-}}" ]; then
    [ -d "$BAO_KMS_CREDENTIALS_OUT" ] || die "BAO_KMS_CREDENTIALS_OUT is not a directory"
{write_secret}    write_secret role-id "$BAO" read -field=role_id "auth/$AUTH_MOUNT/role/$APPROLE_ROLE/role-id"
    write_secret secret-id "$BAO" write -f -field=secret_id "auth/$AUTH_MOUNT/role/$APPROLE_ROLE/secret-id"
else
    say "for the node: bao read -field=role_id auth/$AUTH_MOUNT/role/$APPROLE_ROLE/role-id and bao write -f -field=secret_id auth/$AUTH_MOUNT/role/$APPROLE_ROLE/secret-id (or set BAO_KMS_CREDENTIALS_OUT)"
fi
"#,
        mount = sh_str(mount),
        role = sh_str(role),
        enable = enable_auth("approle"),
        write_secret = indent(WRITE_SECRET_FN),
    )
}

fn cert_setup(mount: &str, name: &str, ttl: &str) -> String {
    format!(
        r#"# 4. TLS certificate auth: mount and the role trusting the nodes' client CA.
AUTH_MOUNT={mount}
CERT_ROLE={name}
{enable}if [ -n "${{BAO_KMS_CLIENT_CA_FILE:-}}" ]; then
    [ -f "$BAO_KMS_CLIENT_CA_FILE" ] || die "BAO_KMS_CLIENT_CA_FILE is not a file"
    "$BAO" write "auth/$AUTH_MOUNT/certs/$CERT_ROLE" \
        "certificate=@$BAO_KMS_CLIENT_CA_FILE" \
        token_ttl={ttl} \
        token_max_ttl=1h \
        token_no_default_policy=true \
        token_policies="$POLICY_NAME" >/dev/null
    say "wrote role auth/$AUTH_MOUNT/certs/$CERT_ROLE (policy $POLICY_NAME, token TTL {ttl}, max 1h)"
else
    "$BAO" read "auth/$AUTH_MOUNT/certs/$CERT_ROLE" >/dev/null 2>&1 \
        || die "auth/$AUTH_MOUNT/certs/$CERT_ROLE does not exist; set BAO_KMS_CLIENT_CA_FILE to the nodes' client CA"
    say "role auth/$AUTH_MOUNT/certs/$CERT_ROLE exists; set BAO_KMS_CLIENT_CA_FILE to rewrite it"
fi
"#,
        mount = sh_str(mount),
        name = sh_str(name),
        enable = enable_auth("cert"),
    )
}

fn token_setup(role: &str, ttl: &str) -> String {
    format!(
        r#"# 4. Token auth (development): a token role and a periodic orphan token.
TOKEN_ROLE={role}
"$BAO" write "auth/token/roles/$TOKEN_ROLE" \
    allowed_policies="$POLICY_NAME" \
    disallowed_policies=default \
    orphan=true \
    renewable=true \
    token_period={ttl} \
    token_no_default_policy=true >/dev/null
say "wrote token role auth/token/roles/$TOKEN_ROLE (policy $POLICY_NAME, period {ttl}, renewed by the provider)"
if [ -n "${{BAO_KMS_CREDENTIALS_OUT:-}}" ]; then
    [ -d "$BAO_KMS_CREDENTIALS_OUT" ] || die "BAO_KMS_CREDENTIALS_OUT is not a directory"
{write_secret}    write_secret token "$BAO" write -field=token "auth/token/create/$TOKEN_ROLE" policies="$POLICY_NAME" no_default_policy=true
else
    say "for the node: bao write -field=token auth/token/create/$TOKEN_ROLE policies=$POLICY_NAME no_default_policy=true (or set BAO_KMS_CREDENTIALS_OUT)"
fi
"#,
        role = sh_str(role),
        write_secret = indent(WRITE_SECRET_FN),
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("    {l}\n")
            }
        })
        .collect()
}
