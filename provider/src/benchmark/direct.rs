//! The direct-Transit side of the comparison: the same Transit calls the
//! provider makes (explicit `key_version`, canonical AAD), from the leanest
//! client this crate can build: one pooled HTTPS client with a fixed HTTP
//! version, request bodies written by hand, no metrics, no token handling
//! beyond one token read at the start. What this side reaches is the limit
//! the provider is measured against.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use zeroize::Zeroizing;

use bao_kms_core::transit_wire::transit_path;

use crate::openbao::{ClientSettings, HttpVersion, https_client};

/// Transit `batch_input` size of the batched limit.
pub const BATCH_SIZE: usize = 32;

/// A Transit client for one key, version and AAD.
pub struct Direct {
    http: reqwest::Client,
    pub version: HttpVersion,
    encrypt_url: String,
    decrypt_url: String,
    namespace: String,
    token: SecretString,
    aad_b64: String,
    key_version: u64,
}

impl Direct {
    pub fn new(
        settings: &ClientSettings,
        version: HttpVersion,
        token: SecretString,
        aad: &[u8],
        key_version: u64,
    ) -> Result<Self, String> {
        let http = https_client(settings, version).map_err(|e| e.to_string())?;
        let url = |action: &str| {
            format!(
                "{}/v1/{}",
                settings.address.trim_end_matches('/'),
                transit_path(&settings.mount_path, action, &settings.key_name)
            )
        };
        Ok(Self {
            http,
            version,
            encrypt_url: url("encrypt"),
            decrypt_url: url("decrypt"),
            namespace: settings.namespace.clone(),
            token,
            aad_b64: STANDARD.encode(aad),
            key_version,
        })
    }

    async fn post(&self, url: &str, body: String) -> Result<Value, String> {
        let mut req = self
            .http
            .post(url)
            .header("X-Vault-Token", self.token.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if !self.namespace.is_empty() {
            req = req.header("X-Vault-Namespace", &self.namespace);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| format!("Transit request: {e}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| format!("Transit answer: {e}"))?;
        if !status.is_success() {
            return Err(format!("Transit answered HTTP {}", status.as_u16()));
        }
        serde_json::from_slice(&bytes).map_err(|_| "Transit answer is not JSON".to_owned())
    }

    /// One `encrypt` call: the Transit ciphertext.
    pub async fn encrypt(&self, plaintext: &[u8]) -> Result<String, String> {
        let body = format!(
            r#"{{"plaintext":"{}","associated_data":"{}","key_version":{}}}"#,
            STANDARD.encode(plaintext),
            self.aad_b64,
            self.key_version
        );
        let v = self.post(&self.encrypt_url, body).await?;
        v.pointer("/data/ciphertext")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "data.ciphertext missing".to_owned())
    }

    /// One `decrypt` call: the plaintext.
    pub async fn decrypt(&self, ciphertext: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        let body = format!(
            r#"{{"ciphertext":"{ciphertext}","associated_data":"{}"}}"#,
            self.aad_b64
        );
        let v = self.post(&self.decrypt_url, body).await?;
        plaintext(&v["data"])
    }

    /// One `encrypt` call with `batch_input`: a ciphertext per plaintext.
    pub async fn encrypt_batch(&self, plaintexts: &[Zeroizing<Vec<u8>>]) -> Result<Vec<String>, String> {
        let items: Vec<Value> = plaintexts
            .iter()
            .map(|p| serde_json::json!({"plaintext": STANDARD.encode(p), "associated_data": self.aad_b64}))
            .collect();
        let body = serde_json::json!({"batch_input": items, "key_version": self.key_version}).to_string();
        let v = self.post(&self.encrypt_url, body).await?;
        batch_results(&v, plaintexts.len())?
            .iter()
            .map(|item| {
                item.get("ciphertext")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("batch item without ciphertext: {}", item_error(item)))
            })
            .collect()
    }

    /// One `decrypt` call with `batch_input`: a plaintext per ciphertext.
    pub async fn decrypt_batch(&self, ciphertexts: &[&str]) -> Result<Vec<Zeroizing<Vec<u8>>>, String> {
        let items: Vec<Value> = ciphertexts
            .iter()
            .map(|c| serde_json::json!({"ciphertext": c, "associated_data": self.aad_b64}))
            .collect();
        let body = serde_json::json!({ "batch_input": items }).to_string();
        let v = self.post(&self.decrypt_url, body).await?;
        batch_results(&v, ciphertexts.len())?.iter().map(plaintext).collect()
    }
}

fn plaintext(data: &Value) -> Result<Zeroizing<Vec<u8>>, String> {
    let b64 = data
        .get("plaintext")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no plaintext: {}", item_error(data)))?;
    STANDARD
        .decode(b64)
        .map(Zeroizing::new)
        .map_err(|_| "plaintext is not base64".to_owned())
}

fn item_error(item: &Value) -> String {
    item.get("error")
        .and_then(Value::as_str)
        .unwrap_or("no error text")
        .to_owned()
}

fn batch_results(v: &Value, expected: usize) -> Result<&Vec<Value>, String> {
    let items = v
        .pointer("/data/batch_results")
        .and_then(Value::as_array)
        .ok_or_else(|| "data.batch_results missing".to_owned())?;
    if items.len() != expected {
        return Err(format!("{} batch results for {expected} items", items.len()));
    }
    Ok(items)
}
