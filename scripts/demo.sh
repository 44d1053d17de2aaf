#!/usr/bin/env bash
# make demo: a local OpenBao dev server (TLS), a Transit key with the
# least-privilege policy, JWT auth with a pinned local issuer key (the
# recommended production method), bao-kms-provider serving KMS v2 on a Unix socket,
# and a first encrypt/decrypt through that socket the way kube-apiserver
# does it. Everything lives under .demo/ and keeps running in the background;
# `make demo-stop` stops it. Running it again starts from scratch. At the end
# it prints the next commands to try, exactly as they run against it.
#
# Environment: BAO_KMS_DEMO_DIR (where the demo lives, default <repo>/.demo;
# the other demo scripts read it too), DEMO_PROFILE (debug or release),
# BAO_KMS_DEMO_BIN_DIR (run the binaries in this directory instead of
# building them).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEMO="${BAO_KMS_DEMO_DIR:-$ROOT/.demo}"
MOUNT="transit"
KEY="k8s-workload-a-etcd"
POLICY="bao-kms-provider"
PROVIDER_NAME="openbao-kms-workload-a"
JWT_MOUNT="k8s-workload-a-jwt"
JWT_ROLE="openbao-kms-control-plane"
READY_TIMEOUT_SECS=60

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# True when nothing listens on 127.0.0.1:$1.
port_free() {
	python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

# Prints a free loopback port p with p+1 also free (OpenBao dev puts its
# cluster listener on the next port).
free_port_pair() {
	python3 <<'PY'
import socket
for _ in range(200):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    try:
        t = socket.socket(); t.bind(("127.0.0.1", p)); u = socket.socket(); u.bind(("127.0.0.1", p + 1))
        t.close(); u.close(); print(p); break
    except OSError:
        pass
PY
}

# $1 if free, else a free port.
port_or_free() {
	if port_free "$1"; then echo "$1"; else python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; fi
}

# Polls a URL until it answers HTTP 200 or the timeout passes.
wait_http_200() {
	local url="$1" timeout="$2" pid="$3"; shift 3
	local deadline=$((SECONDS + timeout))
	while ((SECONDS < deadline)); do
		kill -0 "$pid" 2>/dev/null || return 1
		[ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" || true)" = 200 ] && return 0
		sleep 0.2
	done
	return 1
}

# --- clean slate ------------------------------------------------------------
"$ROOT/scripts/demo-stop.sh" --quiet
rm -rf "$DEMO/openbao" "$DEMO/provider" "$DEMO/run" "$DEMO/encryption-config.yaml" "$DEMO/profile" "$DEMO/bin-dir"
mkdir -p "$DEMO"
DEMO="$(cd "$DEMO" && pwd)"
chmod 0700 "$DEMO"

command -v bao >/dev/null || die "bao not found: run 'make deps-demo'"
for tool in openssl curl python3; do command -v "$tool" >/dev/null || die "$tool not found: run 'make deps-demo'"; done

# --- build ------------------------------------------------------------------
if [ -n "${BAO_KMS_DEMO_BIN_DIR:-}" ]; then
	BIN_DIR="$(cd "$BAO_KMS_DEMO_BIN_DIR" && pwd)"
	say "using the binaries in $BIN_DIR"
else
	# DEMO_PROFILE=release (used by `make bench`) runs optimised binaries.
	PROFILE="${DEMO_PROFILE:-debug}"
	case "$PROFILE" in
	debug) PROFILE_FLAG=() ;;
	release) PROFILE_FLAG=(--release) ;;
	*) die "DEMO_PROFILE must be debug or release, not $PROFILE" ;;
	esac
	say "building bao-kms-provider and bao-kms-preflight ($PROFILE)"
	(cd "$ROOT" && cargo build --locked --quiet "${PROFILE_FLAG[@]}" -p bao-kms-provider --bin bao-kms-provider -p bao-kms-preflight --bin bao-kms-preflight)
	TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
	case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
	BIN_DIR="$TARGET_DIR/$PROFILE"
fi
BIN="$BIN_DIR/bao-kms-provider"
PREFLIGHT="$BIN_DIR/bao-kms-preflight"
[ -x "$BIN" ] || die "$BIN was not built"
[ -x "$PREFLIGHT" ] || die "$PREFLIGHT was not built"
# scripts/demo-rotate.sh runs the same binaries.
echo "$BIN_DIR" >"$DEMO/bin-dir"

# --- OpenBao dev server (TLS) -------------------------------------------------
BAO_DIR="$DEMO/openbao"
mkdir -p "$BAO_DIR/tls"
chmod 0700 "$BAO_DIR"
if port_free 8200 && port_free 8201; then BAO_PORT=8200; else BAO_PORT="$(free_port_pair)"; fi
[ -n "$BAO_PORT" ] || die "no free port for OpenBao"
ROOT_TOKEN="$(openssl rand -hex 16)"
(umask 077 && printf '%s\n' "$ROOT_TOKEN" >"$BAO_DIR/root-token")
say "starting OpenBao dev server on https://127.0.0.1:$BAO_PORT"
nohup bao server -dev -dev-tls -dev-tls-cert-dir="$BAO_DIR/tls" \
	-dev-listen-address="127.0.0.1:$BAO_PORT" -dev-root-token-id="$ROOT_TOKEN" -dev-no-store-token \
	>"$BAO_DIR/openbao.log" 2>&1 </dev/null &
echo $! >"$DEMO/openbao.pid"
echo "$BAO_PORT" >"$DEMO/openbao.port"

export BAO_ADDR="https://127.0.0.1:$BAO_PORT"
export BAO_CACERT="$BAO_DIR/tls/vault-ca.pem"
export BAO_TOKEN="$ROOT_TOKEN"
deadline=$((SECONDS + 30))
until [ -f "$BAO_CACERT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$BAO_CACERT" "$BAO_ADDR/v1/sys/health" || true)" = 200 ]; do
	if ! kill -0 "$(cat "$DEMO/openbao.pid")" 2>/dev/null || ((SECONDS >= deadline)); then
		tail -n 20 "$BAO_DIR/openbao.log" >&2
		die "OpenBao did not become healthy"
	fi
	sleep 0.2
done

# --- Transit key, policy, token ------------------------------------------------
say "enabling Transit at $MOUNT/, creating aes256-gcm96 key $KEY"
bao secrets enable -path="$MOUNT" transit >/dev/null
bao write -f "$MOUNT/keys/$KEY" type=aes256-gcm96 >/dev/null
bao write "$MOUNT/config/keys" disable_upsert=true >/dev/null

# Least privilege: read key metadata, encrypt and decrypt with this key,
# read the mount's upsert setting, check own capabilities, renew and look up
# own token, read the mount accessor for identity pinning. Never rotate,
# export, backup, or write key or mount config.
cat >"$BAO_DIR/policy.hcl" <<EOF
path "$MOUNT/keys/$KEY" {
  capabilities = ["read"]
}
path "$MOUNT/encrypt/$KEY" {
  capabilities = ["update"]
}
path "$MOUNT/decrypt/$KEY" {
  capabilities = ["update"]
}
path "$MOUNT/config/keys" {
  capabilities = ["read"]
}
path "sys/capabilities-self" {
  capabilities = ["update"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "sys/internal/ui/mounts/$MOUNT" {
  capabilities = ["read"]
}
EOF
say "writing policy $POLICY"
bao policy write "$POLICY" "$BAO_DIR/policy.hcl" >/dev/null
PROVIDER_DIR="$DEMO/provider"
mkdir -p "$PROVIDER_DIR/state" "$PROVIDER_DIR/credentials" "$DEMO/run" "$DEMO/issuer"
chmod 0700 "$PROVIDER_DIR" "$PROVIDER_DIR/state" "$DEMO/issuer"
chmod 0750 "$PROVIDER_DIR/credentials"
# Socket directory as on a node: setgid, so the socket inherits the socket group.
chmod 2750 "$DEMO/run"

# JWT auth with a pinned public key: a local signing key stands in for the
# external issuer (in production: an OIDC/JWT issuer outside the cluster).
say "enabling JWT auth at auth/$JWT_MOUNT with a pinned issuer key, role $JWT_ROLE"
(umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DEMO/issuer/issuer.key" 2>/dev/null)
openssl pkey -in "$DEMO/issuer/issuer.key" -pubout -out "$DEMO/issuer/issuer.pub.pem" 2>/dev/null
bao auth enable -path="$JWT_MOUNT" jwt >/dev/null
bao write "auth/$JWT_MOUNT/config" \
	jwt_validation_pubkeys=@"$DEMO/issuer/issuer.pub.pem" \
	bound_issuer="https://issuer.demo.invalid" >/dev/null
bao write "auth/$JWT_MOUNT/role/$JWT_ROLE" \
	role_type=jwt \
	bound_audiences=openbao \
	user_claim=sub \
	bound_subject="system:openbao-kms:control-plane" \
	token_policies="$POLICY" \
	token_no_default_policy=true \
	token_ttl=30m \
	token_max_ttl=1h >/dev/null
"$ROOT/scripts/demo-mint-jwt.sh" >/dev/null
JWT_FILE="$PROVIDER_DIR/credentials/identity.jwt"
unset BAO_TOKEN

# --- provider config -----------------------------------------------------------
SOCKET="$DEMO/run/kms.sock"
HEALTH_PORT="$(port_or_free 8082)"
METRICS_PORT="$(port_or_free 8081)"
[ "$HEALTH_PORT" != "$METRICS_PORT" ] || METRICS_PORT="$(port_or_free 0)"
KEY_LINEAGE_ID="$(openssl rand -hex 16)"
CONFIG="$PROVIDER_DIR/config.yaml"
(umask 027 && cat >"$CONFIG" <<EOF
configVersion: v1alpha1
server:
  socketPath: $SOCKET
  socketMode: "0660"
  socketGroup: "$(id -g)"
  metricsAddress: "127.0.0.1:$METRICS_PORT"
  healthAddress: "127.0.0.1:$HEALTH_PORT"
openbao:
  address: $BAO_ADDR
  caCertFile: $BAO_CACERT
  tlsServerName: localhost
  timeout: 2s
  instanceId: bao-demo-a
auth:
  method: jwt
  loginBeforeTokenExpiry: 5m
  tokenRenewalIncrement: 30m
  jwt:
    mountPath: auth/$JWT_MOUNT
    role: $JWT_ROLE
    jwtFile: $JWT_FILE
    expectedIssuer: https://issuer.demo.invalid
    expectedAudience: [openbao]
    expectedSubject: "system:openbao-kms:control-plane"
transit:
  mountPath: $MOUNT
  keyName: $KEY
  keyIdScope:
    providerName: $PROVIDER_NAME
    clusterId: workload-a
    transitMountId: transit-demo-primary
    keyLineageId: "$KEY_LINEAGE_ID"
bootstrap:
  graceTimeout: 30s
  retryInterval: 1s
status:
  probeInterval: 5s
  deepProbeInterval: 1m
  statusMaxStaleness: 1m
# Short windows so that scripts/demo-rotate.sh (the rotation runbook) runs
# in about a minute; production keeps the defaults (3 observations, 2m).
rotation:
  requireStableObservationCount: 3
  activationDelay: 30s
state:
  path: $PROVIDER_DIR/state/key-registry.json
logging:
  level: info
  format: json
EOF
)
chmod 0640 "$CONFIG"

# What kube-apiserver would load to use this provider for Secrets.
cat >"$DEMO/encryption-config.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - kms:
          apiVersion: v2
          name: $PROVIDER_NAME
          endpoint: unix://$SOCKET
          timeout: 3s
      - identity: {}
EOF

# --- provider ------------------------------------------------------------------
say "starting bao-kms-provider (socket $SOCKET)"
BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR="$DEMO/run" nohup "$BIN" serve --config "$CONFIG" \
	>"$PROVIDER_DIR/provider.log" 2>&1 </dev/null &
echo $! >"$DEMO/provider.pid"
if ! wait_http_200 "http://127.0.0.1:$HEALTH_PORT/ready" "$READY_TIMEOUT_SECS" "$(cat "$DEMO/provider.pid")"; then
	echo "--- provider log (last 30 lines) ---" >&2
	tail -n 30 "$PROVIDER_DIR/provider.log" >&2
	die "the provider did not become ready within ${READY_TIMEOUT_SECS}s"
fi

# --- first round trip, as kube-apiserver does it ------------------------------
say "first encrypt/decrypt through the socket (Status -> Encrypt -> Decrypt)"
if ! "$BIN" probe --socket "$SOCKET" --output text; then
	echo "--- provider log (last 30 lines) ---" >&2
	tail -n 30 "$PROVIDER_DIR/provider.log" >&2
	die "the round trip through the socket failed"
fi

# --- node preflight, as a bootstrap hook runs it ---------------------------------
say "node preflight: configuration, EncryptionConfiguration, socket, /ready, /status"
if ! "$PREFLIGHT" node --config "$CONFIG" --encryption-config "$DEMO/encryption-config.yaml" \
	--allowed-socket-dir "$DEMO/run"; then
	die "node preflight failed"
fi

curl -s "http://127.0.0.1:$HEALTH_PORT/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print()
print("key_id:         ", s.get("keyID"))
print("key_id hash:    ", s.get("keyIDHash"))
print("Transit version:", s.get("activeVersion"))
print("generation:     ", s.get("generation"))
'

cat <<EOF

Running in the background:
  OpenBao        $BAO_ADDR  (CA $BAO_CACERT, log $BAO_DIR/openbao.log)
  provider       socket $SOCKET
                 http://127.0.0.1:$HEALTH_PORT/ready  /status   http://127.0.0.1:$METRICS_PORT/metrics
                 config $CONFIG, log $PROVIDER_DIR/provider.log
                 auth: JWT (auth/$JWT_MOUNT, role $JWT_ROLE), JWT file $JWT_FILE
                 rotate the JWT as an external issuer would: scripts/demo-mint-jwt.sh
  kube-apiserver EncryptionConfiguration: $DEMO/encryption-config.yaml

Stop everything with: make demo-stop
EOF

# --- next commands -------------------------------------------------------------
# Paths inside the repository are shown relative to it; every line runs as
# printed from there (tests/system/demo.rs runs each one).
shown() {
	local p="$1"
	case "$p" in "$ROOT"/*) p="${p#"$ROOT"/}" ;; esac
	printf '%q' "$p"
}
exports="PATH=$(printf '%q' "$BIN_DIR"):\$PATH BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR=$(printf '%q' "$DEMO/run")"
[ -z "${BAO_KMS_DEMO_DIR:-}" ] || exports="$exports BAO_KMS_DEMO_DIR=$(printf '%q' "$DEMO")"
cat <<EOF

Try next, in a shell in $ROOT:
  export $exports
  bao-kms-provider doctor --config $(shown "$CONFIG") --encryption-config $(shown "$DEMO/encryption-config.yaml")
  bao-kms-provider rotation-plan --config $(shown "$CONFIG")
  bao-kms-provider probe --socket $(shown "$SOCKET")
  make demo-rotate
(the export puts the demo's binaries first on PATH and allows its socket
directory, which lies outside /run/openbao-kms)
EOF
