#!/usr/bin/env bash
# make demo-rotate: the rotation runbook (docs/rotation-runbook.md), step by
# step, against what `make demo` started: check before rotating, rotate the
# Transit key as an OpenBao operator, watch the provider observe and promote
# the new version, write new data through the socket, verify. Every command
# is printed with `$ ` before its output. Exits non-zero if a step fails or
# the promotion does not happen in time.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# BAO_KMS_DEMO_DIR: where the demo lives (default <repo>/.demo).
DEMO="${BAO_KMS_DEMO_DIR:-$ROOT/.demo}"
KEY="k8s-workload-a-etcd"
MOUNT="transit"
PROMOTION_TIMEOUT_SECS=180

die() { printf 'demo-rotate: %s\n' "$*" >&2; exit 1; }
step() { printf '\n## %s\n\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

[ -f "$DEMO/provider.pid" ] && kill -0 "$(cat "$DEMO/provider.pid")" 2>/dev/null || die "the demo is not running: run 'make demo' first"
# The binaries the demo runs (scripts/demo.sh records their directory).
BIN="$(cat "$DEMO/bin-dir" 2>/dev/null || true)/bao-kms-provider"
[ -x "$BIN" ] || die "$BIN was not built: run 'make demo' first"
CONFIG="$DEMO/provider/config.yaml"
ENCRYPTION_CONFIG="$DEMO/encryption-config.yaml"
SOCKET="$DEMO/run/kms.sock"
HEALTH="$(sed -n 's/^ *healthAddress: "\(.*\)"/\1/p' "$CONFIG")"
METRICS="$(sed -n 's/^ *metricsAddress: "\(.*\)"/\1/p' "$CONFIG")"
# The demo's socket lives outside /run/openbao-kms.
export BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR="$DEMO/run"

# Shown under their installed names.
bao-kms-provider() { "$BIN" "$@"; }
status_summary() {
	curl -s "http://$HEALTH/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
keep = ["keyIDHash", "generation", "rotationState", "activeVersion", "latestVersion", "pendingVersion", "healthy", "reasons"]
print(json.dumps({k: s.get(k) for k in keep}, indent=2))'
}
key_metrics() {
	curl -sf "http://$METRICS/metrics" | grep -E '^openbao_kms_(status_key_id_hash|key_version|rotation_state|rotation_promotions_total)'
}
plan_field() { bao-kms-provider rotation-plan --config "$CONFIG" --output json | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1') or '')"; }

step "Before rotation"
run bao-kms-provider doctor --config "$CONFIG" --encryption-config "$ENCRYPTION_CONFIG" ||
	die "doctor must pass before a rotation"
printf '$ curl -s http://%s/status | jq {…}\n' "$HEALTH"
status_summary
OLD_HASH="$(curl -s "http://$HEALTH/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keyIDHash"])')"
OLD_VERSION="$(plan_field activeTransitVersion)"
[ -n "$OLD_HASH" ] || die "the provider reports no key_id: it is not healthy"
echo "recorded: key_id hash $OLD_HASH, Transit version $OLD_VERSION"

step "Rotate the Transit key (OpenBao operator)"
export BAO_ADDR="https://127.0.0.1:$(cat "$DEMO/openbao.port")"
export BAO_CACERT="$DEMO/openbao/tls/vault-ca.pem"
BAO_TOKEN="$(cat "$DEMO/openbao/root-token")"
export BAO_TOKEN
printf '$ bao write -f %s\n' "$MOUNT/keys/$KEY/rotate"
bao write -f "$MOUNT/keys/$KEY/rotate" >/dev/null
run bao read -field=latest_version "$MOUNT/keys/$KEY"
unset BAO_TOKEN
NEW_VERSION=$((OLD_VERSION + 1))

step "Observe promotion"
deadline=$((SECONDS + PROMOTION_TIMEOUT_SECS))
shown_pending=""
while :; do
	# What the running provider has observed (rotation-plan alone would
	# also show what its next probe is about to record).
	state="$(curl -s "http://$HEALTH/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("rotationState"))')"
	active="$(plan_field activeTransitVersion)"
	[ "$active" = "$NEW_VERSION" ] && break
	if [ "$state" = pending ] && [ -z "$shown_pending" ]; then
		printf '$ curl -s http://%s/status | jq {…}\n' "$HEALTH"
		status_summary
		run bao-kms-provider rotation-plan --config "$CONFIG"
		printf '$ curl -sf http://%s/metrics | grep -E …\n' "$METRICS"
		key_metrics
		shown_pending=1
	fi
	((SECONDS < deadline)) || die "version $NEW_VERSION was not promoted within ${PROMOTION_TIMEOUT_SECS}s"
	sleep 2
done
run bao-kms-provider rotation-plan --config "$CONFIG"
printf '$ curl -sf http://%s/metrics | grep -E …\n' "$METRICS"
key_metrics
printf '$ grep rotation events %s\n' "provider.log"
grep -E '"message":"(rotation\.|key\.promoted)' "$DEMO/provider/provider.log" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    e.pop("ts", None); e.pop("level", None)
    print(json.dumps(e, separators=(",", ":")))'

step "New writes use the new key_id (what the Secrets rewrite does)"
run bao-kms-provider probe --socket "$SOCKET"
NEW_HASH="$(curl -s "http://$HEALTH/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keyIDHash"])')"
[ "$NEW_HASH" != "$OLD_HASH" ] || die "the key_id hash did not change"

step "Verify rotation"
run bao-kms-provider verify-rotation --config "$CONFIG"
run bao-kms-provider doctor --config "$CONFIG" --encryption-config "$ENCRYPTION_CONFIG"
echo
echo "rotated: Transit version $OLD_VERSION -> $NEW_VERSION, key_id hash $OLD_HASH -> $NEW_HASH"
