#!/usr/bin/env bash
# make bench: this provider against direct Transit on one OpenBao (the
# `make demo` stack, built with --release), in one run of
# `bao-kms-provider benchmark --config C --socket S`: Status, Encrypt and
# Decrypt at 1 and 16 in flight (distinct ciphertexts, so every Decrypt
# pays its own Transit call), the restart burst (3 connections x 200
# distinct + 64 identical Decrypts at once) next to Transit's batched
# limit, start to ready (cold and warm registry) and RSS, with ratios to
# direct Transit. Rounds interleave both sides. The numbers depend on this
# machine and its load; they are printed and written to
# .demo/bench/benchmark.json, never asserted.
#
# Knobs (environment): BENCH_ITERATIONS (calls per row and round, 500),
# BENCH_ROUNDS (3), BENCH_CONCURRENCY (1,16), BENCH_BURST_CONNECTIONS (3),
# BENCH_BURST_DISTINCT (200 per connection), BENCH_BURST_IDENTICAL (64),
# BENCH_STARTUP_RUNS (5).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEMO="${BAO_KMS_DEMO_DIR:-$ROOT/.demo}"

mkdir -p "$DEMO"
DEMO_PROFILE=release "$ROOT/scripts/demo.sh" >"$DEMO/bench-setup.log" 2>&1 || {
	tail -n 30 "$DEMO/bench-setup.log" >&2
	echo "bench: the demo stack did not start" >&2
	exit 1
}
trap '"$ROOT/scripts/demo-stop.sh" --quiet' EXIT
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/bao-kms-provider"
OUT="$DEMO/bench"
mkdir -p "$OUT"
export BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR="$DEMO/run"

echo "bench: $(nproc) CPUs, OpenBao $(bao version | head -n 1) dev server (TLS) on loopback, release binaries; $(uptime | sed 's/.*load average/load average/')"
"$BIN" benchmark \
	--config "$DEMO/provider/config.yaml" \
	--socket "$DEMO/run/kms.sock" \
	--iterations "${BENCH_ITERATIONS:-500}" \
	--rounds "${BENCH_ROUNDS:-3}" \
	--concurrency "${BENCH_CONCURRENCY:-1,16}" \
	--burst-connections "${BENCH_BURST_CONNECTIONS:-3}" \
	--burst-distinct "${BENCH_BURST_DISTINCT:-200}" \
	--burst-identical "${BENCH_BURST_IDENTICAL:-64}" \
	--startup-runs "${BENCH_STARTUP_RUNS:-5}" \
	--json-file "$OUT/benchmark.json"
echo "bench: JSON report in $OUT/benchmark.json"
