//! What `bao-kms-provider init` renders, used as operators use it: the
//! OpenBao operator runs `openbao-setup.sh` against a real OpenBao with the
//! JWT issuer's public key, and the node gets a JWT signed by that issuer
//! for the generated role.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::KeyPair;

use crate::OpenBao;
use crate::openbao::bao_binary;

/// Environment variables that would change what `init`, `bao` or the
/// provider do; cleared for every child.
pub const CLEARED_ENV: &[&str] = &[
    "BAO_KMS_PROVIDER_CONFIG",
    "BAO_KMS_PROVIDER_CONFIG_PATH",
    "BAO_KMS_PROVIDER_LOG_LEVEL",
    "BAO_KMS_PROVIDER_LOGGING_LEVEL",
    "BAO_KMS_PROVIDER_SERVER_METRICS_ADDRESS",
    "BAO_KMS_PROVIDER_SERVER_HEALTH_ADDRESS",
    "BAO_ADDR",
    "BAO_CACERT",
    "BAO_TOKEN",
    "BAO_NAMESPACE",
    "VAULT_ADDR",
    "VAULT_TOKEN",
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An ES256 JWT from `key` for (issuer, audience, subject), valid for an hour.
pub fn mint_jwt(key: &KeyPair, issuer: &str, audience: &str, subject: &str) -> anyhow::Result<String> {
    let claims =
        serde_json::json!({"iss": issuer, "aud": audience, "sub": subject, "iat": now() - 5, "exp": now() + 3600});
    let key = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())?;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )?)
}

/// Runs a rendered `openbao-setup.sh` as the OpenBao operator, with the
/// issuer's public keys in `pubkeys`.
pub fn run_openbao_setup(script: &Path, bao: &OpenBao, pubkeys: &Path) -> anyhow::Result<Output> {
    let mut cmd = Command::new(script);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    Ok(cmd
        .env("BAO_ADDR", bao.address())
        .env("BAO_CACERT", bao.ca_file())
        .env("BAO_TOKEN", bao.root_token())
        .env("BAO_BIN", bao_binary())
        .env("BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE", pubkeys)
        .output()?)
}
