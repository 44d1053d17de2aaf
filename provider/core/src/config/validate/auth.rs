//! The `auth` section: token lifetime settings, the login timeout, and the
//! one method section (`jwt`, `cert`, `approle`, `token`) that
//! `auth.method` names; the other method sections must be absent.

use std::time::Duration;

use super::syntax::{absolute_uri_problem, label_problem, token_url};
use super::validator::Validator;
use crate::config::duration::format_duration;
use crate::config::raw::{RawAppRole, RawAuth, RawCert, RawJwt, RawOAuth2, RawToken};
use crate::config::{
    AppRoleAuth, AuthConfig, AuthMethod, CertAuth, CertSource, ClientAuthMethod, JwtAuth, JwtSource, OAuth2Source,
    Pkcs11Source, TokenAuth,
};

const AUTH_SECTIONS: [&str; 4] = ["jwt", "cert", "approle", "token"];

impl Validator<'_> {
    pub(super) fn auth(&mut self, r: &RawAuth, openbao_timeout: Duration) -> Option<AuthConfig> {
        let before = self.duration(
            "auth.loginBeforeTokenExpiry",
            &r.login_before_token_expiry,
            Duration::from_secs(300),
            false,
        );
        let increment = self.duration(
            "auth.tokenRenewalIncrement",
            &r.token_renewal_increment,
            Duration::from_secs(3600),
            false,
        );
        if let (Some(b), Some(i)) = (before, increment)
            && i <= b
        {
            self.err(
                "auth.tokenRenewalIncrement",
                format!(
                    "must be greater than auth.loginBeforeTokenExpiry ({})",
                    format_duration(b)
                ),
            );
        }
        let login_timeout = self
            .duration("auth.loginTimeout", &r.login_timeout, Duration::ZERO, true)
            .map(|t| {
                if t.is_zero() {
                    openbao_timeout.max(Duration::from_secs(5))
                } else {
                    t
                }
            });

        let method = r.method.as_deref().unwrap_or("jwt");
        let present = [
            r.jwt.is_some(),
            r.cert.is_some(),
            r.approle.is_some(),
            r.token.is_some(),
        ];
        let method = if AUTH_SECTIONS.contains(&method) {
            for (name, is_present) in AUTH_SECTIONS.iter().zip(present) {
                if *name != method && is_present {
                    self.err(
                        &format!("auth.{name}"),
                        format!("must not be set when auth.method is {method}; remove it or set auth.method: {name}"),
                    );
                }
            }
            match method {
                "jwt" => r.jwt.as_ref().map(|j| self.jwt(j).map(AuthMethod::Jwt)),
                "cert" => r.cert.as_ref().map(|c| self.cert(c).map(AuthMethod::Cert)),
                "approle" => r.approle.as_ref().map(|a| self.approle(a).map(AuthMethod::AppRole)),
                _ => r.token.as_ref().map(|t| self.token(t).map(AuthMethod::Token)),
            }
            .unwrap_or_else(|| {
                self.err(
                    &format!("auth.{method}"),
                    format!("section is required when auth.method is {method}"),
                );
                None
            })
        } else {
            self.err("auth.method", "must be one of: jwt, cert, approle, token");
            None
        };
        Some(AuthConfig {
            method: method?,
            login_before_token_expiry: before?,
            token_renewal_increment: increment?,
            login_timeout: login_timeout?,
        })
    }

    fn jwt(&mut self, r: &RawJwt) -> Option<JwtAuth> {
        // Omitted: `file` only for a config written before the oauth2
        // source existed (a jwtFile and no oauth2 section).
        let source = match r.source.as_deref() {
            None if r.oauth2.is_some() => {
                self.err(
                    "auth.jwt.source",
                    "is required when auth.jwt.oauth2 is set; set source: oauth2 (and remove jwtFile)",
                );
                None
            }
            None | Some("file") => Some("file"),
            Some("oauth2") => Some("oauth2"),
            Some("") => {
                self.err("auth.jwt.source", "must not be empty; omit it or set file or oauth2");
                None
            }
            Some(_) => {
                self.err("auth.jwt.source", "must be file or oauth2");
                None
            }
        };
        let jwt_source = match source {
            Some("file") => {
                if r.oauth2.is_some() {
                    self.err("auth.jwt.oauth2", "must not be set when auth.jwt.source is file");
                }
                self.file("auth.jwt.jwtFile", &r.jwt_file)
                    .map(|jwt_file| JwtSource::File { jwt_file })
            }
            Some(_) => {
                if r.jwt_file.is_some() {
                    self.err("auth.jwt.jwtFile", "must not be set when auth.jwt.source is oauth2");
                }
                if r.expected_issuer.as_deref().unwrap_or("").is_empty() {
                    self.err(
                        "auth.jwt.expectedIssuer",
                        "is required when auth.jwt.source is oauth2 (the token endpoint's tokens are checked before login)",
                    );
                }
                if r.expected_audience.as_ref().is_none_or(Vec::is_empty) {
                    self.err(
                        "auth.jwt.expectedAudience",
                        "needs at least one audience when auth.jwt.source is oauth2",
                    );
                }
                match &r.oauth2 {
                    Some(o) => self.oauth2(o).map(JwtSource::OAuth2),
                    None => {
                        self.err("auth.jwt.oauth2", "section is required when auth.jwt.source is oauth2");
                        None
                    }
                }
            }
            None => None,
        };
        let mount_path = self.mount_path("auth.jwt.mountPath", &r.mount_path, true);
        let role = self.label("auth.jwt.role", &r.role);
        let min_ttl = self.duration(
            "auth.jwt.minRemainingTtl",
            &r.min_remaining_ttl,
            Duration::from_secs(120),
            false,
        );
        let leeway = self.duration(
            "auth.jwt.clockSkewLeeway",
            &r.clock_skew_leeway,
            Duration::from_secs(30),
            true,
        );
        let issuer = self.optional_label("auth.jwt.expectedIssuer", &r.expected_issuer);
        let subject = self.optional_label("auth.jwt.expectedSubject", &r.expected_subject);
        let mut audience = Some(Vec::new());
        for (i, a) in r.expected_audience.iter().flatten().enumerate() {
            match label_problem(a) {
                Some(p) => {
                    self.err(&format!("auth.jwt.expectedAudience[{i}]"), p);
                    audience = None;
                }
                None => {
                    if let Some(list) = audience.as_mut() {
                        list.push(a.clone());
                    }
                }
            }
        }
        Some(JwtAuth {
            mount_path: mount_path?,
            role: role?,
            source: jwt_source?,
            min_remaining_ttl: min_ttl?,
            clock_skew_leeway: leeway?,
            expected_issuer: issuer?,
            expected_audience: audience?,
            expected_subject: subject?,
        })
    }

    fn oauth2(&mut self, r: &RawOAuth2) -> Option<OAuth2Source> {
        let token_url = self
            .required("auth.jwt.oauth2.tokenUrl", &r.token_url)
            .and_then(|u| match token_url(u) {
                Ok(u) => Some(u),
                Err(e) => {
                    self.err("auth.jwt.oauth2.tokenUrl", e);
                    None
                }
            });
        let client_id = self.label("auth.jwt.oauth2.clientId", &r.client_id);
        let secret = self.file("auth.jwt.oauth2.clientSecretFile", &r.client_secret_file);
        let auth_method = match self.required("auth.jwt.oauth2.authMethod", &r.auth_method) {
            Some("client_secret_basic") => Some(ClientAuthMethod::ClientSecretBasic),
            Some("client_secret_post") => Some(ClientAuthMethod::ClientSecretPost),
            Some(_) => {
                self.err(
                    "auth.jwt.oauth2.authMethod",
                    "must be client_secret_basic or client_secret_post",
                );
                None
            }
            None => None,
        };
        let mut ok = true;
        let mut scopes = Vec::new();
        for (i, scope) in r.scopes.iter().flatten().enumerate() {
            // RFC 6749 scope-token: printable ASCII without space, '"' or '\\'.
            if scope.is_empty() || !scope.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\') {
                self.err(
                    &format!("auth.jwt.oauth2.scopes[{i}]"),
                    "must be a non-empty scope token (printable ASCII, no space, '\"' or '\\')",
                );
                ok = false;
            }
            scopes.push(scope.clone());
        }
        let mut resources = Vec::new();
        for (i, resource) in r.resources.iter().flatten().enumerate() {
            if let Some(p) = absolute_uri_problem(resource) {
                self.err(&format!("auth.jwt.oauth2.resources[{i}]"), p);
                ok = false;
            }
            resources.push(resource.clone());
        }
        let audience = self.optional_label("auth.jwt.oauth2.audience", &r.audience);
        let ca_cert_file = match r.ca_cert_file.as_deref() {
            None | Some("") => Some(None),
            Some(_) => self.file("auth.jwt.oauth2.caCertFile", &r.ca_cert_file).map(Some),
        };
        if !ok {
            return None;
        }
        Some(OAuth2Source {
            token_url: token_url?,
            client_id: client_id?,
            client_secret_file: secret?,
            auth_method: auth_method?,
            scopes,
            audience: audience?,
            resources,
            ca_cert_file: ca_cert_file?,
        })
    }

    fn cert(&mut self, r: &RawCert) -> Option<CertAuth> {
        let mount_path = self.mount_path("auth.cert.mountPath", &r.mount_path, true);
        let name = match r.name.as_deref().unwrap_or("") {
            "" => Some(String::new()),
            n => self.label("auth.cert.name", &Some(n.to_owned())),
        };
        let min_ttl = self.duration(
            "auth.cert.minRemainingTtl",
            &r.min_remaining_ttl,
            Duration::from_secs(86_400),
            false,
        );
        let leeway = self.duration(
            "auth.cert.clockSkewLeeway",
            &r.clock_skew_leeway,
            Duration::from_secs(30),
            true,
        );
        let source = match self.required("auth.cert.source", &r.source) {
            None => None,
            Some("pkcs11") => {
                if r.file.is_some() {
                    self.err("auth.cert.file", "must not be set when auth.cert.source is pkcs11");
                }
                match &r.pkcs11 {
                    None => {
                        self.err(
                            "auth.cert.pkcs11",
                            "section is required when auth.cert.source is pkcs11",
                        );
                        None
                    }
                    Some(k) => {
                        let certificate_file = self.file("auth.cert.pkcs11.certificateFile", &k.certificate_file);
                        let module_path = self.file("auth.cert.pkcs11.modulePath", &k.module_path);
                        let token_label = self.label("auth.cert.pkcs11.tokenLabel", &k.token_label);
                        let key_label = self.label("auth.cert.pkcs11.keyLabel", &k.key_label);
                        let pin_file = self.file("auth.cert.pkcs11.pinFile", &k.pin_file);
                        let max_sessions = match k.max_sessions {
                            None => {
                                self.err("auth.cert.pkcs11.maxSessions", "is required (at least 2)");
                                None
                            }
                            some => self.int("auth.cert.pkcs11.maxSessions", some, 2, 2, 1024),
                        };
                        (|| {
                            Some(CertSource::Pkcs11(Pkcs11Source {
                                certificate_file: certificate_file?,
                                module_path: module_path?,
                                token_label: token_label?,
                                key_label: key_label?,
                                pin_file: pin_file?,
                                max_sessions: max_sessions?,
                            }))
                        })()
                    }
                }
            }
            Some("file") => {
                if r.pkcs11.is_some() {
                    self.err("auth.cert.pkcs11", "must not be set when auth.cert.source is file");
                }
                match &r.file {
                    None => {
                        self.err("auth.cert.file", "section is required when auth.cert.source is file");
                        None
                    }
                    Some(f) => {
                        let certificate_file = self.file("auth.cert.file.certificateFile", &f.certificate_file);
                        let key_file = self.file("auth.cert.file.keyFile", &f.key_file);
                        Some(CertSource::File {
                            certificate_file: certificate_file?,
                            key_file: key_file?,
                        })
                    }
                }
            }
            Some("spiffe") => {
                self.err("auth.cert.source", "spiffe is not supported; use pkcs11 or file");
                None
            }
            Some(_) => {
                self.err("auth.cert.source", "must be one of: pkcs11, file");
                None
            }
        };
        Some(CertAuth {
            mount_path: mount_path?,
            name: name?,
            source: source?,
            min_remaining_ttl: min_ttl?,
            clock_skew_leeway: leeway?,
        })
    }

    fn approle(&mut self, r: &RawAppRole) -> Option<AppRoleAuth> {
        let mount_path = self.mount_path("auth.approle.mountPath", &r.mount_path, true);
        let role_id_file = self.file("auth.approle.roleIdFile", &r.role_id_file);
        let secret_id_file = self.file("auth.approle.secretIdFile", &r.secret_id_file);
        if let (Some(a), Some(b)) = (&role_id_file, &secret_id_file)
            && a == b
        {
            self.err("auth.approle.secretIdFile", "must differ from auth.approle.roleIdFile");
        }
        Some(AppRoleAuth {
            mount_path: mount_path?,
            role_id_file: role_id_file?,
            secret_id_file: secret_id_file?,
        })
    }

    fn token(&mut self, r: &RawToken) -> Option<TokenAuth> {
        Some(TokenAuth {
            token_file: self.file("auth.token.tokenFile", &r.token_file)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;
    use crate::config::validate::tests::*;

    #[test]
    fn login_timeout_effective() {
        assert_eq!(
            set_ok("openbao.timeout", "10s").auth.login_timeout,
            Duration::from_secs(10)
        );
        assert_eq!(
            set_ok("auth.loginTimeout", "3s").auth.login_timeout,
            Duration::from_secs(3)
        );
        set_fails("auth.loginTimeout", "-1s", "negative");
    }

    #[test]
    fn auth_method_sections() {
        set_fails("auth.method", "oidc", "one of: jwt, cert, approle, token");
        let t = with(FULL, "auth.token", "{tokenFile: /etc/openbao-kms/token}");
        fails_at(&t, "auth.token", "must not be set when auth.method is jwt");
        let t = with(&t, "auth.method", "token");
        fails_at(&t, "auth.jwt", "must not be set when auth.method is token");
        let t = without(&t, "auth.jwt");
        assert!(matches!(parse_yaml(&t).unwrap().auth.method, AuthMethod::Token(_)));
        fails_at(
            &without(FULL, "auth.jwt"),
            "auth.jwt",
            "required when auth.method is jwt",
        );
        let t = with(&without(FULL, "auth.jwt"), "auth.method", "approle");
        fails_at(&t, "auth.approle", "required");
        let t = with(
            &t,
            "auth.approle",
            "{mountPath: approle, roleIdFile: /r, secretIdFile: /r}",
        );
        fails_at(&t, "auth.approle.mountPath", "auth/");
        fails_at(&t, "auth.approle.secretIdFile", "differ");
    }

    #[test]
    fn auth_durations() {
        set_fails(
            "auth.tokenRenewalIncrement",
            "5m",
            "greater than auth.loginBeforeTokenExpiry",
        );
        set_fails("auth.loginBeforeTokenExpiry", "0s", "positive");
        set_fails("auth.jwt.minRemainingTtl", "0s", "positive");
        assert!(parse_yaml(&with(FULL, "auth.jwt.clockSkewLeeway", "0s")).is_ok());
    }

    #[test]
    fn jwt_rules() {
        set_fails("auth.jwt.source", "\"\"", "must not be empty");
        set_fails("auth.jwt.source", "env", "must be file or oauth2");
        set_ok("auth.jwt.source", "file");
        set_fails("auth.jwt.mountPath", "/auth/jwt", "relative");
        set_fails("auth.jwt.mountPath", "jwt", "auth/");
        set_fails("auth.jwt.mountPath", "auth/", "end with");
        set_fails("auth.jwt.mountPath", "auth//jwt", "'//'");
        set_fails("auth.jwt.mountPath", "auth/./jwt", "'.'");
        set_fails("auth.jwt.role", "\" r\"", "whitespace");
        fails_at(&without(FULL, "auth.jwt.role"), "auth.jwt.role", "required");
        fails_at(&without(FULL, "auth.jwt.jwtFile"), "auth.jwt.jwtFile", "required");
        set_fails("auth.jwt.jwtFile", "identity.jwt", "absolute");
        fails_at(
            &with(FULL, "auth.jwt.expectedAudience", "[a, \"\"]"),
            "auth.jwt.expectedAudience[1]",
            "empty",
        );
        let c = set_ok("auth.jwt.expectedAudience", "[a, b]");
        let AuthMethod::Jwt(j) = c.auth.method else { panic!() };
        assert_eq!(j.expected_audience, ["a", "b"]);
        let c = set_ok("auth.jwt.expectedIssuer", "https://issuer");
        let AuthMethod::Jwt(j) = c.auth.method else { panic!() };
        assert_eq!(j.expected_issuer.as_deref(), Some("https://issuer"));
    }

    /// A jwt section with the oauth2 source and every field set.
    fn oauth2_doc() -> String {
        let t = without(FULL, "auth.jwt.jwtFile");
        let t = with(&t, "auth.jwt.source", "oauth2");
        let t = with(&t, "auth.jwt.expectedIssuer", "https://issuer.example");
        let t = with(&t, "auth.jwt.expectedAudience", "[openbao]");
        with(
            &t,
            "auth.jwt.oauth2",
            "{tokenUrl: \"https://idp.example:8443/oauth2/token?tenant=a\", clientId: kms-node, \
             clientSecretFile: /etc/openbao-kms/oauth2/client-secret, authMethod: client_secret_basic, \
             scopes: [openbao.login, kms], audience: openbao, resources: [\"https://bao.example:8200\", \"urn:bao:kms\"], \
             caCertFile: /etc/openbao-kms/oauth2/ca.crt}",
        )
    }

    #[test]
    fn oauth2_source() {
        let c = parse_yaml(&oauth2_doc()).unwrap();
        let AuthMethod::Jwt(j) = &c.auth.method else { panic!() };
        assert_eq!(j.jwt_file(), None);
        let JwtSource::OAuth2(o) = &j.source else { panic!() };
        assert_eq!(
            o,
            &OAuth2Source {
                token_url: "https://idp.example:8443/oauth2/token?tenant=a".into(),
                client_id: "kms-node".into(),
                client_secret_file: "/etc/openbao-kms/oauth2/client-secret".into(),
                auth_method: ClientAuthMethod::ClientSecretBasic,
                scopes: vec!["openbao.login".into(), "kms".into()],
                audience: Some("openbao".into()),
                resources: vec!["https://bao.example:8200".into(), "urn:bao:kms".into()],
                ca_cert_file: Some("/etc/openbao-kms/oauth2/ca.crt".into()),
            }
        );
        // The effective config round-trips through its raw form.
        let raw = serde_yaml_ng::to_string(&crate::config::raw::RawConfig::from_config(&c)).unwrap();
        assert_eq!(parse_yaml(&raw).unwrap(), c);
        // Minimal: optional fields absent.
        let min = with(
            &without(&oauth2_doc(), "auth.jwt.oauth2"),
            "auth.jwt.oauth2",
            "{tokenUrl: \"https://idp/token\", clientId: c, clientSecretFile: /s, authMethod: client_secret_post}",
        );
        let c = parse_yaml(&min).unwrap();
        let AuthMethod::Jwt(j) = &c.auth.method else { panic!() };
        let JwtSource::OAuth2(o) = &j.source else { panic!() };
        assert_eq!(o.auth_method, ClientAuthMethod::ClientSecretPost);
        assert!(o.scopes.is_empty() && o.resources.is_empty());
        assert_eq!((o.audience.as_ref(), o.ca_cert_file.as_ref()), (None, None));

        let doc = oauth2_doc();
        let set = |path: &str, value: &str| with(&doc, path, value);
        fails_at(
            &set("auth.jwt.oauth2.tokenUrl", "http://idp/token"),
            "auth.jwt.oauth2.tokenUrl",
            "https://",
        );
        fails_at(
            &set("auth.jwt.oauth2.tokenUrl", "https://u:p@idp/token"),
            "auth.jwt.oauth2.tokenUrl",
            "user info",
        );
        fails_at(
            &set("auth.jwt.oauth2.tokenUrl", "https://idp/token#x"),
            "auth.jwt.oauth2.tokenUrl",
            "fragment",
        );
        fails_at(
            &set("auth.jwt.oauth2.tokenUrl", "https:///token"),
            "auth.jwt.oauth2.tokenUrl",
            "host",
        );
        fails_at(
            &set("auth.jwt.oauth2.authMethod", "private_key_jwt"),
            "auth.jwt.oauth2.authMethod",
            "client_secret_basic or client_secret_post",
        );
        fails_at(
            &without(&doc, "auth.jwt.oauth2.authMethod"),
            "auth.jwt.oauth2.authMethod",
            "required",
        );
        fails_at(
            &without(&doc, "auth.jwt.oauth2.clientId"),
            "auth.jwt.oauth2.clientId",
            "required",
        );
        fails_at(
            &set("auth.jwt.oauth2.clientSecretFile", "secret"),
            "auth.jwt.oauth2.clientSecretFile",
            "absolute",
        );
        fails_at(
            &set("auth.jwt.oauth2.scopes", "[\"a b\"]"),
            "auth.jwt.oauth2.scopes[0]",
            "scope token",
        );
        fails_at(
            &set("auth.jwt.oauth2.resources", "[\"bao.example\"]"),
            "auth.jwt.oauth2.resources[0]",
            "absolute URI",
        );
        fails_at(
            &set("auth.jwt.oauth2.resources", "[\"https://b#f\"]"),
            "auth.jwt.oauth2.resources[0]",
            "fragment",
        );
        fails_at(
            &set("auth.jwt.oauth2.caCertFile", "ca.crt"),
            "auth.jwt.oauth2.caCertFile",
            "absolute",
        );
        // Source rules.
        fails_at(&without(&doc, "auth.jwt.oauth2"), "auth.jwt.oauth2", "required");
        fails_at(
            &without(&doc, "auth.jwt.source"),
            "auth.jwt.source",
            "required when auth.jwt.oauth2 is set",
        );
        fails_at(
            &set("auth.jwt.jwtFile", "/x.jwt"),
            "auth.jwt.jwtFile",
            "must not be set",
        );
        fails_at(&set("auth.jwt.source", "file"), "auth.jwt.oauth2", "must not be set");
        fails_at(
            &without(&doc, "auth.jwt.expectedIssuer"),
            "auth.jwt.expectedIssuer",
            "required",
        );
        fails_at(
            &set("auth.jwt.expectedAudience", "[]"),
            "auth.jwt.expectedAudience",
            "at least one",
        );
    }

    #[test]
    fn cert_rules() {
        let c = parse_yaml(&cert_doc("pkcs11", PKCS11)).unwrap();
        let AuthMethod::Cert(cert) = c.auth.method else {
            panic!()
        };
        assert_eq!(cert.min_remaining_ttl, Duration::from_secs(86_400));
        assert_eq!(cert.name, "");
        let CertSource::Pkcs11(p) = cert.source else { panic!() };
        assert_eq!(p.max_sessions, 2);
        fails_at(
            &cert_doc("pkcs11", &PKCS11.replace("maxSessions: 2", "maxSessions: 1")),
            "auth.cert.pkcs11.maxSessions",
            "between 2",
        );
        fails_at(
            &cert_doc("pkcs11", &PKCS11.replace(", maxSessions: 2", "")),
            "auth.cert.pkcs11.maxSessions",
            "required",
        );
        fails_at(
            &cert_doc("pkcs11", &PKCS11.replace("tokenLabel: t", "tokenLabel: ''")),
            "auth.cert.pkcs11.tokenLabel",
            "empty",
        );
        fails_at(
            &cert_doc("pkcs11", &PKCS11.replace("/pin", "pin")),
            "auth.cert.pkcs11.pinFile",
            "absolute",
        );
        fails_at(
            &cert_doc("pkcs11", "name: x"),
            "auth.cert.pkcs11",
            "required when auth.cert.source is pkcs11",
        );
        let file = "file: {certificateFile: /c.pem, keyFile: /k.pem}";
        let c = parse_yaml(&cert_doc("file", file)).unwrap();
        let AuthMethod::Cert(cert) = c.auth.method else {
            panic!()
        };
        assert_eq!(
            cert.source,
            CertSource::File {
                certificate_file: "/c.pem".into(),
                key_file: "/k.pem".into()
            }
        );
        fails_at(
            &cert_doc("file", &format!("{file}, {PKCS11}")),
            "auth.cert.pkcs11",
            "must not be set when auth.cert.source is file",
        );
        fails_at(
            &cert_doc("pkcs11", &format!("{file}, {PKCS11}")),
            "auth.cert.file",
            "must not be set",
        );
        fails_at(&cert_doc("file", "name: x"), "auth.cert.file", "required");
        fails_at(&cert_doc("spiffe", "name: x"), "auth.cert.source", "not supported");
        fails_at(&cert_doc("hsm", "name: x"), "auth.cert.source", "pkcs11, file");
        let t = with(&without(FULL, "auth.jwt"), "auth.method", "cert");
        fails_at(
            &with(&t, "auth.cert", "{mountPath: auth/cert}"),
            "auth.cert.source",
            "required",
        );
    }
}
