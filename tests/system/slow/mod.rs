//! Tiers that need more than OpenBao and the two binaries, each behind its
//! own make target: the OCI image archive (`make test-image`), a throw-away
//! containerd (`make test-containerd`), a real Prometheus
//! (`make test-prometheus`), the Debian package (`make test-deb`), the
//! release kit (`make test-release`) and a booted Debian system with
//! systemd as PID 1 (`make test-systemd`).

mod containerd;
mod image;
mod package;
mod prometheus;
mod release;
mod systemd;
