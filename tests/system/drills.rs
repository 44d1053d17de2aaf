//! Fault drills: the provider keeps failing closed, says why and loses
//! nothing when the network to OpenBao breaks or the process is killed
//! half-way through writing its registry.
//!
//! Network: a TCP fault proxy between the provider and a real OpenBao
//! (paused, reset, blackholed or slowed connections). Each drill primes
//! ciphertexts through the KMS socket, injects the fault, waits for it to be
//! reported (KMS Status unhealthy, `/status` naming the error class, Decrypt
//! failing with the class's gRPC code), clears it, waits for a healthy
//! Status and decrypts every primed ciphertext.
//!
//! Crashes: the real `strace` kills the provider with SIGKILL at each write
//! step (open, write, fsync, rename, directory open and fsync of the state,
//! checkpoint and pins files) of the first start's save and of a rotation's
//! observation and promotion saves. Every restart must serve one of the
//! known key_ids and decrypt everything stored so far, or exit fail-closed
//! (5) with a reason; nothing else.
//!
//! Recovery times, crash points and their count are printed, never
//! asserted: `cargo test -p bao-kms-system-tests --test system -- drills::
//! --nocapture`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bao_kms_system_tests::crash::{self, Strace};
use bao_kms_system_tests::fault_proxy::{Fault, FaultProxy};
use bao_kms_system_tests::openbao::tail;
use bao_kms_system_tests::provider::{
    READY_TIMEOUT, TERMINATE_TIMEOUT, dev_setup, dev_setup_with, expected_key_id, fast_rotation, read_json,
    registry_record, rotate_and_promote,
};
use bao_kms_system_tests::wait::{self, POLL_INTERVAL};
use bao_kms_system_tests::{EncryptedSeed, KmsClient, OpenBao, Provider, ProviderEnv, provision};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::Code;

use crate::openbao_outage::{assert_probe_failed, wait_unhealthy};
use crate::rotation::wait_key_id;

/// How many ciphertexts each drill primes before its fault.
const PRIMED: usize = 5;
/// How long the provider may take to report healthy once the fault is gone.
const RECOVER_WITHIN: Duration = Duration::from_secs(20);

/// A dev OpenBao, a proxy in front of it and a ready provider that talks to
/// OpenBao only through the proxy.
struct Proxied {
    _bao: OpenBao,
    proxy: FaultProxy,
    _env: ProviderEnv,
    provider: Provider,
    kms: KmsClient,
}

impl Proxied {
    async fn start() -> anyhow::Result<Self> {
        let bao = OpenBao::start_dev().await?;
        let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
        let proxy = FaultProxy::in_front_of(&bao.address()).await?;
        let env = ProviderEnv::builder(&bao, &p)
            .with(|s| s.openbao_address = Some(proxy.address()))
            .build()?;
        let provider = Provider::start(&env).await?;
        let kms = provider.client().await?;
        Ok(Self {
            _bao: bao,
            proxy,
            _env: env,
            provider,
            kms,
        })
    }
}

/// Injects `fault`, checks it is reported as `class` (Decrypt answering
/// `code`), clears it and checks nothing was lost; prints the recovery time.
async fn drill(fault: Fault, class: &str, code: Code) -> anyhow::Result<()> {
    let run = Proxied::start().await?;
    let primed = run.kms.prime_many(PRIMED).await?;
    let key_id = primed[0].key_id.clone();

    run.proxy.set(fault);
    let injected = Instant::now();
    let status = wait_unhealthy(&run.kms).await?;
    let noticed = injected.elapsed();
    assert!(status.key_id.is_empty(), "unhealthy Status with a key_id: {status:?}");
    assert_probe_failed(&run.provider, class).await?;
    let err = run
        .kms
        .decrypt_raw(primed[0].decrypt_request())
        .await
        .expect_err("Decrypt must fail while OpenBao cannot be reached");
    assert_eq!(err.code(), code, "{fault:?}: {err:?}");
    assert!(
        err.message().starts_with(&format!("{class}: ")),
        "{fault:?}: Decrypt must name {class}: {err:?}"
    );

    run.proxy.set(Fault::Pass);
    let cleared = Instant::now();
    let status = run.kms.wait_healthy(RECOVER_WITHIN).await?;
    let recovered = cleared.elapsed();
    assert_eq!(status.key_id, key_id, "the key_id must not change across {fault:?}");
    run.kms.decrypt_all(&primed).await?;
    assert_eq!(run.kms.prime().await?.key_id, key_id);
    eprintln!(
        "drill {fault:?}: reported unhealthy after {noticed:?}; healthy {recovered:?} after the fault was cleared; {} primed ciphertexts decrypt",
        primed.len()
    );
    Ok(())
}

#[tokio::test]
async fn paused_connections_are_reported_and_nothing_is_lost() -> anyhow::Result<()> {
    drill(Fault::Pause, "timeout", Code::DeadlineExceeded).await
}

#[tokio::test]
async fn reset_connections_are_reported_and_nothing_is_lost() -> anyhow::Result<()> {
    drill(Fault::Reset, "openbao_connection_failed", Code::Unavailable).await
}

#[tokio::test]
async fn blackholed_connections_are_reported_and_nothing_is_lost() -> anyhow::Result<()> {
    drill(Fault::Blackhole, "timeout", Code::DeadlineExceeded).await
}

#[tokio::test]
async fn slow_connections_are_reported_and_nothing_is_lost() -> anyhow::Result<()> {
    drill(
        Fault::Slow(Duration::from_millis(1500)),
        "timeout",
        Code::DeadlineExceeded,
    )
    .await
}

/// `serve` exit code of a fail-closed decision.
const EXIT_FAIL_CLOSED: i32 = 5;
/// Bound on a save to be reached once its trigger happened.
const CRASH_WITHIN: Duration = Duration::from_secs(15);

/// How a start ended: serving, or exited with a code.
enum Started {
    Ready(Provider),
    Exited(i32, String),
}

/// Spawns `serve` (optionally wrapped) and waits until `/ready` answers 200
/// or the process exits.
async fn ready_or_exit(env: &ProviderEnv, wrapper: Option<&[String]>) -> anyhow::Result<Started> {
    let mut provider = match wrapper {
        Some(w) => Provider::spawn_wrapped(env, &w.iter().map(String::as_str).collect::<Vec<_>>())?,
        None => Provider::spawn(env)?,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(code) = provider.try_exit_code()? {
            return Ok(Started::Exited(code, provider.stderr()));
        }
        if matches!(provider.ready().await, Ok((200, _))) {
            return Ok(Started::Ready(provider));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "neither ready nor exited within {READY_TIMEOUT:?}; stderr:\n{}",
            provider.stderr()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits for a provider that an injection must kill.
async fn wait_killed(provider: &mut Provider, point: &str) -> anyhow::Result<()> {
    let (code, stderr) = provider.wait_exit(CRASH_WITHIN).await?;
    anyhow::ensure!(
        code == crash::KILLED,
        "{point}: expected the injected SIGKILL, got exit {code}; stderr:\n{}",
        tail(&stderr, 20)
    );
    Ok(())
}

/// The start after a crash at `point`: it serves, publishes one of the
/// `known` key_ids and decrypts every seed stored so far (one more is
/// stored), or it exits fail-closed (5) with a named reason. Anything else
/// fails the drill.
async fn start_after_crash(
    env: &ProviderEnv,
    point: &str,
    known: &[String],
    stored: &mut Vec<EncryptedSeed>,
) -> anyhow::Result<Provider> {
    match ready_or_exit(env, None).await? {
        Started::Ready(provider) => {
            let kms = provider.client().await?;
            let status = kms.healthy_status().await?;
            anyhow::ensure!(
                known.contains(&status.key_id),
                "{point}: the restarted provider publishes an unknown key_id {:?} (known: {known:?})",
                status.key_id
            );
            kms.decrypt_all(stored).await.with_context(|| point.to_owned())?;
            stored.push(kms.prime().await?);
            Ok(provider)
        }
        Started::Exited(code, stderr) => {
            let reason = stderr
                .lines()
                .find_map(|l| l.strip_prefix("bao-kms-provider: "))
                .unwrap_or_default();
            anyhow::ensure!(
                code == EXIT_FAIL_CLOSED && !reason.is_empty(),
                "{point}: the restart exited {code} without a fail-closed reason; stderr:\n{}",
                tail(&stderr, 20)
            );
            anyhow::bail!("{point}: the restart failed closed ({reason}); the drill needs a serving provider to go on")
        }
    }
}

/// Removes every file of the state directory: the next start is a first start.
fn wipe_registry(env: &ProviderEnv) -> anyhow::Result<()> {
    let dir = env.state_path().parent().context("state directory")?;
    for entry in std::fs::read_dir(dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    Ok(())
}

/// SIGKILL at every write step of the first start's save (state,
/// checkpoint, pins): each restart serves a known key_id and decrypts every
/// seed stored so far, and the trace of an undisturbed first start has
/// exactly the steps injected.
#[tokio::test]
async fn a_crash_at_any_write_step_of_the_first_start_loses_nothing() -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup().await?;
    let known = vec![expected_key_id(&bao, &p, &env, 1)?];
    let paths = crash::registry_write_paths(&env);
    let log = env.dir().join("strace.log");

    // The undisturbed first start, traced: one save, the steps counted.
    let wrapper = Strace::new(&paths, &log, None).spawn_args();
    let Started::Ready(mut traced) = ready_or_exit(&env, Some(&wrapper)).await? else {
        anyhow::bail!("the traced first start did not become ready");
    };
    let mut stored = vec![traced.client().await?.prime().await?];
    let provider_pid = crash::traced_child(traced.pid()).context("the traced provider")?;
    kill(Pid::from_raw(i32::try_from(provider_pid)?), Signal::SIGTERM)?;
    traced.wait_exit(TERMINATE_TIMEOUT).await?;
    let (counts, _) = crash::count_calls(&log)?;
    assert_eq!(
        counts,
        crash::SAVE_STEPS.to_vec(),
        "a first start's save makes these write calls (strace log {})",
        log.display()
    );

    let started = Instant::now();
    let mut exercised = 0;
    for (syscall, n) in crash::save_points() {
        wipe_registry(&env)?;
        let wrapper = Strace::new(&paths, &log, Some((syscall, n))).spawn_args();
        let point = format!("first start, {syscall} #{n}");
        match ready_or_exit(&env, Some(&wrapper)).await? {
            Started::Exited(code, _) if code == crash::KILLED => {
                assert_killed_at(&log, syscall, &point)?;
                exercised += 1;
            }
            Started::Exited(code, stderr) => {
                anyhow::bail!(
                    "{point}: exit {code} instead of the injected SIGKILL; stderr:\n{}",
                    tail(&stderr, 20)
                )
            }
            Started::Ready(_) => anyhow::bail!("{point}: ready without reaching the injected step"),
        }
        let mut provider = start_after_crash(&env, &point, &known, &mut stored).await?;
        anyhow::ensure!(provider.terminate().await? == 0, "{point}: unclean shutdown");
    }
    eprintln!(
        "first start: {exercised} crash points (SIGKILL by strace at each write step), {} seeds decrypt after every restart; {:?}",
        stored.len(),
        started.elapsed()
    );
    Ok(())
}

/// The last call strace saw is the injected one.
fn assert_killed_at(log: &std::path::Path, syscall: &str, point: &str) -> anyhow::Result<()> {
    let (_, last) = crash::count_calls(log)?;
    anyhow::ensure!(
        last.starts_with(&format!("{syscall}(")),
        "{point}: the last traced call is {last:?}"
    );
    eprintln!("crash point {point}: {last}");
    Ok(())
}

/// Which save of a rotation an injection targets.
#[derive(Debug, Clone, Copy)]
enum RotationSave {
    /// The first: the new version recorded as pending.
    Observation,
    /// The last: the new version active.
    Promotion,
}

/// Waits until the save that marks `version` stable is complete (state,
/// checkpoint and the pins' anchor at its generation), before its promotion.
async fn wait_stable_saved(env: &ProviderEnv, version: u64) -> anyhow::Result<()> {
    wait::until(
        Duration::from_secs(10),
        &format!("version {version} stable on disk"),
        || async {
            let read = |path: &std::path::Path| read_json(path).map_err(|e| format!("{e:#}"));
            let state = read(env.state_path())?;
            let record = registry_record(&state, version).ok_or_else(|| state.to_string())?;
            if record["state"] == "active" {
                return Err(format!("version {version} was promoted already: {record}"));
            }
            let checkpoint = read(&env.checkpoint_path())?;
            let pins = read(&env.state_path().with_extension("json.openbao-identity"))?;
            let done = record["stableAtUnix"].as_i64().unwrap_or(0) > 0
                && checkpoint["generation"] == state["generation"]
                && pins["rollbackAnchor"]["highestGeneration"] == state["generation"];
            done.then_some(()).ok_or_else(|| format!("{record}"))
        },
    )
    .await
}

/// SIGKILL at every write step of one save of a rotation, with strace
/// attached to the running provider just before that save, one rotation
/// per step: each restart serves a known key_id, decrypts every seed stored
/// so far and completes the rotation.
async fn crash_every_step_of_a_rotation(save: RotationSave) -> anyhow::Result<()> {
    let (bao, p, env) = dev_setup_with(|b| fast_rotation(b).rotation(1, "1s")).await?;
    let paths = crash::registry_write_paths(&env);
    let log = env.dir().join("strace.log");
    let mut known = vec![expected_key_id(&bao, &p, &env, 1)?];
    let mut provider = Provider::start(&env).await?;
    let mut stored = vec![provider.client().await?.prime().await?];
    let mut version = 1;

    let started = Instant::now();
    let mut exercised = 0;
    for (syscall, n) in crash::save_points() {
        version += 1;
        let point = format!("rotation to v{version}, {save:?} save, {syscall} #{n}");
        let strace = Strace::new(&paths, &log, Some((syscall, n)));
        let attached = match save {
            RotationSave::Observation => {
                let attached = strace.attach(provider.pid()).await?;
                bao.rotate_key(&p)?;
                attached
            }
            RotationSave::Promotion => {
                bao.rotate_key(&p)?;
                wait_stable_saved(&env, version).await?;
                strace.attach(provider.pid()).await?
            }
        };
        known.push(expected_key_id(&bao, &p, &env, version)?);
        wait_killed(&mut provider, &point).await?;
        drop(attached);
        assert_killed_at(&log, syscall, &point)?;
        exercised += 1;
        provider = start_after_crash(&env, &point, &known, &mut stored).await?;
        let new_key_id = known.last().context("key_id")?;
        wait_key_id(&provider, new_key_id)
            .await
            .with_context(|| point.clone())?;
        stored.push(provider.client().await?.prime().await?);
    }
    provider.client().await?.decrypt_all(&stored).await?;
    eprintln!(
        "rotation, {save:?} save: {exercised} crash points (SIGKILL by strace at each write step), {} seeds decrypt after every restart; {:?}",
        stored.len(),
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_crash_at_any_write_step_of_a_rotation_observation_loses_nothing() -> anyhow::Result<()> {
    crash_every_step_of_a_rotation(RotationSave::Observation).await
}

#[tokio::test]
async fn a_crash_at_any_write_step_of_a_promotion_loses_nothing() -> anyhow::Result<()> {
    crash_every_step_of_a_rotation(RotationSave::Promotion).await
}

/// Every form a secret could take in a log line: its bytes, standard and
/// URL-safe base64 (padded or not), lowercase hex.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut forms = vec![secret.to_vec()];
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        forms.push(engine.encode(secret).into_bytes());
    }
    forms.push(
        secret
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
    );
    forms
}

/// Fails naming the secret and where it was found.
fn assert_holds_no_secret(outputs: &[(String, Vec<u8>)], secrets: &[(String, Vec<u8>)]) {
    for (what, secret) in secrets {
        assert!(secret.len() >= 16, "{what} is too short to scan for");
        for form in encodings(secret) {
            for (source, text) in outputs {
                assert!(
                    !text.windows(form.len()).any(|w| w == form.as_slice()),
                    "{source} holds {what} ({})",
                    String::from_utf8_lossy(&form)
                );
            }
        }
    }
}

/// The client tokens OpenBao issued to a login, from its raw audit log.
fn issued_tokens(bao: &OpenBao) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(bao.audit_log())?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["type"] == "response" && l["request"]["path"].as_str().is_some_and(|p| p.ends_with("/login")))
        .filter_map(|l| l["response"]["auth"]["client_token"].as_str().map(str::to_owned))
        .collect())
}

/// One Encrypt and Decrypt of `plaintext`; returns the ciphertext.
async fn round_trip(kms: &KmsClient, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
    let resp = kms
        .encrypt(plaintext)
        .await
        .map_err(|s| anyhow::anyhow!("Encrypt: {s}"))?;
    let seed = EncryptedSeed {
        seed: plaintext.to_vec(),
        ciphertext: resp.ciphertext.clone(),
        key_id: resp.key_id,
        annotations: resp.annotations,
    };
    kms.decrypt(&seed).await?;
    Ok(resp.ciphertext)
}

/// At debug level, through Encrypt, Decrypt, a rotation and an AppRole
/// login, nothing the provider writes (stdout, stderr) or serves
/// (`/status`, `/ready`, `/metrics`) holds the plaintext, a ciphertext, the
/// static token, the AppRole secret ID or a token a login returned, in
/// clear, base64 or hex.
#[tokio::test]
async fn debug_logs_and_endpoints_hold_no_secret() -> anyhow::Result<()> {
    let bao = OpenBao::start_dev_audited_raw().await?;
    let p = provision(&bao, "transit", "k8s-workload-a-etcd")?;
    let env = fast_rotation(ProviderEnv::builder(&bao, &p)).build()?;
    assert_eq!(env.settings().log_level, "debug");
    let plaintext: Vec<u8> = {
        use rand::Rng as _;
        rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).collect()
    };
    let mut ciphertexts = Vec::new();
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut capture = async |provider: &mut Provider, phase: &str| -> anyhow::Result<()> {
        for path in ["/status", "/ready", "/live"] {
            let (_, body) = provider.health_get(path).await?;
            outputs.push((format!("{phase} {path}"), body.to_string().into_bytes()));
        }
        outputs.push((format!("{phase} /metrics"), provider.metrics_text().await?.into_bytes()));
        anyhow::ensure!(provider.terminate().await? == 0, "{phase}: unclean shutdown");
        outputs.push((format!("{phase} stderr"), provider.stderr().into_bytes()));
        outputs.push((format!("{phase} stdout"), provider.stdout().into_bytes()));
        Ok(())
    };

    // Token auth: round trips, a rotation, round trips under the new key.
    let mut provider = Provider::start(&env).await?;
    let kms = provider.client().await?;
    ciphertexts.push(round_trip(&kms, &plaintext).await?);
    rotate_and_promote(&bao, &p, &env, &provider, 2).await?;
    ciphertexts.push(round_trip(&kms, &plaintext).await?);
    capture(&mut provider, "token auth").await?;

    // AppRole: a login that returns a token.
    let secret_id = crate::auth_methods::use_approle(&bao, &p, &env)?;
    let mut provider = Provider::start(&env).await?;
    ciphertexts.push(round_trip(&provider.client().await?, &plaintext).await?);
    capture(&mut provider, "approle").await?;

    let debug_lines = outputs
        .iter()
        .filter(|(source, _)| source.ends_with("stderr"))
        .flat_map(|(_, text)| {
            String::from_utf8_lossy(text)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter(|l| l["level"].as_str().is_some_and(|v| v.eq_ignore_ascii_case("debug")))
        .count();
    assert!(debug_lines > 0, "no debug line was logged");

    let logins = issued_tokens(&bao)?;
    assert!(!logins.is_empty(), "the AppRole login's token is not in the audit log");
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("the plaintext".into(), plaintext.clone()),
        ("the static token".into(), p.token.clone().into_bytes()),
        ("the AppRole secret ID".into(), secret_id.into_bytes()),
    ];
    for (i, ct) in ciphertexts.iter().enumerate() {
        secrets.push((format!("ciphertext {i}"), ct.clone()));
        // The Transit part of `vault:vN:<base64>`, alone.
        if let Some(body) = ct.rsplit(|b| *b == b':').next() {
            secrets.push((format!("ciphertext {i}'s Transit body"), body.to_vec()));
        }
    }
    for (i, token) in logins.into_iter().enumerate() {
        secrets.push((format!("login token {i}"), token.into_bytes()));
    }
    assert_holds_no_secret(&outputs, &secrets);
    eprintln!(
        "log scan: {} secrets in 6 encodings each, {} outputs ({} debug lines), none found",
        secrets.len(),
        outputs.len(),
        debug_lines
    );
    Ok(())
}
