//! Tiers that need more than OpenBao and the two binaries, each behind its
//! own make target: the OCI image archive (`make test-image`), a throw-away
//! containerd (`make test-containerd`) and a real Prometheus
//! (`make test-prometheus`).

mod containerd;
mod image;
mod prometheus;
