#!/usr/bin/env bash
# make bench: Encrypt/Decrypt latency of optimised binaries against a local
# OpenBao (the `make demo` stack, built with --release): straight against
# Transit with the provider's identity and AAD, then through the provider's
# socket as kube-apiserver calls it, sequentially and with concurrency. The
# numbers depend on this machine; they are printed and written to
# .demo/bench/, never asserted.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEMO="$ROOT/.demo"
ITERATIONS="${BENCH_ITERATIONS:-500}"

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

run() {
	local name="$1"
	shift
	printf '\n== %s\n' "$name"
	"$BIN" benchmark --iterations "$ITERATIONS" "$@" --output json >"$OUT/$name.json"
	"$BIN" benchmark --iterations "$ITERATIONS" "$@"
}

echo "bench: $ITERATIONS round trips of 32 random bytes per run ($(nproc) CPUs, OpenBao dev server, TLS)"
run transit-c1 --config "$DEMO/provider/config.yaml" --concurrency 1
run transit-c8 --config "$DEMO/provider/config.yaml" --concurrency 8
run socket-c1 --socket "$DEMO/run/kms.sock" --concurrency 1
run socket-c8 --socket "$DEMO/run/kms.sock" --concurrency 8
echo
echo "bench: JSON reports in $OUT"
