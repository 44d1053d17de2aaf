//! Every production auth method against a real OpenBao: JWT (with a
//! rotated JWT file, a revoked token and an expired JWT), AppRole, TLS
//! client certificates (valid, expired, signed by an unknown CA) and
//! PKCS#11 keys in SoftHSM2 (ECDSA P-256 with the right and a wrong PIN;
//! RSA, signing the TLS 1.3 handshake with RSA-PSS).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bao_kms_system_tests::doctor::{EXIT_DIAGNOSTIC, assert_fails, check, run_doctor};
use bao_kms_system_tests::provider::dev_setup;
use bao_kms_system_tests::{OpenBao, Provider, ProviderEnv, Provisioned, counter, metric, provision, wait};
use rcgen::{CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

const EXIT_RUNTIME: i32 = 5;
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "openbao";
const SUBJECT: &str = "system:node:cp-1";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Replaces the `auth:` section of the harness config with `auth_yaml`.
fn use_auth(env: &ProviderEnv, auth_yaml: &str) -> anyhow::Result<()> {
    let yaml = env.config_yaml();
    let start = yaml.find("auth:\n").ok_or_else(|| anyhow::anyhow!("no auth section"))?;
    let end = yaml
        .find("transit:\n")
        .ok_or_else(|| anyhow::anyhow!("no transit section"))?;
    env.write_config_text(&format!("{}{auth_yaml}{}", &yaml[..start], &yaml[end..]))
}

// ---------------------------------------------------------------- JWT

struct JwtIssuer {
    key: KeyPair,
}

impl JwtIssuer {
    fn mint(&self, exp: i64) -> anyhow::Result<String> {
        let claims = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "iat": now() - 5, "exp": exp});
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes())?;
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &key,
        )?)
    }
}

/// JWT auth at `auth/k8s-jwt` with a pinned public key and a role bound to
/// the issuer, audience and subject.
fn setup_jwt(bao: &OpenBao, p: &Provisioned) -> anyhow::Result<JwtIssuer> {
    let key = KeyPair::generate()?;
    let public = bao.dir().join("jwt-signer.pub.pem");
    fs::write(&public, key.public_key_pem())?;
    bao.bao(&["auth", "enable", "-path=k8s-jwt", "jwt"])?;
    bao.bao(&[
        "write",
        "auth/k8s-jwt/config",
        &format!("jwt_validation_pubkeys=@{}", public.display()),
        &format!("bound_issuer={ISSUER}"),
    ])?;
    bao.bao(&[
        "write",
        "auth/k8s-jwt/role/kms",
        "role_type=jwt",
        &format!("bound_audiences={AUDIENCE}"),
        "user_claim=sub",
        &format!("bound_subject={SUBJECT}"),
        &format!("token_policies={}", p.policy_name),
        "token_no_default_policy=true",
        "token_ttl=1h",
    ])?;
    Ok(JwtIssuer { key })
}

fn jwt_auth_yaml(jwt_file: &Path) -> String {
    format!(
        "auth:\n  method: jwt\n  jwt:\n    mountPath: auth/k8s-jwt\n    role: kms\n    jwtFile: {}\n    expectedIssuer: {ISSUER}\n    expectedAudience: [{AUDIENCE}]\n    expectedSubject: \"{SUBJECT}\"\n",
        jwt_file.display()
    )
}

/// Waits until the provider has logged in successfully `n` times.
async fn wait_for_logins(provider: &Provider, n: f64) -> anyhow::Result<()> {
    wait::until(Duration::from_secs(15), &format!("{n} successful logins"), || async {
        match provider.metrics_text().await {
            Ok(text) if counter(&text, "openbao_kms_auth_login_total", &[("status", "ok")]) >= n => Ok(()),
            Ok(text) => Err(text),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await
}

#[tokio::test]
async fn jwt_login_relogin_after_revocation_and_expired_jwt_recovery() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    let issuer = setup_jwt(&bao, &p)?;
    let jwt_file = env.dir().join("identity.jwt");
    let first = issuer.mint(now() + 3600)?;
    write_private(&jwt_file, &first)?;
    use_auth(&env, &jwt_auth_yaml(&jwt_file))?;

    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    let text = provider.metrics_text().await?;
    assert_eq!(
        counter(
            &text,
            "openbao_kms_openbao_requests_total",
            &[("operation", "jwt_login"), ("status", "ok")]
        ),
        1.0
    );

    // The issuer rotates the JWT file: the provider notices the changed
    // material and logs in with the new JWT on its own.
    let second = issuer.mint(now() + 7200)?;
    write_private(&jwt_file, &second)?;
    wait_for_logins(&provider, 2.0).await?;
    assert!(provider.stderr().contains("auth.material_changed"));

    // Every token of the JWT mount is revoked mid-traffic: the next request
    // gets a 403, logs in again and succeeds.
    bao.bao(&["token", "revoke", "-mode=path", "auth/k8s-jwt/"])?;
    kms.decrypt(&stored).await?;
    let text = provider.metrics_text().await?;
    assert_eq!(
        counter(&text, "openbao_kms_auth_login_total", &[("status", "ok")]),
        3.0,
        "{text}"
    );

    // An expired JWT replaces it and the token is revoked again: the
    // provider cannot log in, says why, and turns unhealthy.
    write_private(&jwt_file, &issuer.mint(now() - 600)?)?;
    bao.bao(&["token", "revoke", "-mode=path", "auth/k8s-jwt/"])?;
    let err = kms
        .decrypt(&stored)
        .await
        .expect_err("decrypt must fail without a token");
    assert!(format!("{err:#}").contains("JWT expired"), "{err:#}");
    // The first unhealthy probe may report the revoked token (403); the
    // login that follows reports the expired JWT.
    wait::until(
        Duration::from_secs(15),
        "auth_failed with JWT expired in /status",
        || async {
            match provider.status_json().await {
                Ok(s) => {
                    let reasons = s["reasons"].to_string();
                    if s["healthy"] == false && reasons.contains("auth_failed") && reasons.contains("JWT expired") {
                        Ok(())
                    } else {
                        Err(s.to_string())
                    }
                }
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await?;
    assert!(
        !provider.stderr().contains(&first) && !provider.stderr().contains(&second),
        "JWTs must never be logged"
    );

    // A fresh JWT appears: the provider recovers without a restart (within
    // the login backoff).
    write_private(&jwt_file, &issuer.mint(now() + 3600)?)?;
    wait::until(
        Duration::from_secs(40),
        "recovery after a fresh JWT appeared",
        || async {
            let status = provider.status_json().await.map_err(|e| format!("{e:#}"))?;
            if status["healthy"] != true {
                return Err(status.to_string());
            }
            kms.decrypt(&stored)
                .await
                .map(drop)
                .map_err(|e| format!("decrypt: {e:#}"))
        },
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- OAuth2

fn oauth2_auth_yaml(url: &str, auth_method: &str, secret: &Path, ca: &Path) -> String {
    format!(
        "auth:\n  method: jwt\n  jwt:\n    mountPath: auth/k8s-jwt\n    role: kms\n    source: oauth2\n    \
         expectedIssuer: {ISSUER}\n    expectedAudience: [{AUDIENCE}]\n    expectedSubject: {SUBJECT}\n    oauth2:\n      \
         tokenUrl: \"{url}\"\n      clientId: kms-node/1\n      clientSecretFile: {}\n      authMethod: {auth_method}\n      \
         scopes: [openbao.login, kms]\n      audience: openbao\n      \
         resources: [\"https://bao.example:8200\", \"urn:bao:kms\"]\n      caCertFile: {}\n",
        secret.display(),
        ca.display()
    )
}

// Multi-threaded: doctor runs as a blocking child process while the token
// endpoint of this test answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_from_an_oauth2_token_endpoint_logs_in_and_is_reused_until_near_expiry() -> anyhow::Result<()> {
    use bao_kms_system_tests::oauth2::{ClientAuth, TokenEndpoint};
    let (bao, p, env) = dev_setup().await?;
    let issuer = std::sync::Arc::new(setup_jwt(&bao, &p)?);
    let minted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mint = {
        let (issuer, minted) = (issuer.clone(), minted.clone());
        move || {
            let jwt = issuer.mint(now() + 3600).expect("mint");
            minted.lock().expect("minted").push(jwt.clone());
            jwt
        }
    };
    // A secret that needs form encoding in Basic auth.
    let secret = "s3cret:with/chars+";
    let endpoint = TokenEndpoint::start("kms-node/1", secret, ClientAuth::Basic, Some(1800), mint.clone()).await?;
    let (secret_file, ca_file) = (env.dir().join("client-secret"), env.dir().join("idp-ca.pem"));
    write_private(&secret_file, &format!("{secret}\n"))?;
    fs::write(&ca_file, endpoint.ca_pem())?;
    use_auth(
        &env,
        &oauth2_auth_yaml(
            &endpoint.url("?tenant=a"),
            "client_secret_basic",
            &secret_file,
            &ca_file,
        ),
    )?;

    // The endpoint is down for the first grant: the login fails, backs off
    // and the next one succeeds (no retry inside the OAuth2 client).
    endpoint.force(503, 1);
    let mut provider = Provider::spawn(&env)?;
    provider.wait_ready(Duration::from_secs(20)).await?;
    let kms = provider.client().await?;
    let stored = kms.prime().await?;
    kms.decrypt(&stored).await?;
    assert!(
        provider.stderr().contains("oauth2_unavailable: HTTP 503"),
        "{}",
        provider.stderr()
    );
    let grants = endpoint.grants();
    assert_eq!(grants.len(), 2, "{grants:?}");
    let grant = &grants[1];
    assert_eq!((grant.client_auth, grant.authenticated), ("basic", true), "{grant:?}");
    assert_eq!(grant.param("grant_type"), ["client_credentials"]);
    assert_eq!(grant.param("scope"), ["openbao.login kms"]);
    assert_eq!(grant.param("audience"), ["openbao"]);
    assert_eq!(grant.param("resource"), ["https://bao.example:8200", "urn:bao:kms"]);
    assert!(grant.param("client_secret").is_empty() && grant.param("client_id").is_empty());
    let text = provider.metrics_text().await?;
    assert_eq!(
        counter(
            &text,
            "openbao_kms_openbao_requests_total",
            &[("operation", "jwt_login"), ("status", "ok")]
        ),
        1.0
    );

    // OpenBao revokes the token: the provider logs in again with the cached
    // JWT (far from expiry), without asking the endpoint.
    bao.bao(&["token", "revoke", "-mode=path", "auth/k8s-jwt/"])?;
    kms.decrypt(&stored).await?;
    wait_for_logins(&provider, 2.0).await?;
    assert_eq!(endpoint.grants().len(), 2, "the cached JWT is reused");
    provider.terminate().await?;
    let stderr = provider.stderr();
    assert!(!stderr.contains(secret), "the client secret must never be logged");
    for jwt in minted.lock().expect("minted").iter() {
        assert!(!stderr.contains(jwt.as_str()), "the JWT must never be logged");
    }

    // client_secret_post against an endpoint whose secret was rotated: the
    // old secret in the file is rejected (oauth2_rejected, exit 5, nothing
    // of the secret logged); the new one, renamed into place, works.
    let post = TokenEndpoint::start("kms-node/1", "rotated-secret", ClientAuth::Post, None, mint).await?;
    fs::write(&ca_file, post.ca_pem())?;
    use_auth(
        &env,
        &oauth2_auth_yaml(&post.url(""), "client_secret_post", &secret_file, &ca_file),
    )?;
    let (code, stderr) = Provider::spawn(&env)?
        .wait_exit_without_socket(Duration::from_secs(30))
        .await?;
    assert_eq!(code, EXIT_RUNTIME, "{stderr}");
    assert!(stderr.contains("oauth2_rejected: HTTP 401: invalid_client"), "{stderr}");
    assert!(!stderr.contains(secret), "the client secret must never be logged");
    assert!(
        post.grants()
            .iter()
            .all(|g| g.client_auth == "post" && !g.authenticated)
    );
    // doctor names the same layer: the file and CA are fine, the grant is
    // refused, the login is not attempted.
    let (code, checks) = tokio::task::block_in_place(|| run_doctor(&env, &[]))?;
    assert_eq!(code, EXIT_DIAGNOSTIC, "{checks:#?}");
    assert_eq!(check(&checks, "oauth2.local")["status"], "pass", "{checks:#?}");
    assert_fails(&checks, "oauth2.acquire", "oauth2_rejected: HTTP 401: invalid_client");
    assert_eq!(check(&checks, "openbao.auth")["status"], "skip", "{checks:#?}");
    assert!(checks.iter().all(|c| c["id"] != "jwt.local"), "{checks:#?}");
    assert!(!serde_json::to_string(&checks)?.contains(secret));

    let staged = env.dir().join("client-secret.new");
    write_private(&staged, "rotated-secret\n")?;
    fs::rename(&staged, &secret_file)?;
    let mut provider = Provider::spawn(&env)?;
    provider.wait_ready(Duration::from_secs(20)).await?;
    provider.client().await?.decrypt(&stored).await?;
    let (code, checks) = tokio::task::block_in_place(|| run_doctor(&env, &[]))?;
    assert_eq!(code, 0, "{checks:#?}");
    for id in ["oauth2.local", "oauth2.acquire", "openbao.auth"] {
        assert_eq!(check(&checks, id)["status"], "pass", "{id}: {checks:#?}");
    }
    let last = post.grants().pop().expect("a grant");
    assert_eq!(last.param("client_id"), ["kms-node/1"]);
    assert!(last.authenticated, "{last:?}");
    Ok(())
}

// ---------------------------------------------------------------- AppRole

/// Enables AppRole with a role holding the provider's policy and points
/// `env`'s config at it; returns the secret ID.
pub(crate) fn use_approle(bao: &OpenBao, p: &Provisioned, env: &ProviderEnv) -> anyhow::Result<String> {
    bao.bao(&["auth", "enable", "approle"])?;
    bao.bao(&[
        "write",
        "auth/approle/role/kms",
        &format!("token_policies={}", p.policy_name),
        "token_no_default_policy=true",
        "token_ttl=1h",
    ])?;
    let role_id = bao.bao(&["read", "-field=role_id", "auth/approle/role/kms/role-id"])?;
    let secret_id = bao.bao(&["write", "-f", "-field=secret_id", "auth/approle/role/kms/secret-id"])?;
    let (role_file, secret_file) = (env.dir().join("role-id"), env.dir().join("secret-id"));
    write_private(&role_file, role_id.trim())?;
    write_private(&secret_file, secret_id.trim())?;
    use_auth(
        env,
        &format!(
            "auth:\n  method: approle\n  approle:\n    mountPath: auth/approle\n    roleIdFile: {}\n    secretIdFile: {}\n",
            role_file.display(),
            secret_file.display()
        ),
    )?;
    Ok(secret_id.trim().to_owned())
}

#[tokio::test]
async fn approle_login() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    let secret_id = use_approle(&bao, &p, &env)?;
    let provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.decrypt(&kms.prime().await?).await?;
    let text = provider.metrics_text().await?;
    assert_eq!(
        counter(
            &text,
            "openbao_kms_openbao_requests_total",
            &[("operation", "approle_login"), ("status", "ok")]
        ),
        1.0
    );
    assert!(
        !provider.stderr().contains(&secret_id),
        "the secret ID must never be logged"
    );
    Ok(())
}

// ---------------------------------------------------------------- certificates

pub(crate) struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Ok(Self {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    /// A client certificate and its key (PKCS#8 PEM) signed by this CA.
    pub(crate) fn client(&self, expired: bool) -> anyhow::Result<(String, KeyPair)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["kms-client".to_owned()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        } else {
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        }
        let issuer: &Issuer<'_, KeyPair> = &self.ca;
        Ok((params.signed_by(&key, issuer)?.pem(), key))
    }
}

impl Pki {
    /// The CA certificate (PEM).
    pub(crate) fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A valid client certificate for a fresh RSA 2048 key (made by
    /// `openssl genpkey`: rcgen's ring backend cannot generate RSA keys).
    fn rsa_client(&self, dir: &Path) -> anyhow::Result<(String, KeyPair)> {
        let pem = dir.join("rsa-gen.key");
        let out = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&pem)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl genpkey: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = KeyPair::from_pem(&fs::read_to_string(&pem)?)?;
        fs::remove_file(&pem)?;
        let mut params = CertificateParams::new(vec!["kms-client".to_owned()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let issuer: &Issuer<'_, KeyPair> = &self.ca;
        Ok((params.signed_by(&key, issuer)?.pem(), key))
    }

    /// A valid client certificate whose window opens `secs_ahead` seconds
    /// from now (a clock ahead of this node's issued it).
    fn client_from_the_future(&self, secs_ahead: i64) -> anyhow::Result<(String, KeyPair)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["kms-client".to_owned()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs_ahead);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let issuer: &Issuer<'_, KeyPair> = &self.ca;
        Ok((params.signed_by(&key, issuer)?.pem(), key))
    }
}

/// `notAfter` of [`Pki::client`]'s valid certificates: 2100-01-01T00:00:00Z.
const VALID_CLIENT_NOT_AFTER: i64 = 4_102_444_800;

/// The certificate metrics after a cert login with a valid client
/// certificate from `source`.
fn assert_certificate_metrics(text: &str, source: &str) {
    assert_eq!(
        metric(text, "openbao_kms_certificate_source_info", &[("source", source)]),
        Some(1.0),
        "{text}"
    );
    let ttl = metric(text, "openbao_kms_certificate_ttl_seconds", &[]).expect("certificate_ttl_seconds");
    // Set at the login or a later probe, before this scrape: at least what
    // is left now, and more by at most the time since then.
    let left_now = (VALID_CLIENT_NOT_AFTER - now()) as f64;
    assert!(
        ttl >= left_now && ttl < left_now + 120.0,
        "certificate_ttl_seconds {ttl}, {left_now}s left now"
    );
}

/// Cert auth at `auth/cert` trusting `pki`'s CA for the provider's policy.
fn setup_cert_auth(bao: &OpenBao, p: &Provisioned, pki: &Pki) -> anyhow::Result<()> {
    let ca = bao.dir().join("client-ca.pem");
    fs::write(&ca, pki.ca.pem())?;
    bao.bao(&["auth", "enable", "cert"])?;
    bao.bao(&[
        "write",
        "auth/cert/certs/kms",
        &format!("certificate=@{}", ca.display()),
        &format!("token_policies={}", p.policy_name),
        "token_no_default_policy=true",
        "token_ttl=1h",
    ])?;
    Ok(())
}

fn cert_file_yaml(cert: &Path, key: &Path) -> String {
    format!(
        "auth:\n  method: cert\n  cert:\n    mountPath: auth/cert\n    name: kms\n    source: file\n    file:\n      certificateFile: {}\n      keyFile: {}\n",
        cert.display(),
        key.display()
    )
}

fn write_client(env: &ProviderEnv, name: &str, cert: &str, key: &KeyPair) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (c, k) = (
        env.dir().join(format!("{name}.crt")),
        env.dir().join(format!("{name}.key")),
    );
    write_private(&c, cert)?;
    write_private(&k, &key.serialize_pem())?;
    Ok((c, k))
}

/// A non-dev OpenBao (raft storage, its own CA, a TLS listener that
/// requests client certificates), provisioned like the dev setups.
async fn raft_setup() -> anyhow::Result<(OpenBao, Provisioned, ProviderEnv)> {
    let bao = OpenBao::start_raft().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = ProviderEnv::new(&bao, &p)?;
    Ok((bao, p, env))
}

#[tokio::test]
async fn cert_login_valid_expired_and_unknown_ca() -> anyhow::Result<()> {
    let (bao, p, env) = raft_setup().await?;
    let pki = Pki::new()?;
    setup_cert_auth(&bao, &p, &pki)?;

    let (cert, key) = pki.client(false)?;
    let (c, k) = write_client(&env, "valid", &cert, &key)?;
    use_auth(&env, &cert_file_yaml(&c, &k))?;
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    kms.decrypt(&kms.prime().await?).await?;
    let text = provider.metrics_text().await?;
    assert_eq!(
        counter(
            &text,
            "openbao_kms_openbao_requests_total",
            &[("operation", "cert_login"), ("status", "ok")]
        ),
        1.0
    );
    assert_certificate_metrics(&text, "file");
    provider.terminate().await?;

    // Expired: refused locally with the reason, before any login attempt.
    let (cert, key) = pki.client(true)?;
    let (c, k) = write_client(&env, "expired", &cert, &key)?;
    use_auth(&env, &cert_file_yaml(&c, &k))?;
    let (code, stderr) = Provider::spawn(&env)?
        .wait_exit_without_socket(Duration::from_secs(20))
        .await?;
    assert_eq!(code, EXIT_RUNTIME, "{stderr}");
    assert!(stderr.contains("expired at"), "{stderr}");
    assert_fails(&run_doctor(&env, &[])?.1, "auth.cert.local", "expired at");

    // Signed by a CA OpenBao does not trust: OpenBao refuses the login.
    let (cert, key) = Pki::new()?.client(false)?;
    let (c, k) = write_client(&env, "stranger", &cert, &key)?;
    use_auth(&env, &cert_file_yaml(&c, &k))?;
    let (code, stderr) = Provider::spawn(&env)?
        .wait_exit_without_socket(Duration::from_secs(20))
        .await?;
    assert_eq!(code, EXIT_RUNTIME, "{stderr}");
    assert!(
        stderr.contains("cert_login") && stderr.contains("auth_failed"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn cert_clock_skew_leeway_admits_a_certificate_from_a_clock_slightly_ahead() -> anyhow::Result<()> {
    let (bao, p, env) = raft_setup().await?;
    let pki = Pki::new()?;
    setup_cert_auth(&bao, &p, &pki)?;
    let (cert, key) = pki.client_from_the_future(120)?;
    let (c, k) = write_client(&env, "early", &cert, &key)?;

    // Without leeway the certificate is refused here, naming the clock.
    use_auth(&env, &format!("{}    clockSkewLeeway: 0s\n", cert_file_yaml(&c, &k)))?;
    let (code, checks) = run_doctor(&env, &[])?;
    assert_eq!(code, 4);
    assert_fails(&checks, "auth.cert.local", "is not valid before");

    // With 5m of leeway the local check passes and the certificate reaches
    // OpenBao, which judges its window by its own clock.
    use_auth(&env, &format!("{}    clockSkewLeeway: 5m\n", cert_file_yaml(&c, &k)))?;
    let (code, checks) = run_doctor(&env, &[])?;
    assert_eq!(code, 4);
    assert_eq!(
        bao_kms_system_tests::doctor::check(&checks, "auth.cert.local")["status"],
        "pass",
        "{checks:#?}"
    );
    assert_fails(&checks, "openbao.auth", "cert_login");
    Ok(())
}

// ---------------------------------------------------------------- PKCS#11

pub(crate) const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token `kms` (user PIN 1234) in a private directory holding the
/// client key as `kms-client`.
pub(crate) fn softhsm_token(dir: &Path, key: &KeyPair) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        Path::new(SOFTHSM_MODULE).exists(),
        "SoftHSM2 is not installed ({SOFTHSM_MODULE} missing): run `make deps`"
    );
    let tokens = dir.join("softhsm-tokens");
    fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let key_pem = dir.join("hsm-import.key");
    write_private(&key_pem, &key.serialize_pem())?;
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", &conf)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "softhsm2-util {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&[
        "--init-token",
        "--free",
        "--label",
        "kms",
        "--pin",
        "1234",
        "--so-pin",
        "123456",
    ])?;
    let key_path = key_pem.display().to_string();
    run(&[
        "--import",
        &key_path,
        "--token",
        "kms",
        "--label",
        "kms-client",
        "--id",
        "01",
        "--pin",
        "1234",
    ])?;
    fs::remove_file(&key_pem)?;
    Ok(conf)
}

fn pkcs11_yaml(cert: &Path, pin: &Path) -> String {
    format!(
        "auth:\n  method: cert\n  cert:\n    mountPath: auth/cert\n    name: kms\n    source: pkcs11\n    pkcs11:\n      certificateFile: {}\n      modulePath: {SOFTHSM_MODULE}\n      tokenLabel: kms\n      keyLabel: kms-client\n      pinFile: {}\n      maxSessions: 2\n",
        cert.display(),
        pin.display()
    )
}

#[tokio::test]
async fn pkcs11_login_with_softhsm_and_wrong_pin() -> anyhow::Result<()> {
    let (bao, p, env) = raft_setup().await?;
    let pki = Pki::new()?;
    setup_cert_auth(&bao, &p, &pki)?;
    let (cert, key) = pki.client(false)?;
    let conf = softhsm_token(env.dir(), &key)?;
    drop(key);
    let conf = conf.display().to_string();
    let cert_file = env.dir().join("hsm-client.crt");
    write_private(&cert_file, &cert)?;
    let pin_file = env.dir().join("pin");

    write_private(&pin_file, "1234")?;
    use_auth(&env, &pkcs11_yaml(&cert_file, &pin_file))?;
    let mut provider = Provider::spawn_with_env(&env, &[("SOFTHSM2_CONF", conf.as_str())])?;
    provider.wait_ready(Duration::from_secs(20)).await?;
    let kms = provider.client().await?;
    kms.decrypt(&kms.prime().await?).await?;
    let text = provider.metrics_text().await?;
    assert_eq!(
        counter(
            &text,
            "openbao_kms_openbao_requests_total",
            &[("operation", "cert_login"), ("status", "ok")]
        ),
        1.0
    );
    assert_certificate_metrics(&text, "pkcs11");
    provider.terminate().await?;

    write_private(&pin_file, "9999")?;
    let (code, stderr) = Provider::spawn_with_env(&env, &[("SOFTHSM2_CONF", conf.as_str())])?
        .wait_exit_without_socket(Duration::from_secs(20))
        .await?;
    assert_eq!(code, EXIT_RUNTIME, "{stderr}");
    assert!(stderr.contains("wrong PIN"), "{stderr}");
    assert!(!stderr.contains("9999"), "the PIN must never be logged");
    assert_fails(
        &run_doctor(&env, &[("SOFTHSM2_CONF", conf.as_str())])?.1,
        "auth.cert.pkcs11",
        "wrong PIN",
    );
    Ok(())
}

#[tokio::test]
async fn pkcs11_rsa_key_logs_in_with_rsa_pss() -> anyhow::Result<()> {
    let (bao, p, env) = raft_setup().await?;
    let pki = Pki::new()?;
    setup_cert_auth(&bao, &p, &pki)?;
    let (cert, key) = pki.rsa_client(env.dir())?;
    let conf = softhsm_token(env.dir(), &key)?;
    drop(key);
    let conf = conf.display().to_string();
    let cert_file = env.dir().join("hsm-client.crt");
    write_private(&cert_file, &cert)?;
    let pin_file = env.dir().join("pin");
    write_private(&pin_file, "1234")?;
    use_auth(&env, &pkcs11_yaml(&cert_file, &pin_file))?;
    let mut provider = Provider::spawn_with_env(&env, &[("SOFTHSM2_CONF", conf.as_str())])?;
    provider.wait_ready(Duration::from_secs(20)).await?;
    let kms = provider.client().await?;
    kms.decrypt(&kms.prime().await?).await?;
    let text = provider.metrics_text().await?;
    assert_eq!(
        counter(
            &text,
            "openbao_kms_openbao_requests_total",
            &[("operation", "cert_login"), ("status", "ok")]
        ),
        1.0
    );
    assert_certificate_metrics(&text, "pkcs11");
    // The pool's limit is in the log: maxSessions 2, one signing session.
    assert!(
        provider.stderr().contains("auth.pkcs11.pool") && provider.stderr().contains("\"max_sessions\":2"),
        "{}",
        provider.stderr()
    );
    Ok(())
}
