//! `benchmark`: latency of Encrypt and Decrypt with non-secret random data,
//! either straight against Transit with the provider's configuration,
//! identity and AAD (`--config`), or through a running provider's socket the
//! way kube-apiserver calls it (`--socket`), or both side by side with the
//! restart burst, start to ready and memory ([`compare`], both flags).
//! Every decrypted value is compared with what was encrypted; any error
//! fails the run (exit 4). Nothing of the deployment is written, nothing
//! secret is printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bao_kms_core::aad;
use bao_kms_core::config::Config;
use bao_kms_core::snapshot::KeySnapshot;
use bao_kms_proto::v2::key_management_service_client::KeyManagementServiceClient;
use bao_kms_proto::v2::{DecryptRequest, EncryptRequest};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::openbao::{ClientSettings, OpenBao};
use crate::state::{RegistryPaths, read_unlocked};

pub mod compare;
mod direct;
mod startup;

/// Size of each sample: a KMS v2 DEK seed is 32 bytes.
pub(crate) const SAMPLE_BYTES: usize = 32;

/// Latency percentiles of one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Nearest-rank percentiles; `None` without samples.
pub fn latency(mut samples: Vec<Duration>) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = |p: usize| samples[(samples.len() * p).div_ceil(100).max(1) - 1];
    Some(Latency {
        count: samples.len(),
        p50: rank(50),
        p90: rank(90),
        p99: rank(99),
        max: samples[samples.len() - 1],
    })
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) fn latency_json(l: Option<Latency>) -> Value {
    match l {
        None => Value::Null,
        Some(l) => json!({
            "count": l.count,
            "p50Ms": ms(l.p50),
            "p90Ms": ms(l.p90),
            "p99Ms": ms(l.p99),
            "maxMs": ms(l.max),
        }),
    }
}

/// Timings of one round trip, or why it failed.
type RoundTrip = Result<(Duration, Duration), String>;

/// The report and whether every round trip succeeded.
pub type Outcome = crate::report::FieldReport;

fn outcome(mode: &str, iterations: usize, concurrency: usize, elapsed: Duration, results: Vec<RoundTrip>) -> Outcome {
    let mut encrypts = Vec::new();
    let mut decrypts = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((e, d)) => {
                encrypts.push(e);
                decrypts.push(d);
            }
            Err(e) => errors.push(e),
        }
    }
    let ok = errors.is_empty();
    let mut report = json!({
        "name": "benchmark",
        "mode": mode,
        "iterations": iterations,
        "concurrency": concurrency,
        "sampleBytes": SAMPLE_BYTES,
        "durationSeconds": (elapsed.as_secs_f64() * 1e3).round() / 1e3,
        "roundTripsPerSecond": ((encrypts.len() as f64 / elapsed.as_secs_f64().max(1e-9)) * 10.0).round() / 10.0,
        "encrypt": latency_json(latency(encrypts)),
        "decrypt": latency_json(latency(decrypts)),
        "errors": errors.len(),
    });
    if let Some(first) = errors.first() {
        report["firstError"] = json!(first);
    }
    Outcome::finish(report, ok)
}

/// Runs `iterations` round trips spread over `concurrency` tasks.
async fn drive<F, Fut>(iterations: usize, concurrency: usize, round_trip: F) -> (Duration, Vec<RoundTrip>)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = RoundTrip> + Send,
{
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let share = iterations / concurrency + usize::from(worker < iterations % concurrency);
        let round_trip = round_trip.clone();
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(share);
            for _ in 0..share {
                out.push(round_trip().await);
            }
            out
        });
    }
    let mut results = Vec::with_capacity(iterations);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(part) => results.extend(part),
            Err(e) => results.push(Err(format!("benchmark task failed: {e}"))),
        }
    }
    (started.elapsed(), results)
}

pub(crate) fn sample() -> zeroize::Zeroizing<Vec<u8>> {
    let mut seed = zeroize::Zeroizing::new(vec![0u8; SAMPLE_BYTES]);
    rand::rng().fill_bytes(&mut seed);
    seed
}

/// What a Transit call of the provider needs: a client, a token, the
/// registry's active version and its canonical AAD.
pub(crate) struct TransitTarget {
    pub bao: OpenBao,
    pub token: secrecy::SecretString,
    pub aad: Vec<u8>,
    pub version: u64,
}

/// Reads the active version from the registry and logs in.
pub(crate) async fn transit_target(cfg: &Config) -> Result<TransitTarget, String> {
    let paths = RegistryPaths::new(&cfg.state.path);
    let active: KeySnapshot = match read_unlocked(&paths)? {
        (Some(state), _) => state
            .active()
            .snapshot()
            .ok_or("the registry's active record is malformed")?,
        (None, _) => {
            return Err(format!(
                "no registry state at {}: the active Transit version is unknown until the provider has started once",
                cfg.state.path.display()
            ));
        }
    };
    let metrics = Arc::new(Metrics::for_auth(&cfg.auth.method));
    let bao = OpenBao::new(ClientSettings::from_config(cfg), metrics.clone()).map_err(|e| e.to_string())?;
    let auth = Auth::new(&cfg.auth, bao.clone(), metrics).map_err(|e| e.to_string())?;
    let token = auth.token().await.map_err(|e| e.to_string())?;
    Ok(TransitTarget {
        bao,
        token,
        aad: aad::canonical(&cfg.identity_scope(), &active),
        version: active.version,
    })
}

/// Transit encrypt/decrypt with the registry's active version and the
/// canonical AAD, as the provider calls it.
pub async fn transit(cfg: &Config, iterations: usize, concurrency: usize) -> Outcome {
    let target = match transit_target(cfg).await {
        Ok(t) => t,
        Err(msg) => {
            return Outcome::finish(
                json!({"name": "benchmark", "mode": "transit", "firstError": msg}),
                false,
            );
        }
    };
    let TransitTarget {
        bao,
        token,
        aad,
        version,
    } = target;
    let (aad, token) = (Arc::new(aad), Arc::new(token));
    let (elapsed, results) = drive(iterations, concurrency, move || {
        let (bao, aad, token) = (bao.clone(), aad.clone(), token.clone());
        async move {
            let seed = sample();
            let t = token.expose_secret();
            let started = Instant::now();
            let ciphertext = bao.encrypt(t, &seed, &aad, version).await.map_err(|e| e.to_string())?;
            let encrypted = started.elapsed();
            let started = Instant::now();
            let plaintext = bao.decrypt(t, &ciphertext, &aad).await.map_err(|e| e.to_string())?;
            let decrypted = started.elapsed();
            if *plaintext != *seed {
                return Err("Transit returned different plaintext".into());
            }
            Ok((encrypted, decrypted))
        }
    })
    .await;
    outcome("transit", iterations, concurrency, elapsed, results)
}

/// KMS v2 Encrypt/Decrypt through a running provider's socket.
pub async fn socket(path: &std::path::Path, timeout: Duration, iterations: usize, concurrency: usize) -> Outcome {
    let channel = match crate::probe_cmd::connect(path, timeout).await {
        Ok(c) => c,
        Err(e) => {
            return Outcome::finish(json!({"name": "benchmark", "mode": "socket", "firstError": e}), false);
        }
    };
    let client = KeyManagementServiceClient::new(channel);
    let (elapsed, results) = drive(iterations, concurrency, move || {
        let mut client = client.clone();
        async move {
            let seed = sample();
            let uid = format!("benchmark-{:016x}", rand::rng().next_u64());
            let started = Instant::now();
            let encrypted = client
                .encrypt(EncryptRequest {
                    plaintext: seed.to_vec(),
                    uid: uid.clone(),
                })
                .await
                .map_err(|e| format!("Encrypt: {}", e.message()))?
                .into_inner();
            let encrypt = started.elapsed();
            let started = Instant::now();
            let decrypted = client
                .decrypt(DecryptRequest {
                    ciphertext: encrypted.ciphertext,
                    uid,
                    key_id: encrypted.key_id,
                    annotations: encrypted.annotations,
                })
                .await
                .map_err(|e| format!("Decrypt: {}", e.message()))?
                .into_inner();
            let decrypt = started.elapsed();
            if decrypted.plaintext != *seed {
                return Err("Decrypt returned different plaintext".into());
            }
            Ok((encrypt, decrypt))
        }
    })
    .await;
    outcome("socket", iterations, concurrency, elapsed, results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(latency(Vec::new()), None);
        let one = latency(ms(&[7])).unwrap_or_else(|| unreachable!());
        assert_eq!((one.p50, one.p99, one.max), (ms(&[7])[0], ms(&[7])[0], ms(&[7])[0]));
        // 1..=100 ms in reverse order: rank p is p ms.
        let l = latency((1..=100).rev().map(Duration::from_millis).collect()).unwrap_or_else(|| unreachable!());
        assert_eq!(l.count, 100);
        assert_eq!(l.p50, Duration::from_millis(50));
        assert_eq!(l.p90, Duration::from_millis(90));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(l.max, Duration::from_millis(100));
        // Ten samples: p99 is the largest, p50 the fifth.
        let l = latency(ms(&[10, 1, 9, 2, 8, 3, 7, 4, 6, 5])).unwrap_or_else(|| unreachable!());
        assert_eq!(l.p50, Duration::from_millis(5));
        assert_eq!(l.p90, Duration::from_millis(9));
        assert_eq!(l.p99, Duration::from_millis(10));
    }

    #[test]
    fn errors_fail_the_run_and_the_first_is_reported() {
        let ok = outcome(
            "socket",
            2,
            1,
            Duration::from_secs(1),
            vec![Ok((Duration::from_millis(1), Duration::from_millis(2))); 2],
        );
        assert!(ok.ok);
        assert_eq!(ok.report["roundTripsPerSecond"], 2.0);
        assert_eq!(ok.report["decrypt"]["p50Ms"], 2.0);
        let bad = outcome(
            "socket",
            2,
            1,
            Duration::from_secs(1),
            vec![
                Ok((Duration::from_millis(1), Duration::from_millis(2))),
                Err("Encrypt: no".into()),
            ],
        );
        assert!(!bad.ok);
        assert_eq!(bad.report["errors"], 1);
        assert_eq!(bad.report["firstError"], "Encrypt: no");
        assert_eq!(bad.report["status"], "fail");
    }
}
