//! Plays kube-apiserver's KMS v2 side for the disaster-recovery drill
//! (scripts/demo-dr.sh): `seal` does what kube-apiserver does when it
//! writes an object (Status, then Encrypt of a fresh random 32-byte DEK
//! seed) and prints the etcd value it would store,
//! `k8s:enc:kms:v2:<provider>:` + protobuf `EncryptedObject`, base64
//! encoded; `open` reads such a value and sends the Decrypt kube-apiserver
//! sends on a DEK cache miss (ciphertext, key_id, annotations).
//!
//! What is not kube-apiserver: the object's data is not encrypted with the
//! DEK (`encryptedData` stays empty); only the KMS part of the value is
//! real. The seed is kept in a private file to check the Decrypt answer and
//! is never printed.
//!
//! Usage:
//!   kms-envelope seal <socket> <provider name> <seed file>   (value on stdout)
//!   kms-envelope open <socket> <seed file>                   (value on stdin)

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use bao_kms_proto::v2::{DecryptRequest, EncryptedDekSourceType, EncryptedObject};
use bao_kms_system_tests::KmsClient;
use bao_kms_system_tests::kms_client::new_uid;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;

async fn seal(socket: &Path, provider: &str, seed_file: &Path) -> anyhow::Result<()> {
    let kms = KmsClient::connect(socket).await?;
    let sealed = kms.prime().await?;
    let object = EncryptedObject {
        encrypted_data: Vec::new(),
        key_id: sealed.key_id.clone(),
        encrypted_dek_source: sealed.ciphertext.clone(),
        annotations: sealed.annotations.clone(),
        encrypted_dek_source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32,
    };
    let mut value = format!("k8s:enc:kms:v2:{provider}:").into_bytes();
    value.extend(object.encode_to_vec());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(seed_file)
        .with_context(|| format!("create {}", seed_file.display()))?;
    std::io::Write::write_all(&mut f, &sealed.seed)?;
    println!("{}", STANDARD.encode(value));
    Ok(())
}

async fn open(socket: &Path, seed_file: &Path) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let value = STANDARD.decode(text.trim()).context("the value is not base64")?;
    let rest = value
        .strip_prefix(b"k8s:enc:kms:v2:")
        .context("not a KMS v2 value (no k8s:enc:kms:v2: prefix)")?;
    let colon = rest.iter().position(|b| *b == b':').context("no provider name")?;
    let object = EncryptedObject::decode(&rest[colon + 1..]).context("EncryptedObject")?;
    let kms = KmsClient::connect(socket).await?;
    let answer = kms
        .decrypt_raw(DecryptRequest {
            ciphertext: object.encrypted_dek_source,
            uid: new_uid(),
            key_id: object.key_id,
            annotations: object.annotations,
        })
        .await
        .map_err(|s| anyhow::anyhow!("Decrypt failed: {} {}", s.code(), s.message()))?;
    let seed = std::fs::read(seed_file)?;
    if answer.plaintext != seed {
        bail!("Decrypt answered, but not with the sealed DEK seed");
    }
    println!(
        "Decrypt ok: the {}-byte DEK seed sealed by provider {} is back",
        seed.len(),
        String::from_utf8_lossy(&rest[..colon])
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [_, "seal", socket, provider, seed] => seal(Path::new(socket), provider, Path::new(seed)).await,
        [_, "open", socket, seed] => open(Path::new(socket), Path::new(seed)).await,
        _ => {
            eprintln!("usage: kms-envelope seal <socket> <provider> <seed file> | open <socket> <seed file>");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("kms-envelope: {e:#}");
        std::process::exit(1);
    }
}
