//! `benchmark --config C --socket S`: this provider against direct Transit
//! on the same OpenBao, in one run.
//!
//! Per round, for each number of calls in flight: Status through the socket
//! (it has no Transit counterpart); Encrypt of distinct 32-byte seeds
//! straight to Transit over HTTP/1.1 and HTTP/2 and through the socket;
//! Decrypt of the ciphertexts each side just produced (all distinct, so no
//! call is shared and each pays its own Transit call). Then the restart
//! burst: fresh connections send N distinct and M identical Decrypts at
//! once, as several kube-apiservers starting together do, next to the
//! batched limit (the same distinct ciphertexts decrypted straight with
//! Transit `batch_input`). Rounds interleave both sides so that load from
//! elsewhere hits both alike; throughput ratios are the median of the
//! per-round ratios against the faster direct transport. Then start to
//! ready (a scratch copy of the deployment, cold and warm registry) and the
//! provider's RSS idle and after the burst.
//!
//! Every request carries a gRPC deadline like kube-apiserver's (`kms
//! timeout`, 3 s by default). Every plaintext is compared with its seed.
//! Errors are counted and fail the run; timings are reported, never judged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bao_kms_core::config::Config;
use bao_kms_proto::v2::key_management_service_client::KeyManagementServiceClient;
use bao_kms_proto::v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use rand::RngCore;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::direct::{BATCH_SIZE, Direct};
use super::startup::{Scratch, rss_kib, socket_pid};
use super::{Outcome, SAMPLE_BYTES, latency, latency_json, ms, sample, transit_target};
use crate::openbao::{ClientSettings, HttpVersion};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Calls per method, side and number in flight, per round.
    pub iterations: usize,
    pub in_flight: Vec<usize>,
    pub rounds: usize,
    /// Connections of the restart burst (one per kube-apiserver) ...
    pub burst_connections: usize,
    /// ... the distinct Decrypts each sends ...
    pub burst_distinct: usize,
    /// ... and identical Decrypts (one ciphertext) spread over them.
    pub burst_identical: usize,
    /// Starts of each kind (cold, warm); 0 skips start to ready.
    pub startup_runs: usize,
    /// The gRPC deadline of every KMS request.
    pub kms_timeout: Duration,
    /// Connect timeout of the socket.
    pub connect_timeout: Duration,
}

/// Transit `batch_input` requests in flight for the batched limit.
const BATCH_IN_FLIGHT: usize = 16;

/// One timed phase: calls `0..n`, `in_flight` at a time.
struct Phase<O> {
    elapsed: Duration,
    latencies: Vec<Duration>,
    outputs: Vec<Option<O>>,
    errors: Vec<String>,
}

async fn run_calls<O, F, Fut>(n: usize, in_flight: usize, call: F) -> Phase<O>
where
    O: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<O, String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..in_flight.clamp(1, n.max(1)) {
        let (next, call) = (next.clone(), call.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break done;
                }
                let t = Instant::now();
                let r = call(i).await;
                done.push((i, t.elapsed(), r));
            }
        });
    }
    let mut phase = Phase {
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(n),
        outputs: (0..n).map(|_| None).collect(),
        errors: Vec::new(),
    };
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(done) => {
                for (i, t, r) in done {
                    match r {
                        Ok(o) => {
                            phase.latencies.push(t);
                            phase.outputs[i] = Some(o);
                        }
                        Err(e) => phase.errors.push(e),
                    }
                }
            }
            Err(e) => phase.errors.push(format!("benchmark task failed: {e}")),
        }
    }
    phase.elapsed = started.elapsed();
    phase
}

/// One side of one row over all rounds.
#[derive(Default)]
struct Series {
    latencies: Vec<Duration>,
    per_second: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

impl Series {
    fn add<O>(&mut self, phase: &Phase<O>) -> f64 {
        let rate = phase.latencies.len() as f64 / phase.elapsed.as_secs_f64().max(1e-9);
        self.per_second.push(rate);
        self.latencies.extend_from_slice(&phase.latencies);
        self.errors += phase.errors.len();
        if self.first_error.is_none() {
            self.first_error = phase.errors.first().cloned();
        }
        rate
    }

    fn to_json(&self) -> Value {
        let mut v = latency_json(latency(self.latencies.clone()));
        if let Value::Object(m) = &mut v {
            m.insert("perSecond".into(), json!(round1(median(&self.per_second))));
            m.insert(
                "perSecondRounds".into(),
                json!(self.per_second.iter().map(|r| round1(*r)).collect::<Vec<_>>()),
            );
            m.insert("errors".into(), json!(self.errors));
            if let Some(e) = &self.first_error {
                m.insert("firstError".into(), json!(e));
            }
        }
        v
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Median; 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// A row of the table: one method at one number in flight.
struct Row {
    method: &'static str,
    in_flight: usize,
    provider: Series,
    /// HTTP/1.1 and HTTP/2; empty for Status.
    direct: Vec<(HttpVersion, Series)>,
    /// Provider throughput over the faster direct transport, per round.
    ratios: Vec<f64>,
}

impl Row {
    fn new(method: &'static str, in_flight: usize, direct: bool) -> Self {
        let direct = if direct {
            vec![
                (HttpVersion::Http1, Series::default()),
                (HttpVersion::Http2, Series::default()),
            ]
        } else {
            Vec::new()
        };
        Self {
            method,
            in_flight,
            provider: Series::default(),
            direct,
            ratios: Vec::new(),
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "method": self.method,
            "inFlight": self.in_flight,
            "provider": self.provider.to_json(),
        });
        for (version, series) in &self.direct {
            let key = match version {
                HttpVersion::Http1 => "directHttp1",
                HttpVersion::Http2 => "directHttp2",
            };
            v[key] = series.to_json();
        }
        v["ratio"] = if self.ratios.is_empty() {
            Value::Null
        } else {
            json!(round3(median(&self.ratios)))
        };
        v
    }

    fn errors(&self) -> (usize, Option<String>) {
        let all = std::iter::once(&self.provider).chain(self.direct.iter().map(|(_, s)| s));
        let mut count = 0;
        let mut first = None;
        for s in all {
            count += s.errors;
            if first.is_none() {
                first = s
                    .first_error
                    .clone()
                    .map(|e| format!("{} x{}: {e}", self.method, self.in_flight));
            }
        }
        (count, first)
    }
}

/// A KMS request with kube-apiserver's deadline.
fn kms<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}

fn grpc_error(call: &str, s: &tonic::Status) -> String {
    format!("{call}: {} ({:?})", s.message(), s.code())
}

fn uid() -> String {
    format!("benchmark-{:016x}", rand::rng().next_u64())
}

type Seeds = Arc<Vec<Zeroizing<Vec<u8>>>>;
/// Seeds with their direct Transit ciphertexts.
type DirectSealed = Arc<Vec<(Zeroizing<Vec<u8>>, String)>>;

fn seeds(n: usize) -> Seeds {
    Arc::new((0..n).map(|_| sample()).collect())
}

/// A provider ciphertext with what Decrypt needs, and its seed.
struct Sealed {
    seed: Zeroizing<Vec<u8>>,
    uid: String,
    response: EncryptResponse,
}

fn decrypt_request(s: &Sealed) -> DecryptRequest {
    DecryptRequest {
        ciphertext: s.response.ciphertext.clone(),
        uid: s.uid.clone(),
        key_id: s.response.key_id.clone(),
        annotations: s.response.annotations.clone(),
    }
}

async fn provider_status(client: &KeyManagementServiceClient<Channel>, n: usize, c: usize, t: Duration) -> Phase<()> {
    let client = client.clone();
    run_calls(n, c, move |_| {
        let mut client = client.clone();
        async move {
            let s = client
                .status(kms(StatusRequest {}, t))
                .await
                .map_err(|e| grpc_error("Status", &e))?
                .into_inner();
            if s.healthz != "ok" {
                return Err(format!("Status: healthz {}", s.healthz));
            }
            Ok(())
        }
    })
    .await
}

async fn provider_encrypt(
    client: &KeyManagementServiceClient<Channel>,
    seeds: &Seeds,
    c: usize,
    t: Duration,
) -> Phase<Sealed> {
    let (client, seeds) = (client.clone(), seeds.clone());
    run_calls(seeds.len(), c, move |i| {
        let (mut client, seeds) = (client.clone(), seeds.clone());
        async move {
            let seed = seeds[i].clone();
            let uid = uid();
            let response = client
                .encrypt(kms(
                    EncryptRequest {
                        plaintext: seed.to_vec(),
                        uid: uid.clone(),
                    },
                    t,
                ))
                .await
                .map_err(|e| grpc_error("Encrypt", &e))?
                .into_inner();
            Ok(Sealed { seed, uid, response })
        }
    })
    .await
}

async fn provider_decrypt(
    client: &KeyManagementServiceClient<Channel>,
    sealed: &Arc<Vec<Sealed>>,
    c: usize,
    t: Duration,
) -> Phase<()> {
    let (client, sealed) = (client.clone(), sealed.clone());
    run_calls(sealed.len(), c, move |i| {
        let (mut client, sealed) = (client.clone(), sealed.clone());
        async move {
            let s = &sealed[i];
            let plain = client
                .decrypt(kms(decrypt_request(s), t))
                .await
                .map_err(|e| grpc_error("Decrypt", &e))?
                .into_inner()
                .plaintext;
            if plain != *s.seed {
                return Err("Decrypt returned different plaintext".into());
            }
            Ok(())
        }
    })
    .await
}

async fn direct_encrypt(direct: &Arc<Direct>, seeds: &Seeds, c: usize) -> Phase<String> {
    let (direct, seeds) = (direct.clone(), seeds.clone());
    run_calls(seeds.len(), c, move |i| {
        let (direct, seeds) = (direct.clone(), seeds.clone());
        async move { direct.encrypt(&seeds[i]).await }
    })
    .await
}

async fn direct_decrypt(direct: &Arc<Direct>, sealed: &DirectSealed, c: usize) -> Phase<()> {
    let (direct, sealed) = (direct.clone(), sealed.clone());
    run_calls(sealed.len(), c, move |i| {
        let (direct, sealed) = (direct.clone(), sealed.clone());
        async move {
            let (seed, ciphertext) = &sealed[i];
            let plain = direct.decrypt(ciphertext).await?;
            if *plain != **seed {
                return Err("Transit returned different plaintext".into());
            }
            Ok(())
        }
    })
    .await
}

/// Seeds paired with what they became; failed calls are left out.
fn pair<O>(seeds: &Seeds, phase: Phase<O>) -> Vec<(Zeroizing<Vec<u8>>, O)> {
    seeds
        .iter()
        .cloned()
        .zip(phase.outputs)
        .filter_map(|(s, o)| o.map(|o| (s, o)))
        .collect()
}

/// The burst's inputs: distinct ciphertexts from both sides and one the
/// identical Decrypts share.
struct BurstPool {
    provider: Arc<Vec<Sealed>>,
    /// One ciphertext, the target of every identical Decrypt.
    identical: Arc<Vec<Sealed>>,
    direct: DirectSealed,
}

async fn burst_pool(
    client: &KeyManagementServiceClient<Channel>,
    direct: &Direct,
    n: usize,
    t: Duration,
) -> Result<BurstPool, String> {
    let sealed = provider_encrypt(client, &seeds(n + 1), 16, t).await;
    if let Some(e) = sealed.errors.first() {
        return Err(format!("preparing the burst: {e}"));
    }
    let mut provider: Vec<Sealed> = sealed.outputs.into_iter().flatten().collect();
    let identical = Arc::new(vec![provider.pop().ok_or("preparing the burst: no ciphertext")?]);
    let plain = seeds(n);
    let mut cts = Vec::with_capacity(n);
    for chunk in plain.chunks(BATCH_SIZE) {
        cts.extend(
            direct
                .encrypt_batch(chunk)
                .await
                .map_err(|e| format!("preparing the burst: {e}"))?,
        );
    }
    Ok(BurstPool {
        provider: Arc::new(provider),
        identical,
        direct: Arc::new(plain.iter().cloned().zip(cts).collect()),
    })
}

/// The batched limit: every distinct ciphertext decrypted straight with
/// `batch_input` of [`BATCH_SIZE`], [`BATCH_IN_FLIGHT`] requests at a time.
async fn batched_limit(direct: &Arc<Direct>, pool: &DirectSealed) -> Phase<()> {
    let batches = pool.len().div_ceil(BATCH_SIZE);
    let (direct, pool) = (direct.clone(), pool.clone());
    run_calls(batches, BATCH_IN_FLIGHT, move |b| {
        let (direct, pool) = (direct.clone(), pool.clone());
        async move {
            let items = &pool[b * BATCH_SIZE..((b + 1) * BATCH_SIZE).min(pool.len())];
            let cts: Vec<&str> = items.iter().map(|(_, c)| c.as_str()).collect();
            let plains = direct.decrypt_batch(&cts).await?;
            if plains.iter().zip(items).any(|(p, (s, _))| **p != **s) {
                return Err("Transit batch returned different plaintext".into());
            }
            Ok(())
        }
    })
    .await
}

/// The batched limit over the rounds, for one HTTP version.
struct Batched {
    version: HttpVersion,
    totals_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

impl Batched {
    fn new(version: HttpVersion) -> Self {
        Self {
            version,
            totals_ms: Vec::new(),
            errors: 0,
            first_error: None,
        }
    }

    fn add(&mut self, phase: &Phase<()>) {
        self.totals_ms.push(phase.elapsed.as_secs_f64() * 1e3);
        self.errors += phase.errors.len();
        if self.first_error.is_none() {
            self.first_error = phase.errors.first().cloned();
        }
    }
}

/// What one burst through the socket produced.
#[derive(Default)]
struct BurstRun {
    total: Duration,
    distinct: Vec<Duration>,
    identical: Vec<Duration>,
    errors: BTreeMap<String, usize>,
    first_error: Option<String>,
}

/// Opens the connections, then sends every Decrypt at once.
async fn burst(socket: &Path, plan: &Plan, pool: &BurstPool) -> Result<BurstRun, String> {
    let mut clients = Vec::with_capacity(plan.burst_connections);
    for _ in 0..plan.burst_connections {
        let channel = crate::probe_cmd::connect(socket, plan.connect_timeout).await?;
        clients.push(KeyManagementServiceClient::new(channel));
    }
    let (go, ready) = tokio::sync::watch::channel(None::<Instant>);
    let mut tasks = JoinSet::new();
    let t = plan.kms_timeout;
    let mut spawn = |client: &KeyManagementServiceClient<Channel>, sealed: Arc<Vec<Sealed>>, i: usize, shared: bool| {
        let (mut client, mut ready) = (client.clone(), ready.clone());
        tasks.spawn(async move {
            let start = match ready.wait_for(Option::is_some).await {
                Ok(at) => at.unwrap_or_else(Instant::now),
                Err(_) => Instant::now(),
            };
            let s = &sealed[i];
            let r = client.decrypt(kms(decrypt_request(s), t)).await;
            let done = start.elapsed();
            let r = match r {
                Ok(resp) if resp.get_ref().plaintext == *s.seed => Ok(()),
                Ok(_) => Err((
                    "WrongPlaintext".to_owned(),
                    "Decrypt returned different plaintext".to_owned(),
                )),
                Err(e) => Err((format!("{:?}", e.code()), grpc_error("Decrypt", &e))),
            };
            (shared, done, r)
        });
    };
    let per_connection = plan.burst_distinct;
    for (c, client) in clients.iter().enumerate() {
        for j in 0..per_connection {
            spawn(client, pool.provider.clone(), c * per_connection + j, false);
        }
    }
    for k in 0..plan.burst_identical {
        spawn(&clients[k % clients.len()], pool.identical.clone(), 0, true);
    }
    let _ = go.send(Some(Instant::now()));
    let mut run = BurstRun::default();
    while let Some(joined) = tasks.join_next().await {
        let (shared, done, r) = joined.map_err(|e| format!("burst task failed: {e}"))?;
        run.total = run.total.max(done);
        match r {
            Ok(()) if shared => run.identical.push(done),
            Ok(()) => run.distinct.push(done),
            Err((label, message)) => {
                *run.errors.entry(label).or_default() += 1;
                run.first_error.get_or_insert(message);
            }
        }
    }
    Ok(run)
}

fn load_average() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    json!(v)
}

fn mib(kib: Option<u64>) -> Value {
    kib.map_or(Value::Null, |k| json!(round1(k as f64 / 1024.0)))
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.max(b).or(a).or(b)
}

/// Runs the whole comparison.
pub async fn compare(cfg: &Config, config_path: &Path, socket: &Path, plan: &Plan) -> Outcome {
    let fail = |msg: String| {
        Outcome::finish(
            json!({"name": "benchmark", "mode": "compare", "firstError": msg}),
            false,
        )
    };
    let load_before = load_average();
    let target = match transit_target(cfg).await {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let settings = ClientSettings::from_config(cfg);
    let mut directs = Vec::new();
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        match Direct::new(&settings, version, target.token.clone(), &target.aad, target.version) {
            Ok(d) => directs.push(Arc::new(d)),
            Err(e) => return fail(e),
        }
    }
    let client = match crate::probe_cmd::connect(socket, plan.connect_timeout).await {
        Ok(c) => KeyManagementServiceClient::new(c),
        Err(e) => return fail(e),
    };
    let pid = socket_pid(socket).await;
    let rss_idle = pid.and_then(rss_kib);
    let t = plan.kms_timeout;
    let n = plan.iterations;

    let mut rows: Vec<Row> = Vec::new();
    for &c in &plan.in_flight {
        rows.push(Row::new("status", c, false));
        rows.push(Row::new("encrypt", c, true));
        rows.push(Row::new("decrypt", c, true));
    }
    let burst_n = plan.burst_connections * plan.burst_distinct;
    let pool = match burst_pool(&client, &directs[0], burst_n, t).await {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut bursts = Vec::new();
    let mut batched: Vec<Batched> = directs.iter().map(|d| Batched::new(d.version)).collect();
    let mut burst_ratios = Vec::new();
    // Open every connection a side will use before anything is timed.
    let widest = plan.in_flight.iter().copied().max().unwrap_or(1);
    for d in &directs {
        let warm = direct_encrypt(d, &seeds(widest), widest).await;
        if let Some(e) = warm.errors.first() {
            return fail(format!("warming up: {e}"));
        }
    }
    let warm = provider_encrypt(&client, &seeds(widest), widest, t).await;
    if let Some(e) = warm.errors.first() {
        return fail(format!("warming up: {e}"));
    }
    let mut rss_after = None;
    let mut extra_errors = Vec::new();

    for _round in 0..plan.rounds {
        for (chunk, &c) in rows.chunks_exact_mut(3).zip(&plan.in_flight) {
            let [status, encrypt, decrypt] = chunk else { continue };
            status.provider.add(&provider_status(&client, n, c, t).await);

            let plain = seeds(n);
            let mut best_encrypt = 0f64;
            let mut best_decrypt = 0f64;
            for (i, d) in directs.iter().enumerate() {
                let phase = direct_encrypt(d, &plain, c).await;
                best_encrypt = best_encrypt.max(encrypt.direct[i].1.add(&phase));
                let sealed = Arc::new(pair(&plain, phase));
                best_decrypt = best_decrypt.max(decrypt.direct[i].1.add(&direct_decrypt(d, &sealed, c).await));
            }
            let phase = provider_encrypt(&client, &plain, c, t).await;
            let rate = encrypt.provider.add(&phase);
            encrypt.ratios.push(rate / best_encrypt.max(1e-9));
            let sealed: Arc<Vec<Sealed>> = Arc::new(phase.outputs.into_iter().flatten().collect());
            let rate = decrypt.provider.add(&provider_decrypt(&client, &sealed, c, t).await);
            decrypt.ratios.push(rate / best_decrypt.max(1e-9));
        }

        let mut limit = f64::INFINITY;
        for (d, side) in directs.iter().zip(batched.iter_mut()) {
            let phase = batched_limit(d, &pool.direct).await;
            side.add(&phase);
            if phase.errors.is_empty() {
                limit = limit.min(phase.elapsed.as_secs_f64());
            }
        }
        match burst(socket, plan, &pool).await {
            Ok(run) => {
                burst_ratios.push(run.total.as_secs_f64() / limit);
                bursts.push(run);
            }
            Err(e) => extra_errors.push(e),
        }
        rss_after = max_opt(rss_after, pid.and_then(rss_kib));
    }

    let startup = if plan.startup_runs > 0 {
        startup_json(config_path, plan.startup_runs, &mut extra_errors).await
    } else {
        Value::Null
    };

    let mut errors = extra_errors.len();
    let mut first_error = extra_errors.first().cloned();
    for row in &rows {
        let (count, first) = row.errors();
        errors += count;
        first_error = first_error.or(first);
    }
    for b in &batched {
        errors += b.errors;
        first_error = first_error.or_else(|| b.first_error.clone());
    }
    let burst_json = burst_json(plan, &bursts, &batched, &burst_ratios);
    for run in &bursts {
        errors += run.errors.values().sum::<usize>();
        first_error = first_error.or_else(|| run.first_error.clone());
    }
    let mut report = json!({
        "name": "benchmark",
        "mode": "compare",
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "loadAverageBefore": load_before, "loadAverageAfter": load_average()},
        "sampleBytes": SAMPLE_BYTES,
        "iterations": n,
        "rounds": plan.rounds,
        "kmsTimeoutMs": plan.kms_timeout.as_millis() as u64,
        "calls": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "burst": burst_json,
        "startup": startup,
        "rss": {"idleMiB": mib(rss_idle), "afterBurstMiB": mib(rss_after)},
        "errors": errors,
    });
    if let Some(e) = first_error {
        report["firstError"] = json!(e);
    }
    Outcome::finish(report, errors == 0)
}

fn burst_json(plan: &Plan, runs: &[BurstRun], batched: &[Batched], ratios: &[f64]) -> Value {
    let totals: Vec<f64> = runs.iter().map(|r| r.total.as_secs_f64() * 1e3).collect();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runs {
        for (k, v) in &r.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let distinct: Vec<Duration> = runs.iter().flat_map(|r| r.distinct.iter().copied()).collect();
    let identical_ok: usize = runs.iter().map(|r| r.identical.len()).sum();
    let identical_done: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.identical.iter().max())
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    let mut direct = json!({"batchSize": BATCH_SIZE, "inFlight": BATCH_IN_FLIGHT});
    for b in batched {
        let key = match b.version {
            HttpVersion::Http1 => "http1TotalMs",
            HttpVersion::Http2 => "http2TotalMs",
        };
        direct[key] = json!(round3(median(&b.totals_ms)));
    }
    json!({
        "connections": plan.burst_connections,
        "distinctPerConnection": plan.burst_distinct,
        "identical": plan.burst_identical,
        "rounds": runs.len(),
        "provider": {
            "totalMs": round3(median(&totals)),
            "totalMsRounds": totals.iter().map(|t| round3(*t)).collect::<Vec<_>>(),
            "distinctOk": distinct.len(),
            "distinct": latency_json(latency(distinct)),
            "identicalOk": identical_ok,
            "identicalDoneMs": round3(median(&identical_done)),
            "errors": errors,
        },
        "directBatched": direct,
        "ratio": if ratios.is_empty() { Value::Null } else { json!(round3(median(ratios))) },
    })
}

async fn startup_json(config_path: &Path, runs: usize, errors: &mut Vec<String>) -> Value {
    let scratch = match Scratch::new(config_path) {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("start to ready: {e}"));
            return Value::Null;
        }
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut rss = None;
    for run in 0..runs {
        for (is_cold, out) in [(true, &mut cold), (false, &mut warm)] {
            if is_cold && let Err(e) = scratch.clear_state() {
                errors.push(format!("start to ready: {e}"));
                continue;
            }
            match scratch.start(run).await {
                Ok(s) => {
                    out.push(s.ready);
                    rss = max_opt(rss, s.rss_kib);
                }
                Err(e) => errors.push(format!(
                    "start to ready ({}): {e}",
                    if is_cold { "cold" } else { "warm" }
                )),
            }
        }
    }
    let summary = |v: Vec<Duration>| {
        let count = v.len();
        latency(v).map_or(
            Value::Null,
            |l| json!({"runs": count, "p50Ms": ms(l.p50), "maxMs": ms(l.max)}),
        )
    };
    json!({"cold": summary(cold), "warm": summary(warm), "rssAtReadyMiB": mib(rss)})
}

/// The report as a table.
pub fn table(r: &Value) -> String {
    let mut out = String::new();
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x}"));
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    out.push_str(&format!(
        "benchmark: {} rounds of {} calls per row, {} CPUs, load average {} before, {} after\n",
        r["rounds"],
        r["iterations"],
        r["machine"]["cpus"],
        r["machine"]["loadAverageBefore"],
        r["machine"]["loadAverageAfter"]
    ));
    out.push_str("direct = straight to Transit (HTTP/1.1 | HTTP/2); ratio = provider/s over the faster direct, median of rounds\n\n");
    out.push_str(&format!(
        "{:<8} {:>4} | {:>9} {:>8} {:>8} | {:>9} {:>9} {:>8} {:>8} | {:>6}\n",
        "method", "n", "prov/s", "p50 ms", "p99 ms", "h1/s", "h2/s", "p50 ms", "p99 ms", "ratio"
    ));
    for row in r["calls"].as_array().into_iter().flatten() {
        let p = &row["provider"];
        let (h1, h2) = (&row["directHttp1"], &row["directHttp2"]);
        let best = if h1["perSecond"].as_f64() >= h2["perSecond"].as_f64() {
            h1
        } else {
            h2
        };
        out.push_str(&format!(
            "{:<8} {:>4} | {:>9} {:>8} {:>8} | {:>9} {:>9} {:>8} {:>8} | {:>6}\n",
            text(&row["method"]),
            text(&row["inFlight"]),
            f(&p["perSecond"]),
            f(&p["p50Ms"]),
            f(&p["p99Ms"]),
            f(&h1["perSecond"]),
            f(&h2["perSecond"]),
            f(&best["p50Ms"]),
            f(&best["p99Ms"]),
            f(&row["ratio"]),
        ));
    }
    let b = &r["burst"];
    if b.is_object() {
        let p = &b["provider"];
        let d = &b["directBatched"];
        out.push_str(&format!(
            "\nburst: {} connections x {} distinct + {} identical Decrypts at once, {} rounds\n",
            b["connections"], b["distinctPerConnection"], b["identical"], b["rounds"]
        ));
        out.push_str(&format!(
            "  provider: total {} ms (rounds {}), distinct ok {} p50 {} ms p99 {} ms, identical ok {} done in {} ms, errors {}\n",
            f(&p["totalMs"]),
            p["totalMsRounds"],
            p["distinctOk"],
            f(&p["distinct"]["p50Ms"]),
            f(&p["distinct"]["p99Ms"]),
            p["identicalOk"],
            f(&p["identicalDoneMs"]),
            p["errors"]
        ));
        out.push_str(&format!(
            "  direct Transit batch_input of {} at {} in flight: {} ms (HTTP/1.1), {} ms (HTTP/2); provider/batched time ratio {}\n",
            d["batchSize"],
            d["inFlight"],
            f(&d["http1TotalMs"]),
            f(&d["http2TotalMs"]),
            f(&b["ratio"])
        ));
    }
    let s = &r["startup"];
    if s.is_object() {
        out.push_str(&format!(
            "\nstart to ready: cold p50 {} ms (max {}), warm p50 {} ms (max {}), {} runs each; RSS at ready {} MiB\n",
            f(&s["cold"]["p50Ms"]),
            f(&s["cold"]["maxMs"]),
            f(&s["warm"]["p50Ms"]),
            f(&s["warm"]["maxMs"]),
            s["warm"]["runs"],
            f(&s["rssAtReadyMiB"])
        ));
    }
    out.push_str(&format!(
        "RSS of the serving provider: idle {} MiB, after the burst {} MiB\n",
        f(&r["rss"]["idleMiB"]),
        f(&r["rss"]["afterBurstMiB"])
    ));
    out.push_str(&format!("errors: {}", r["errors"]));
    if let Some(e) = r["firstError"].as_str() {
        out.push_str(&format!(" (first: {e})"));
    }
    out.push_str(&format!("\nstatus: {}\n", r["status"].as_str().unwrap_or_default()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::INFINITY, 1.0]), 1.0);
    }

    #[tokio::test]
    async fn calls_are_spread_over_workers_and_failures_counted() {
        let phase = run_calls(10, 3, |i| async move {
            if i == 4 { Err(format!("call {i}")) } else { Ok(i * 2) }
        })
        .await;
        assert_eq!(phase.latencies.len(), 9);
        assert_eq!(phase.errors, vec!["call 4".to_owned()]);
        assert_eq!(phase.outputs[3], Some(6));
        assert_eq!(phase.outputs[4], None);
    }
}
