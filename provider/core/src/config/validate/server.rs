//! The `server` section: the KMS socket (path inside the runtime
//! directories, mode, group), the metrics and health listeners, and the
//! concurrency limits and wait queues of the three KMS calls, and the
//! connection caps and timeouts of the three listeners.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::syntax::{absolute_path_problem, listen_address_problem, listeners_clash};
use super::validator::Validator;
use crate::config::raw::RawServer;
use crate::config::{ServerConfig, SocketGroup};

/// Runtime directories a socket may be created in (the directory itself or below).
pub const ALLOWED_SOCKET_DIRS: [&str; 2] = ["/run/openbao-kms", "/var/run/openbao-kms"];

/// Upper bound of `server.maxQueued*`.
pub const MAX_QUEUED: u32 = 65_536;
/// `server.maxQueueWait` default and bound.
pub const DEFAULT_MAX_QUEUE_WAIT: Duration = Duration::from_secs(5);
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(60);

/// Upper bound of `server.max{Kms,Health,Metrics}Connections`.
pub const MAX_CONNECTIONS: u32 = 65_536;
/// Defaults of the connection timeouts.
pub const DEFAULT_HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_KMS_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_KMS_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_KMS_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

impl Validator<'_> {
    pub(super) fn server(&mut self, r: &RawServer) -> Option<ServerConfig> {
        let socket_path = self.socket_path(r.socket_path.as_deref().unwrap_or("/run/openbao-kms/kms.sock"));
        let socket_mode = self.socket_mode(r.socket_mode.as_deref().unwrap_or("0660"));
        let socket_group = self.socket_group(&r.socket_group);
        let o = &self.ctx.overrides;
        let metrics_raw = o
            .metrics_address
            .as_ref()
            .map(|o| o.value.clone())
            .or(r.metrics_address.clone());
        let health_raw = o
            .health_address
            .as_ref()
            .map(|o| o.value.clone())
            .or(r.health_address.clone());
        let metrics = self.listen_address(
            "server.metricsAddress",
            metrics_raw.as_deref().unwrap_or("127.0.0.1:8081"),
        );
        let health = self.listen_address(
            "server.healthAddress",
            health_raw.as_deref().unwrap_or("127.0.0.1:8082"),
        );
        if let (Some(Some(m)), Some(Some(h))) = (&metrics, &health)
            && listeners_clash(m, h)
        {
            self.err(
                "server.healthAddress",
                format!("must differ from server.metricsAddress ({m})"),
            );
        }
        let status = self.int("server.maxConcurrentStatus", r.max_concurrent_status, 16, 1, 1024);
        let encrypt = self.int("server.maxConcurrentEncrypt", r.max_concurrent_encrypt, 32, 1, 1024);
        let decrypt = self.int("server.maxConcurrentDecrypt", r.max_concurrent_decrypt, 1024, 1, 1024);
        let queued_status = self.int("server.maxQueuedStatus", r.max_queued_status, 64, 0, MAX_QUEUED);
        let queued_encrypt = self.int("server.maxQueuedEncrypt", r.max_queued_encrypt, 256, 0, MAX_QUEUED);
        let queued_decrypt = self.int("server.maxQueuedDecrypt", r.max_queued_decrypt, 2048, 0, MAX_QUEUED);
        let queue_wait = self.queue_wait(&r.max_queue_wait);
        let batch_items = self.int("server.decryptBatchMaxItems", r.decrypt_batch_max_items, 64, 1, 256);
        let batch_wait = self.batch_wait(&r.decrypt_batch_max_wait);
        let decrypt_calls = self.int(
            "server.maxConcurrentDecryptCalls",
            r.max_concurrent_decrypt_calls,
            4,
            1,
            1024,
        );
        let kms_connections = self.int(
            "server.maxKmsConnections",
            r.max_kms_connections,
            64,
            1,
            MAX_CONNECTIONS,
        );
        let health_connections = self.int(
            "server.maxHealthConnections",
            r.max_health_connections,
            64,
            1,
            MAX_CONNECTIONS,
        );
        let metrics_connections = self.int(
            "server.maxMetricsConnections",
            r.max_metrics_connections,
            64,
            1,
            MAX_CONNECTIONS,
        );
        let header_timeout = self.bounded_duration(
            "server.httpHeaderReadTimeout",
            &r.http_header_read_timeout,
            DEFAULT_HTTP_HEADER_READ_TIMEOUT,
            Duration::from_secs(60),
            "1m",
        );
        let keepalive_interval = self.bounded_duration(
            "server.kmsKeepaliveInterval",
            &r.kms_keepalive_interval,
            DEFAULT_KMS_KEEPALIVE_INTERVAL,
            Duration::from_secs(3600),
            "1h",
        );
        let keepalive_timeout = self.bounded_duration(
            "server.kmsKeepaliveTimeout",
            &r.kms_keepalive_timeout,
            DEFAULT_KMS_KEEPALIVE_TIMEOUT,
            Duration::from_secs(60),
            "1m",
        );
        let idle_timeout = self.kms_idle_timeout(&r.kms_idle_timeout, keepalive_interval, keepalive_timeout);
        Some(ServerConfig {
            socket_path: socket_path?,
            socket_mode: socket_mode?,
            socket_group: socket_group?,
            metrics_address: metrics?,
            health_address: health?,
            max_concurrent_status: status?,
            max_concurrent_encrypt: encrypt?,
            max_concurrent_decrypt: decrypt?,
            max_queued_status: queued_status?,
            max_queued_encrypt: queued_encrypt?,
            max_queued_decrypt: queued_decrypt?,
            max_queue_wait: queue_wait?,
            decrypt_batch_max_items: batch_items?,
            decrypt_batch_max_wait: batch_wait?,
            max_concurrent_decrypt_calls: decrypt_calls?,
            max_kms_connections: kms_connections?,
            max_health_connections: health_connections?,
            max_metrics_connections: metrics_connections?,
            http_header_read_timeout: header_timeout?,
            kms_idle_timeout: idle_timeout?,
            kms_keepalive_interval: keepalive_interval?,
            kms_keepalive_timeout: keepalive_timeout?,
        })
    }

    /// A positive duration of at most `max` (`max_text` in the message).
    fn bounded_duration(
        &mut self,
        path: &str,
        v: &Option<String>,
        default: Duration,
        max: Duration,
        max_text: &str,
    ) -> Option<Duration> {
        let d = self.duration(path, v, default, false)?;
        if d > max {
            self.err(path, format!("must be at most {max_text}"));
            return None;
        }
        Some(d)
    }

    /// `server.kmsIdleTimeout`: at most a day, and longer than the
    /// keepalive interval plus its timeout. The server pings an idle
    /// connection every interval and a live client answers each ping, so
    /// such a client always sent something within the idle timeout;
    /// kube-apiserver's long-lived connection is never closed as idle.
    fn kms_idle_timeout(
        &mut self,
        v: &Option<String>,
        interval: Option<Duration>,
        timeout: Option<Duration>,
    ) -> Option<Duration> {
        const P: &str = "server.kmsIdleTimeout";
        let d = self.bounded_duration(P, v, DEFAULT_KMS_IDLE_TIMEOUT, Duration::from_secs(86_400), "24h")?;
        if let (Some(i), Some(t)) = (interval, timeout)
            && d <= i + t
        {
            self.err(
                P,
                format!(
                    "must be longer than server.kmsKeepaliveInterval + server.kmsKeepaliveTimeout ({}s); a live client answers a ping at least that often",
                    (i + t).as_secs_f64()
                ),
            );
            return None;
        }
        Some(d)
    }

    /// `server.decryptBatchMaxWait`: 0s to 1s (a batch exists to save time).
    fn batch_wait(&mut self, v: &Option<String>) -> Option<Duration> {
        const P: &str = "server.decryptBatchMaxWait";
        let d = self.duration(P, v, Duration::from_millis(5), true)?;
        if d > Duration::from_secs(1) {
            self.err(P, "must be at most 1s");
            return None;
        }
        Some(d)
    }

    /// `server.maxQueueWait`: positive, at most a minute (kube-apiserver's
    /// own KMS timeout is seconds; a longer wait only holds memory).
    fn queue_wait(&mut self, v: &Option<String>) -> Option<Duration> {
        const P: &str = "server.maxQueueWait";
        let d = self.duration(P, v, DEFAULT_MAX_QUEUE_WAIT, false)?;
        if d > MAX_QUEUE_WAIT {
            self.err(P, "must be at most 1m");
            return None;
        }
        Some(d)
    }

    fn socket_path(&mut self, s: &str) -> Option<PathBuf> {
        const P: &str = "server.socketPath";
        if let Some(p) = absolute_path_problem(s) {
            self.err(P, p);
            return None;
        }
        if s.len() > MAX_SOCKET_PATH_BYTES {
            self.err(
                P,
                format!(
                    "is {} bytes long; a Unix socket path may have at most {MAX_SOCKET_PATH_BYTES}",
                    s.len()
                ),
            );
            return None;
        }
        let path = PathBuf::from(s);
        let parent = path.parent().unwrap_or(Path::new("/"));
        let extra = self.ctx.extra_socket_dirs.iter().filter(|d| d.is_absolute());
        let allowed = ALLOWED_SOCKET_DIRS
            .iter()
            .map(PathBuf::from)
            .chain(extra.cloned())
            .any(|dir| parent.starts_with(&dir));
        if !allowed {
            self.err(
                P,
                format!(
                    "must be inside {} or {}",
                    ALLOWED_SOCKET_DIRS[0], ALLOWED_SOCKET_DIRS[1]
                ),
            );
            return None;
        }
        Some(path)
    }

    fn socket_mode(&mut self, s: &str) -> Option<u32> {
        const P: &str = "server.socketMode";
        let digits_ok = s.len() == 4 && s.starts_with('0') && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
        let Some(mode) = digits_ok.then(|| u32::from_str_radix(s, 8).ok()).flatten() else {
            self.err(P, "must be a quoted octal mode with a leading zero, e.g. \"0660\"");
            return None;
        };
        if mode & crate::config::SOCKET_MODE_FORBIDDEN != 0 {
            self.err(
                P,
                format!("{s} grants execute or world access; it must not intersect 0117 (use \"0660\")"),
            );
            return None;
        }
        Some(mode)
    }

    fn socket_group(&mut self, v: &Option<String>) -> Option<SocketGroup> {
        const P: &str = "server.socketGroup";
        let s = self.required(P, v)?;
        if s.is_empty() {
            self.err(P, "must not be empty");
            return None;
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(gid) if gid != u32::MAX => Some(SocketGroup::Gid(gid)),
                _ => {
                    self.err(P, "is not a valid numeric GID");
                    None
                }
            };
        }
        let body = s.strip_suffix('$').unwrap_or(s);
        let name_ok = !body.is_empty()
            && !body.starts_with('-')
            && s.len() <= 256
            && body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            self.err(
                P,
                "must be a group name (letters, digits, '_', '.', '-') or a decimal GID in quotes",
            );
            return None;
        }
        Some(SocketGroup::Name(s.to_owned()))
    }

    fn listen_address(&mut self, path: &str, s: &str) -> Option<Option<String>> {
        if s.is_empty() {
            return Some(None);
        }
        match listen_address_problem(s) {
            Some(p) => {
                self.err(path, p);
                None
            }
            None => Some(Some(s.to_owned())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::validate::tests::*;
    use crate::config::{ValidationContext, parse_yaml, parse_yaml_with};

    #[test]
    fn server_rules() {
        set_fails("server.socketPath", "/tmp/kms.sock", "must be inside /run/openbao-kms");
        set_fails("server.socketPath", "/run/openbao-kms-evil/kms.sock", "must be inside");
        set_fails("server.socketPath", "/run/openbao-kms/../kms.sock", "'..'");
        set_fails("server.socketPath", "run/openbao-kms/kms.sock", "absolute");
        set_fails(
            "server.socketPath",
            &format!("/run/openbao-kms/{}", "a".repeat(100)),
            "at most 107",
        );
        set_ok("server.socketPath", "/var/run/openbao-kms/kms.sock");
        set_ok("server.socketPath", "/run/openbao-kms/sub/kms.sock");
        set_fails("server.socketMode", "\"660\"", "leading zero");
        set_fails("server.socketMode", "\"0680\"", "octal");
        set_fails("server.socketMode", "\"0770\"", "0117");
        set_fails("server.socketMode", "\"0661\"", "0117");
        assert_eq!(set_ok("server.socketMode", "\"0600\"").server.socket_mode, 0o600);
        set_fails("server.socketGroup", "\"\"", "empty");
        set_fails("server.socketGroup", "\"a b\"", "group name");
        set_fails("server.socketGroup", "\"4294967296\"", "GID");
        fails_at(&without(FULL, "server.socketGroup"), "server.socketGroup", "required");
        set_fails("server.metricsAddress", "\"8081\"", "host:port");
        set_fails("server.metricsAddress", "\":8081\"", "name a host");
        set_fails("server.metricsAddress", "\"127.0.0.1:99999\"", "port");
        set_fails("server.metricsAddress", "\"::1:8081\"", "brackets");
        set_ok("server.metricsAddress", "\"[::1]:8081\"");
        set_ok("server.metricsAddress", "\"localhost:0\"");
        assert_eq!(set_ok("server.metricsAddress", "\"\"").server.metrics_address, None);
        set_fails(
            "server.healthAddress",
            "\"127.0.0.1:8081\"",
            "must differ from server.metricsAddress",
        );
        set_fails("server.healthAddress", "\"0.0.0.0:8081\"", "must differ");
        set_ok("server.healthAddress", "\"127.0.0.2:8081\"");
        let t = with(
            &with(FULL, "server.metricsAddress", "\"127.0.0.1:0\""),
            "server.healthAddress",
            "\"127.0.0.1:0\"",
        );
        assert!(parse_yaml(&t).is_ok(), "two ephemeral ports do not clash");
        for f in ["maxConcurrentStatus", "maxConcurrentEncrypt", "maxConcurrentDecrypt"] {
            set_fails(&format!("server.{f}"), "0", "between 1 and 1024");
            set_fails(&format!("server.{f}"), "1025", "between 1 and 1024");
            set_fails(&format!("server.{f}"), "-3", "between 1 and 1024");
            set_ok(&format!("server.{f}"), "1024");
        }
        for f in ["maxQueuedStatus", "maxQueuedEncrypt", "maxQueuedDecrypt"] {
            set_fails(&format!("server.{f}"), "-1", "between 0 and 65536");
            set_fails(&format!("server.{f}"), "65537", "between 0 and 65536");
            set_fails(&format!("server.{f}"), "\"10\"", "without quotes");
            set_ok(&format!("server.{f}"), "65536");
        }
        let none = set_ok("server.maxQueuedDecrypt", "0");
        assert_eq!(none.server.max_queued_decrypt, 0, "0 turns the queue off");
        assert_eq!(none.server.max_queued_encrypt, 256);
        set_fails("server.maxQueueWait", "0s", "must be positive");
        set_fails("server.maxQueueWait", "61s", "at most 1m");
        set_fails("server.maxQueueWait", "5", "");
        assert_eq!(
            set_ok("server.maxQueueWait", "250ms").server.max_queue_wait,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn connection_caps_and_timeouts() {
        let s = parse_yaml(FULL).unwrap().server;
        assert_eq!(
            (
                s.max_kms_connections,
                s.max_health_connections,
                s.max_metrics_connections
            ),
            (64, 64, 64)
        );
        assert_eq!(
            (
                s.http_header_read_timeout,
                s.kms_idle_timeout,
                s.kms_keepalive_interval,
                s.kms_keepalive_timeout
            ),
            (
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(30),
                Duration::from_secs(10)
            )
        );
        for f in ["maxKmsConnections", "maxHealthConnections", "maxMetricsConnections"] {
            set_fails(&format!("server.{f}"), "0", "between 1 and 65536");
            set_fails(&format!("server.{f}"), "65537", "between 1 and 65536");
            set_fails(&format!("server.{f}"), "\"8\"", "without quotes");
            set_ok(&format!("server.{f}"), "1");
        }
        set_fails("server.httpHeaderReadTimeout", "0s", "must be positive");
        set_fails("server.httpHeaderReadTimeout", "61s", "at most 1m");
        assert_eq!(
            set_ok("server.httpHeaderReadTimeout", "500ms")
                .server
                .http_header_read_timeout,
            Duration::from_millis(500)
        );
        set_fails("server.kmsKeepaliveInterval", "0s", "must be positive");
        set_fails("server.kmsKeepaliveTimeout", "2m", "at most 1m");
        set_fails("server.kmsIdleTimeout", "25h", "at most 24h");
        set_fails(
            "server.kmsIdleTimeout",
            "40s",
            "longer than server.kmsKeepaliveInterval",
        );
        let t = with(
            &with(FULL, "server.kmsKeepaliveInterval", "1s"),
            "server.kmsKeepaliveTimeout",
            "1s",
        );
        let s = parse_yaml(&with(&t, "server.kmsIdleTimeout", "3s")).unwrap().server;
        assert_eq!(s.kms_idle_timeout, Duration::from_secs(3));
        assert!(parse_yaml(&with(&t, "server.kmsIdleTimeout", "2s")).is_err());
    }

    #[test]
    fn decrypt_batching_settings() {
        let s = parse_yaml(FULL).unwrap().server;
        assert_eq!(
            (
                s.decrypt_batch_max_items,
                s.decrypt_batch_max_wait,
                s.max_concurrent_decrypt_calls
            ),
            (64, Duration::from_millis(5), 4),
            "batching is on by default"
        );
        set_fails("server.decryptBatchMaxItems", "0", "between 1 and 256");
        set_fails("server.decryptBatchMaxItems", "257", "between 1 and 256");
        assert_eq!(
            set_ok("server.decryptBatchMaxItems", "1")
                .server
                .decrypt_batch_max_items,
            1
        );
        set_fails("server.decryptBatchMaxWait", "2s", "at most 1s");
        assert_eq!(
            set_ok("server.decryptBatchMaxWait", "0s").server.decrypt_batch_max_wait,
            Duration::ZERO
        );
        set_fails("server.maxConcurrentDecryptCalls", "0", "between 1 and 1024");
        set_ok("server.maxConcurrentDecryptCalls", "64");
    }

    #[test]
    fn queue_defaults_let_a_restart_burst_of_600_decrypts_through() {
        let s = parse_yaml(FULL).unwrap().server;
        assert!(s.max_concurrent_decrypt + s.max_queued_decrypt >= 3 * 200);
        assert_eq!(
            (s.max_queued_status, s.max_queued_encrypt, s.max_queued_decrypt),
            (64, 256, 2048)
        );
        assert_eq!(s.max_queue_wait, Duration::from_secs(5));
    }

    #[test]
    fn socket_dir_extension() {
        let t = with(FULL, "server.socketPath", "/tmp/test-xyz/kms.sock");
        assert!(parse_yaml(&t).is_err());
        let ctx = ValidationContext {
            extra_socket_dirs: vec![PathBuf::from("/tmp/test-xyz")],
            ..Default::default()
        };
        assert_eq!(
            parse_yaml_with(&t, &ctx).unwrap().server.socket_path,
            PathBuf::from("/tmp/test-xyz/kms.sock")
        );
        let rel = ValidationContext {
            extra_socket_dirs: vec![PathBuf::from("tmp/test-xyz")],
            ..Default::default()
        };
        assert!(parse_yaml_with(&with(FULL, "server.socketPath", "/tmp/test-xyz/kms.sock"), &rel).is_err());
    }
}
