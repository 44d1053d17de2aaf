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
# BENCH_STARTUP_RUNS (5). BENCH_OTLP=1: the provider exports metrics (every
# second) and traces over OTLP to the tests' receiver (bin otlp-receiver,
# built unless BENCH_OTLP_RECEIVER names one), to measure OTLP on against
# the default run (off); the receiver's counts are printed at the end.
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

if [ -n "${BENCH_OTLP:-}" ]; then
	RECEIVER="${BENCH_OTLP_RECEIVER:-}"
	if [ -z "$RECEIVER" ]; then
		(cd "$ROOT" && cargo build --locked --quiet -p bao-kms-system-tests --bin otlp-receiver)
		RECEIVER="$TARGET_DIR/debug/otlp-receiver"
	fi
	"$RECEIVER" >"$OUT/otlp-receiver.out" 2>&1 &
	RECEIVER_PID=$!
	trap 'kill -TERM "$RECEIVER_PID" 2>/dev/null || true; "$ROOT/scripts/demo-stop.sh" --quiet' EXIT
	for _ in $(seq 300); do
		grep -q '^http://' "$OUT/otlp-receiver.out" 2>/dev/null && break
		kill -0 "$RECEIVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	ENDPOINT="$(grep -m 1 '^http://' "$OUT/otlp-receiver.out" || true)"
	case "$ENDPOINT" in http://127.0.0.1:*) ;; *)
		cat "$OUT/otlp-receiver.out" >&2
		echo "bench: the OTLP receiver did not start" >&2
		exit 1
		;;
	esac
	# The demo provider again, with telemetry.otlp.
	PID="$(cat "$DEMO/provider.pid")"
	kill -TERM "$PID"
	while kill -0 "$PID" 2>/dev/null; do sleep 0.1; done
	CONFIG="$DEMO/provider/config.yaml"
	printf 'telemetry:\n  otlp:\n    endpoint: %s\n    exportInterval: 1s\n    timeout: 1s\n' "$ENDPOINT" >>"$CONFIG"
	"$BIN" serve --config "$CONFIG" >>"$DEMO/provider/provider.log" 2>&1 </dev/null &
	echo $! >"$DEMO/provider.pid"
	HEALTH="$(sed -n 's/^ *healthAddress: "\(.*\)"$/\1/p' "$CONFIG")"
	for _ in $(seq 300); do
		curl -fs "http://$HEALTH/ready" >/dev/null 2>&1 && break
		sleep 0.1
	done
	curl -fs "http://$HEALTH/ready" >/dev/null || { echo "bench: the provider with OTLP did not become ready" >&2; exit 1; }
	echo "bench: OTLP export on (metrics every 1s and traces to $ENDPOINT)"
fi

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
if [ -n "${BENCH_OTLP:-}" ]; then
	kill -TERM "$RECEIVER_PID"
	wait "$RECEIVER_PID" || true
	echo "bench: the OTLP receiver got $(tail -n 1 "$OUT/otlp-receiver.out")"
fi
