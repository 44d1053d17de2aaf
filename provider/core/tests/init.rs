//! `init` rendering: golden output for a fixed values file in both models,
//! and every rule of the command rejected with a message that names it.
//!
//! Regenerate the golden files after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p bao-kms-core --test init` and review the diff.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bao_kms_core::config::{AuthMethod, SocketGroup, ValidationContext, parse_yaml};
use bao_kms_core::encryption_config::{self as ec, ProviderExpectation, RolloutPhase, Severity, ValidateOptions};
use bao_kms_core::init::{Generator, InitError, InitRequest, Model, PullPolicy, Rendered, render};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/init")
}

fn values() -> String {
    std::fs::read_to_string(testdata().join("values.yaml")).unwrap()
}

fn request(model: Model) -> InitRequest {
    let static_pod = model == Model::StaticPod;
    InitRequest {
        values: values(),
        model,
        new_key_lineage_id: None,
        policy_name: None,
        image: static_pod.then(|| format!("registry.example.internal/bao-kms-provider@{DIGEST}")),
        image_pull_policy: None,
        socket_gid: static_pod.then(|| "1234".to_owned()),
        context: ValidationContext::default(),
        generator: Generator {
            version: "0.1.0-test".into(),
            commit: "0123abc".into(),
        },
    }
}

fn file<'a>(r: &'a Rendered, name: &str) -> &'a str {
    &r.files.iter().find(|f| f.name == name).unwrap().contents
}

fn golden(model: Model) {
    let rendered = render(&request(model)).unwrap();
    golden_dir(
        &rendered,
        &testdata().join("golden").join(model.as_str()),
        &format!("the {} model", model.as_str()),
    );
}

#[test]
fn golden_systemd() {
    golden(Model::Systemd);
}

#[test]
fn golden_static_pod() {
    golden(Model::StaticPod);
}

#[test]
fn modes_and_file_sets() {
    let systemd = render(&request(Model::Systemd)).unwrap();
    let modes: Vec<(&str, u32)> = systemd.files.iter().map(|f| (f.name, f.mode)).collect();
    assert_eq!(
        modes,
        [
            ("config.yaml", 0o640),
            ("encryption-config-readers.yaml", 0o644),
            ("encryption-config.yaml", 0o644),
            ("openbao-policy.hcl", 0o644),
            ("openbao-setup.sh", 0o755),
            ("node-setup.sh", 0o755),
            ("installation.json", 0o644),
        ]
    );
    let pod = render(&request(Model::StaticPod)).unwrap();
    assert!(
        pod.files
            .iter()
            .any(|f| f.name == "bao-kms-provider.yaml" && f.mode == 0o644)
    );
    let listed: serde_json::Value = serde_json::from_str(file(&pod, "installation.json")).unwrap();
    let names: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let rendered: Vec<&str> = pod.files.iter().map(|f| f.name).collect();
    assert_eq!(names, rendered);
}

#[test]
fn config_fills_defaults_and_loads_back() {
    let r = render(&request(Model::Systemd)).unwrap();
    let cfg = parse_yaml(file(&r, "config.yaml")).unwrap();
    assert_eq!(cfg, r.config);
    assert_eq!(
        cfg.openbao.ca_cert_file,
        PathBuf::from(bao_kms_core::init::DEFAULT_CA_CERT_FILE)
    );
    assert_eq!(cfg.server.socket_group, SocketGroup::Name("openbao-kms-socket".into()));
    let AuthMethod::Jwt(jwt) = &cfg.auth.method else {
        panic!("jwt expected")
    };
    assert_eq!(jwt.jwt_file(), Some(Path::new(bao_kms_core::init::DEFAULT_JWT_FILE)));
    assert_eq!(
        cfg.identity_scope().fingerprint(),
        "cfg1.iWfCItBef04qDNcnEXME76HSYDWTVfhtoTlg2YQpdPg"
    );
    assert_eq!(r.policy_name, "openbao-kms-workload-a");
    assert!(file(&r, "openbao-policy.hcl").contains("path \"transit/encrypt/k8s-workload-a-etcd\""));
}

#[test]
fn socket_gid_overrides_the_values_socket_group() {
    let mut req = request(Model::StaticPod);
    req.values = req
        .values
        .replace("server:\n", "server:\n  socketGroup: openbao-kms-socket\n");
    let r = render(&req).unwrap();
    assert_eq!(r.config.server.socket_group, SocketGroup::Gid(1234));
    assert!(file(&r, "bao-kms-provider.yaml").contains("supplementalGroups: [1234]"));
    assert!(file(&r, "bao-kms-provider.yaml").contains("imagePullPolicy: Never"));
    req.image_pull_policy = Some(PullPolicy::IfNotPresent);
    assert!(file(&render(&req).unwrap(), "bao-kms-provider.yaml").contains("imagePullPolicy: IfNotPresent"));
}

#[test]
fn both_encryption_configs_pass_the_analysis_in_their_phase() {
    let r = render(&request(Model::Systemd)).unwrap();
    let expected = ProviderExpectation::from_config(&r.config);
    for (name, phase) in [
        ("encryption-config-readers.yaml", RolloutPhase::Reader),
        ("encryption-config.yaml", RolloutPhase::Writer),
    ] {
        let text = file(&r, name);
        let findings = ec::analyze(text, &expected, &ValidateOptions::default());
        assert!(
            findings.iter().all(|f| f.severity != Severity::Error),
            "{name}: {findings:?}"
        );
        let doc = ec::decode(text).unwrap();
        assert_eq!(ec::cross_check(&doc, &expected).1, Some(phase), "{name}");
    }
}

#[test]
fn static_pod_has_the_required_shape() {
    let r = render(&request(Model::StaticPod)).unwrap();
    let pod: serde_yaml_ng::Value = serde_yaml_ng::from_str(file(&r, "bao-kms-provider.yaml")).unwrap();
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["namespace"], "kube-system");
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["securityContext"]["runAsUser"], 65532);
    assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        c["image"].as_str().unwrap(),
        format!("registry.example.internal/bao-kms-provider@{DIGEST}")
    );
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    // 60s grace + 60s, in 5s periods.
    assert_eq!(c["startupProbe"]["failureThreshold"], 24);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
    assert!(c["resources"]["limits"]["cpu"].is_null());
    let volumes = spec["volumes"].as_sequence().unwrap();
    let credentials = volumes.iter().find(|v| v["name"] == "credentials").unwrap();
    assert_eq!(credentials["hostPath"]["path"], "/var/lib/openbao-kms/credentials");
    assert_eq!(credentials["hostPath"]["type"], "Directory");
    for forbidden in ["configMap", "secret", "serviceAccountName", "projected"] {
        assert!(!file(&r, "bao-kms-provider.yaml").contains(forbidden), "{forbidden}");
    }
}

#[test]
fn new_key_generates_the_lineage_and_refuses_an_existing_one() {
    let mut req = request(Model::Systemd);
    req.new_key_lineage_id = Some("5f0c8a1e9b7d4c3a2e1f0a9b8c7d6e5f".into());
    match render(&req) {
        Err(InitError::Usage(m)) => assert!(m.contains("--new-key") && m.contains("already have one"), "{m}"),
        other => panic!("{other:?}"),
    }
    req.values = req.values.replace("    keyLineageId: 01HXEXAMPLEKEYLINEAGEID\n", "");
    let r = render(&req).unwrap();
    assert_eq!(
        r.config.transit.key_id_scope.key_lineage_id,
        "5f0c8a1e9b7d4c3a2e1f0a9b8c7d6e5f"
    );
    let inst: serde_json::Value = serde_json::from_str(file(&r, "installation.json")).unwrap();
    assert_eq!(inst["keyLineageIdGenerated"], true);

    req.new_key_lineage_id = None;
    match render(&req) {
        Err(InitError::Values(p)) => assert!(
            p.iter()
                .any(|e| e.path == "transit.keyIdScope.keyLineageId" && e.message.contains("--new-key")),
            "{p:?}"
        ),
        other => panic!("{other:?}"),
    }
}

fn usage_error(req: &InitRequest) -> String {
    match render(req) {
        Err(InitError::Usage(m)) => m,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

fn values_error(req: &InitRequest, path: &str, needle: &str) {
    match render(req) {
        Err(InitError::Values(p)) => assert!(
            p.iter().any(|e| e.path == path && e.message.contains(needle)),
            "no {path}: ...{needle}... in {p:?}"
        ),
        other => panic!("expected a values error at {path}, got {other:?}"),
    }
}

#[test]
fn flag_rules() {
    let mut req = request(Model::StaticPod);
    req.image = None;
    assert!(usage_error(&req).contains("needs --image"));
    for unpinned in [
        "registry.example.internal/bao-kms-provider:0.1.0",
        "registry.example.internal/bao-kms-provider@sha256:ABC",
        &format!("@{DIGEST}"),
        &format!("registry.example.internal/bao-kms-provider@{}", DIGEST.to_uppercase()),
    ] {
        req.image = Some(unpinned.to_owned());
        assert!(usage_error(&req).contains("--image"), "{unpinned}");
    }
    let mut req = request(Model::StaticPod);
    req.socket_gid = None;
    assert!(usage_error(&req).contains("needs --socket-gid"));
    for bad in ["abc", "-5", "0", "+7"] {
        req.socket_gid = Some(bad.to_owned());
        assert!(usage_error(&req).contains("--socket-gid"), "{bad}");
    }
    let mut req = request(Model::Systemd);
    req.image = Some(format!("r/p@{DIGEST}"));
    assert!(usage_error(&req).contains("only for --model static-pod"));
    let mut req = request(Model::Systemd);
    req.socket_gid = Some("1234".into());
    assert!(usage_error(&req).contains("only for --model static-pod"));
    let mut req = request(Model::Systemd);
    for bad in ["root", "default", "-x", ".x", "a b", "pol/icy", "é"] {
        req.policy_name = Some(bad.to_owned());
        assert!(usage_error(&req).contains("--policy-name"), "{bad}");
    }
    req.policy_name = Some("_kms.workload-a".into());
    assert_eq!(render(&req).unwrap().policy_name, "_kms.workload-a");
}

#[test]
fn default_policy_name_must_be_valid() {
    let mut req = request(Model::Systemd);
    req.values = req.values.replace("clusterId: workload-a", "clusterId: \"workload a\"");
    values_error(&req, "transit.keyIdScope.clusterId", "--policy-name");
}

#[test]
fn jwt_binding_rules() {
    for (line, path) in [
        (
            "    expectedIssuer: https://issuer.example.internal\n",
            "auth.jwt.expectedIssuer",
        ),
        ("    expectedAudience: [openbao]\n", "auth.jwt.expectedAudience"),
        ("    expectedSubject: \"system:node:cp\"\n", "auth.jwt.expectedSubject"),
    ] {
        let mut req = request(Model::Systemd);
        assert!(req.values.contains(line));
        req.values = req.values.replace(line, "");
        values_error(&req, path, "required by init");
    }
    let mut req = request(Model::Systemd);
    req.values = req.values.replace("[openbao]", "[\"a,b\"]");
    values_error(&req, "auth.jwt.expectedAudience", "','");
}

#[test]
fn login_before_expiry_must_be_below_the_role_ttl() {
    let mut req = request(Model::Systemd);
    req.values = req.values.replace(
        "  method: jwt\n",
        "  method: jwt\n  loginBeforeTokenExpiry: 30m\n  tokenRenewalIncrement: 2h\n",
    );
    values_error(&req, "auth.loginBeforeTokenExpiry", "less than 30m");
    req.values = req
        .values
        .replace("loginBeforeTokenExpiry: 30m", "loginBeforeTokenExpiry: 29m");
    assert!(render(&req).is_ok());
}

#[test]
fn broad_and_overlapping_directories_are_rejected() {
    let with = |extra: &str| {
        let mut req = request(Model::StaticPod);
        req.values = req.values.replace("  jwt:\n", &format!("  jwt:\n{extra}"));
        req
    };
    values_error(
        &with("    jwtFile: /identity.jwt\n"),
        "auth.jwt.jwtFile",
        "dedicated directory",
    );
    values_error(
        &with("    jwtFile: /etc/identity.jwt\n"),
        "auth.jwt.jwtFile",
        "dedicated directory",
    );
    values_error(
        &with("    jwtFile: /var/lib/openbao-kms/state/identity.jwt\n"),
        "auth.jwt.jwtFile",
        "overlaps the state directory",
    );
    values_error(
        &with("    jwtFile: /run/openbao-kms/identity.jwt\n"),
        "auth.jwt.jwtFile",
        "overlaps the socket directory",
    );
    let mut req = request(Model::StaticPod);
    req.values = req
        .values
        .replace("openbao:\n", "openbao:\n  caCertFile: /etc/ca.crt\n");
    values_error(&req, "openbao.caCertFile", "dedicated directory");
    let mut req = request(Model::StaticPod);
    req.values = req
        .values
        .replace("openbao:\n", "openbao:\n  caCertFile: /etc/openbao kms/ca.crt\n");
    values_error(&req, "openbao.caCertFile", "whitespace");
}

#[test]
fn values_are_validated_like_serve() {
    let mut req = request(Model::Systemd);
    req.values = req.values.replace(
        "https://openbao.example.internal:8200",
        "http://openbao.example.internal:8200",
    );
    values_error(&req, "openbao.address", "https");
    let mut req = request(Model::Systemd);
    req.values = req
        .values
        .replace("configVersion: v1alpha1\n", "configVersion: v1alpha1\nbogus: 1\n");
    match render(&req) {
        Err(InitError::Values(p)) => assert!(p.iter().any(|e| e.path.contains("bogus")), "{p:?}"),
        other => panic!("{other:?}"),
    }
    let mut req = request(Model::Systemd);
    req.values = "a: [".into();
    values_error(&req, "", "not valid YAML");
    let mut req = request(Model::Systemd);
    req.values = req
        .values
        .replace("healthAddress: 127.0.0.1:8082", "healthAddress: \"\"");
    values_error(&req, "server.healthAddress", "must be set");
    let mut req = request(Model::Systemd);
    req.values = req
        .values
        .replace("healthAddress: 127.0.0.1:8082", "healthAddress: 127.0.0.1:0");
    values_error(&req, "server.healthAddress", "port 0");
}

// ------------------------------------------------------ every auth method

/// `values.yaml` with its auth section replaced by `auth`.
fn with_auth(auth: &str) -> String {
    let v = values();
    let start = v.find("auth:\n").unwrap();
    let end = v.find("transit:\n").unwrap();
    format!("{}{auth}{}", &v[..start], &v[end..])
}

const OAUTH2: &str = "auth:\n  method: jwt\n  jwt:\n    mountPath: auth/k8s-workload-a-jwt\n    role: kms-workload-a\n    \
    source: oauth2\n    expectedIssuer: https://issuer.example.internal\n    expectedAudience: [openbao]\n    \
    expectedSubject: \"system:node:cp\"\n    oauth2:\n      tokenUrl: https://idp.example.internal/token\n      \
    clientId: kms\n      authMethod: client_secret_basic\n      caCertFile: /etc/openbao-kms/idp/ca.crt\n";
const APPROLE: &str = "auth:\n  method: approle\n  approle:\n    mountPath: auth/approle\n";
const TOKEN: &str = "auth:\n  method: token\n  token: {}\n";
const CERT_FILE: &str = "auth:\n  method: cert\n  cert:\n    mountPath: auth/cert\n    name: kms-workload-a\n    source: file\n    file: {}\n";
const CERT_PKCS11: &str = "auth:\n  method: cert\n  cert:\n    mountPath: auth/cert\n    name: kms-workload-a\n    \
    source: pkcs11\n    pkcs11:\n      modulePath: /usr/lib/softhsm/libsofthsm2.so\n      tokenLabel: kms\n      \
    keyLabel: kms-client\n      maxSessions: 2\n";

/// (golden directory, model, auth section)
const METHODS: [(&str, Model, &str); 6] = [
    ("systemd-jwt-oauth2", Model::Systemd, OAUTH2),
    ("systemd-approle", Model::Systemd, APPROLE),
    ("systemd-token", Model::Systemd, TOKEN),
    ("systemd-cert-file", Model::Systemd, CERT_FILE),
    ("systemd-cert-pkcs11", Model::Systemd, CERT_PKCS11),
    ("static-pod-jwt-oauth2", Model::StaticPod, OAUTH2),
];

fn golden_dir(rendered: &Rendered, dir: &Path, what: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        for f in &rendered.files {
            std::fs::write(dir.join(f.name), &f.contents).unwrap();
        }
    }
    let mut expected: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    let mut names: Vec<String> = rendered.files.iter().map(|f| f.name.to_owned()).collect();
    names.sort();
    assert_eq!(names, expected, "file list of {what}");
    for f in &rendered.files {
        let want = std::fs::read_to_string(dir.join(f.name)).unwrap();
        assert_eq!(f.contents, want, "{} ({what}) differs from the golden file", f.name);
    }
}

#[test]
fn golden_every_auth_method() {
    for (name, model, auth) in METHODS {
        let mut req = request(model);
        req.values = with_auth(auth);
        let rendered = render(&req).unwrap_or_else(|e| panic!("{name}: {e}"));
        golden_dir(&rendered, &testdata().join("golden").join(name), name);
        // The configuration loads back, with the method's credential paths filled.
        let cfg = parse_yaml(file(&rendered, "config.yaml")).unwrap();
        assert_eq!(cfg, rendered.config, "{name}");
    }
}

#[test]
fn each_method_fills_its_credential_paths_and_installs_them() {
    let cases: [(&str, &[(&str, &str)]); 5] = [
        (
            OAUTH2,
            &[
                (
                    "--client-secret",
                    "/var/lib/openbao-kms/credentials/oauth2-client-secret",
                ),
                ("--issuer-ca", "/etc/openbao-kms/idp/ca.crt"),
            ],
        ),
        (
            APPROLE,
            &[
                ("--role-id", "/var/lib/openbao-kms/credentials/role-id"),
                ("--secret-id", "/var/lib/openbao-kms/credentials/secret-id"),
            ],
        ),
        (TOKEN, &[("--token", "/var/lib/openbao-kms/credentials/token")]),
        (
            CERT_FILE,
            &[
                ("--client-cert", "/var/lib/openbao-kms/credentials/client.crt"),
                ("--client-key", "/var/lib/openbao-kms/credentials/client.key"),
            ],
        ),
        (
            CERT_PKCS11,
            &[
                ("--client-cert", "/var/lib/openbao-kms/credentials/client.crt"),
                ("--pin", "/var/lib/openbao-kms/credentials/pkcs11.pin"),
            ],
        ),
    ];
    for (auth, creds) in cases {
        let mut req = request(Model::Systemd);
        req.values = with_auth(auth);
        let r = render(&req).unwrap();
        let setup = file(&r, "node-setup.sh");
        let config = file(&r, "config.yaml");
        let inst: serde_json::Value = serde_json::from_str(file(&r, "installation.json")).unwrap();
        let listed: Vec<&str> = inst["hostPaths"]["credentialFiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap())
            .collect();
        for (flag, path) in creds {
            assert!(config.contains(path), "{path} in config.yaml");
            assert!(setup.contains(&format!("{flag}) [ $# -ge 2 ]")), "{flag} parsed");
            assert!(
                setup.contains(&format!("\"$R\"'{path}' root \"$RUN_GROUP\"")),
                "{path} placed"
            );
            assert!(listed.contains(path), "{path} in installation.json");
        }
        assert_eq!(listed.len(), creds.len());
    }
}

#[test]
fn openbao_setup_binds_each_method_to_the_policy_only() {
    for (auth, needles) in [
        (
            APPROLE,
            &[
                "auth enable -path=\"$AUTH_MOUNT\" approle",
                "secret_id_num_uses=0",
                "token_no_default_policy=true",
                "token_policies=\"$POLICY_NAME\"",
                "APPROLE_ROLE='openbao-kms-workload-a'",
            ][..],
        ),
        (
            TOKEN,
            &[
                "auth/token/roles/$TOKEN_ROLE",
                "allowed_policies=\"$POLICY_NAME\"",
                "disallowed_policies=default",
                "orphan=true",
                "token_period=30m",
            ][..],
        ),
        (
            CERT_FILE,
            &[
                "auth enable -path=\"$AUTH_MOUNT\" cert",
                "CERT_ROLE='kms-workload-a'",
                "certificate=@$BAO_KMS_CLIENT_CA_FILE",
                "token_no_default_policy=true",
                "token_policies=\"$POLICY_NAME\"",
            ][..],
        ),
        (
            OAUTH2,
            &[
                "auth enable -path=\"$AUTH_MOUNT\" jwt",
                "bound_subject=\"$JWT_SUBJECT\"",
            ][..],
        ),
    ] {
        let mut req = request(Model::Systemd);
        req.values = with_auth(auth);
        let r = render(&req).unwrap();
        let setup = file(&r, "openbao-setup.sh");
        for n in needles {
            assert!(setup.contains(n), "{n} missing from openbao-setup.sh for {auth}");
        }
    }
}

#[test]
fn init_refuses_what_it_cannot_render_for_a_method() {
    let mut req = request(Model::StaticPod);
    req.values = with_auth(CERT_PKCS11);
    values_error(&req, "auth.cert.source", "--model systemd");
    let mut req = request(Model::Systemd);
    req.values = with_auth(&CERT_FILE.replace("    name: kms-workload-a\n", ""));
    values_error(&req, "auth.cert.name", "required by init");
    let mut req = request(Model::Systemd);
    req.values = with_auth(&OAUTH2.replace("    expectedSubject: \"system:node:cp\"\n", ""));
    values_error(&req, "auth.jwt.expectedSubject", "required by init");
    // Credential files follow the same host-path rules as the JWT file.
    let mut req = request(Model::Systemd);
    req.values = with_auth("auth:\n  method: token\n  token:\n    tokenFile: /run/openbao-kms/token\n");
    values_error(&req, "auth.token.tokenFile", "overlaps the socket directory");
    let mut req = request(Model::Systemd);
    req.values =
        with_auth("auth:\n  method: approle\n  approle:\n    mountPath: auth/approle\n    roleIdFile: /etc/role-id\n");
    values_error(&req, "auth.approle.roleIdFile", "dedicated directory");
}
