#!/usr/bin/env bash
# make demo-dr: the disaster-recovery runbook (docs/disaster-recovery.md),
# procedure by procedure, against what `make demo` started (run
# `make demo-rotate` first: most procedures matter after a rotation), plus a
# raft OpenBao for snapshot and restore, a second raft OpenBao as the "new
# cluster", and a real etcd (Debian's etcd-server) for the etcd + OpenBao
# restore. Every command is printed with `$ ` before its output and its exit
# code when it is not 0; the doc pastes this output.
#
# What stands in for kube-apiserver: tests/src/bin/kms-envelope (seal: Status
# then Encrypt of a fresh DEK seed, printing the etcd value
# k8s:enc:kms:v2:<provider>:<EncryptedObject>; open: the Decrypt of that
# value). Tokens, unseal keys and secret IDs are kept in files (mode 0600)
# and never printed.
#
# Environment: BAO_KMS_DEMO_DIR (as the other demo scripts). Everything the
# drill starts lives in $BAO_KMS_DEMO_DIR/dr and is stopped at the end.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEMO="${BAO_KMS_DEMO_DIR:-$ROOT/.demo}"
DR="$DEMO/dr"
KEY="k8s-workload-a-etcd"
MOUNT="transit"
PROVIDER_NAME="openbao-kms-workload-a"
READY_TIMEOUT_SECS=60

die() { printf 'demo-dr: %s\n' "$*" >&2; exit 1; }
step() { printf '\n## %s\n\n' "$*"; }
note() { printf '# %s\n' "$*"; }
# Prints the command (paths under the demo shown as <demo>), runs it, and
# prints its exit code when it is not 0. Never aborts the drill.
run() {
	printf '$ %s\n' "$(printf '%s ' "$@" | sed "s#$DEMO#<demo>#g; s#$ROOT#<repo>#g; s# \$##")"
	"$@" 2>&1 | sed "s#$DEMO#<demo>#g"
	local rc=${PIPESTATUS[0]}
	[ "$rc" -eq 0 ] || printf '(exit %d)\n' "$rc"
	return 0
}
# Like run, but the drill stops when the command fails.
must() {
	printf '$ %s\n' "$(printf '%s ' "$@" | sed "s#$DEMO#<demo>#g; s# \$##")"
	"$@" 2>&1 | sed "s#$DEMO#<demo>#g"
	local rc=${PIPESTATUS[0]}
	[ "$rc" -eq 0 ] || die "step failed (exit $rc): $*"
}

{ [ -f "$DEMO/provider.pid" ] && kill -0 "$(cat "$DEMO/provider.pid")" 2>/dev/null; } || die "the demo is not running: run 'make demo' (and 'make demo-rotate') first"
BIN_DIR="$(cat "$DEMO/bin-dir")"
BIN="$BIN_DIR/bao-kms-provider"
ENVELOPE="$BIN_DIR/kms-envelope"
if [ ! -x "$ENVELOPE" ]; then
	profile=()
	[ "$(basename "$BIN_DIR")" = release ] && profile=(--release)
	(cd "$ROOT" && cargo build --quiet -p bao-kms-system-tests --bin kms-envelope --target-dir "$(dirname "$BIN_DIR")" "${profile[@]}") ||
		die "cannot build kms-envelope"
fi
command -v etcd >/dev/null || die "etcd is not installed (make deps installs Debian's etcd-server)"
export BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR="$DEMO/run"

# Shown under their installed names.
bao-kms-provider() { "$BIN" "$@"; }
kms-envelope() { "$ENVELOPE" "$@"; }

CONFIG="$DEMO/provider/config.yaml"
STATE_DIR="$DEMO/provider/state"
STATE="$STATE_DIR/key-registry.json"
SOCKET="$DEMO/run/kms.sock"
HEALTH="$(sed -n 's/^ *healthAddress: "\(.*\)"/\1/p' "$CONFIG")"
DEMO_BAO_ADDR="https://127.0.0.1:$(cat "$DEMO/openbao.port")"
DEMO_BAO_CACERT="$DEMO/openbao/tls/vault-ca.pem"

rm -rf "$DR"
mkdir -p "$DR"
chmod 0700 "$DR"
cleanup() {
	for pidfile in "$DR"/*.pid; do
		[ -f "$pidfile" ] || continue
		kill "$(cat "$pidfile")" 2>/dev/null || true
	done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A free port p with p+1 free too (OpenBao's cluster listener).
free_port_pair() {
	python3 -c '
import socket
for _ in range(200):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    try:
        t = socket.socket(); t.bind(("127.0.0.1", p)); u = socket.socket(); u.bind(("127.0.0.1", p + 1)); t.close(); u.close(); print(p); break
    except OSError:
        pass'
}

wait_ready() { # url pid
	local deadline=$((SECONDS + READY_TIMEOUT_SECS))
	until [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ]; do
		kill -0 "$2" 2>/dev/null || return 1
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# start_provider <config> <pidfile> <log>: serve in the background until /ready.
start_provider() {
	local health
	health="$(sed -n 's/^ *healthAddress: "\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$1")"
	printf '$ bao-kms-provider serve --config %s &\n' "${1/#$DEMO/<demo>}"
	nohup "$BIN" serve --config "$1" >"$3" 2>&1 </dev/null &
	echo $! >"$2"
	if wait_ready "http://$health/ready" "$(cat "$2")"; then
		echo "/ready answers 200"
	else
		tail -n 5 "$3"
		die "the provider did not become ready"
	fi
}
stop_provider() { # pidfile
	local pid
	pid="$(cat "$1")"
	printf '$ systemctl stop bao-kms-provider   # the demo: kill %s\n' "$pid"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rm -f "$1"
}
# serve_refused <config>: a start that must fail closed; shows the exit code
# and the event that says why.
serve_refused() {
	printf '$ bao-kms-provider serve --config %s\n' "${1/#$DEMO/<demo>}"
	local log="$DR/refused.log" rc
	timeout 60 "$BIN" serve --config "$1" >"$log" 2>&1 </dev/null
	rc=$?
	grep -E '"level":"error"|fail_closed|"reason"' "$log" | tail -n 2 | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        e = json.loads(line)
    except ValueError:
        print(line.rstrip()); continue
    e.pop("ts", None)
    print(json.dumps(e, separators=(",", ":")))' | sed "s#$DEMO#<demo>#g"
	printf '(exit %d)\n' "$rc"
}
status_hash() { curl -s "http://$1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keyIDHash"])'; }
show_status() {
	printf '$ curl -s http://%s/status | jq {keyIDHash, generation, activeVersion, healthy, reasons}\n' "$1"
	curl -s "http://$1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(json.dumps({k: s.get(k) for k in ["keyIDHash", "generation", "activeVersion", "healthy", "reasons"]}))'
}

as_operator() { # addr cacert tokenfile cmd...
	local addr="$1" ca="$2" tok="$3"
	shift 3
	BAO_ADDR="$addr" BAO_CACERT="$ca" BAO_TOKEN="$(cat "$tok")" "$@"
}

###############################################################################
step "0. The backup set"
note "Record with every backup set (DR runbook, Backup Requirements)."
run bao-kms-provider version
run bao-kms-provider verify-key --config "$CONFIG"
show_status "$HEALTH"
BACKUP="$DR/backup"
must mkdir -m 0700 "$BACKUP"
must cp -p "$CONFIG" "$STATE" "$STATE.checkpoint" "$STATE.openbao-identity" "$BACKUP/"
(cd "$BACKUP" && run sha256sum config.yaml key-registry.json key-registry.json.checkpoint key-registry.json.openbao-identity)
note "an object as kube-apiserver stores it, sealed with the active key_id:"
printf '$ kms-envelope seal <demo>/run/kms.sock %s <seed file> > <demo>/dr/secret-a.etcd\n' "$PROVIDER_NAME"
kms-envelope seal "$SOCKET" "$PROVIDER_NAME" "$DR/secret-a.seed" >"$DR/secret-a.etcd" || die "seal failed"
printf '$ head -c 40 <demo>/dr/secret-a.etcd | base64 -d | head -c 30\n'
base64 -d <"$DR/secret-a.etcd" | head -c 30
echo

###############################################################################
step "1. State restore: the state file is lost, its checkpoint survives"
stop_provider "$DEMO/provider.pid"
run rm "$STATE"
run bao-kms-provider verify-key --config "$CONFIG"
serve_refused "$CONFIG"
note "restore the state file and its checkpoint together, from the backup set"
must cp -p "$BACKUP/key-registry.json" "$BACKUP/key-registry.json.checkpoint" "$STATE_DIR/"
run bao-kms-provider verify-key --config "$CONFIG"
run bao-kms-provider doctor --config "$CONFIG" --encryption-config "$DEMO/encryption-config.yaml"
start_provider "$CONFIG" "$DEMO/provider.pid" "$DEMO/provider/provider.log"
show_status "$HEALTH"
printf '$ kms-envelope open <demo>/run/kms.sock <seed file> < <demo>/dr/secret-a.etcd\n'
kms-envelope open "$SOCKET" "$DR/secret-a.seed" <"$DR/secret-a.etcd" 2>&1

###############################################################################
step "2. State loss: state file and checkpoint both missing after a rotation"
stop_provider "$DEMO/provider.pid"
run rm "$STATE" "$STATE.checkpoint"
run bao-kms-provider verify-key --config "$CONFIG"
run bao-kms-provider rotation-plan --config "$CONFIG"
serve_refused "$CONFIG"
note "no hand-made state: restore both files from the backup set (or a known-good peer)"
must cp -p "$BACKUP/key-registry.json" "$BACKUP/key-registry.json.checkpoint" "$STATE_DIR/"
run bao-kms-provider verify-key --config "$CONFIG"
start_provider "$CONFIG" "$DEMO/provider.pid" "$DEMO/provider/provider.log"
show_status "$HEALTH"

###############################################################################
step "3. Control-plane node replacement"
NODE2="$DR/node2"
mkdir -p "$NODE2/state" "$NODE2/run"
chmod 0700 "$NODE2" "$NODE2/state"
chmod 2750 "$NODE2/run"
H2="127.0.0.1:$(free_port)"
M2="127.0.0.1:$(free_port)"
note "restore config.yaml from configuration management; only host paths and ports differ on this node"
sed -e "s#$DEMO/run/kms.sock#$NODE2/run/kms.sock#" \
	-e "s#^\( *healthAddress:\).*#\1 \"$H2\"#" -e "s#^\( *metricsAddress:\).*#\1 \"$M2\"#" \
	-e "s#$STATE#$NODE2/state/key-registry.json#" "$BACKUP/config.yaml" >"$NODE2/config.yaml"
chmod 0640 "$NODE2/config.yaml"
run diff "$BACKUP/config.yaml" "$NODE2/config.yaml"
note "restore the registry state and checkpoint from the replaced node's backup (or a known-good peer)"
must cp -p "$BACKUP/key-registry.json" "$BACKUP/key-registry.json.checkpoint" "$NODE2/state/"
run ls -ld "$NODE2/run"
export BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR="$NODE2/run"
run bao-kms-provider doctor --config "$NODE2/config.yaml"
start_provider "$NODE2/config.yaml" "$DR/node2.pid" "$NODE2/provider.log"
show_status "$H2"
show_status "$HEALTH"
[ "$(status_hash "$H2")" = "$(status_hash "$HEALTH")" ] && echo "key_id hash matches the existing node" || echo "key_id hash DIFFERS from the existing node"
printf '$ kms-envelope open <demo>/dr/node2/run/kms.sock <seed file> < <demo>/dr/secret-a.etcd\n'
kms-envelope open "$NODE2/run/kms.sock" "$DR/secret-a.seed" <"$DR/secret-a.etcd" 2>&1
stop_provider "$DR/node2.pid"
export BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR="$DEMO/run"

###############################################################################
step "4. Auth issuer loss (JWT)"
JWT_FILE="$(sed -n 's/^ *jwtFile: //p' "$CONFIG")"
JWT_MOUNT="$(sed -n 's#^ *mountPath: auth/##p' "$CONFIG")"
note "the issuer is gone: no fresh JWT reaches the node (the demo moves the file away)"
run mv "$JWT_FILE" "$DR/identity.jwt.lost"
note "the token the provider holds keeps working until it expires:"
run bao-kms-provider probe --socket "$SOCKET"
note "but a fresh login is impossible:"
run bao-kms-provider doctor --config "$CONFIG"
note "recovery: a replacement issuer key, pinned in OpenBao's JWT auth by the OpenBao operator"
must openssl genrsa -out "$DR/replacement-issuer.key" 2048
must openssl rsa -in "$DR/replacement-issuer.key" -pubout -out "$DR/replacement-issuer.pub.pem"
printf '$ bao write auth/%s/config jwt_validation_pubkeys=@replacement-issuer.pub.pem bound_issuer=https://issuer.demo.invalid\n' "$JWT_MOUNT"
as_operator "$DEMO_BAO_ADDR" "$DEMO_BAO_CACERT" "$DEMO/openbao/root-token" \
	bao write "auth/$JWT_MOUNT/config" "jwt_validation_pubkeys=@$DR/replacement-issuer.pub.pem" bound_issuer=https://issuer.demo.invalid
note "issue a JWT through the emergency process (the demo's minting script with the replacement key)"
cp -p "$DEMO/issuer/issuer.key" "$DR/original-issuer.key"
cp "$DR/replacement-issuer.key" "$DEMO/issuer/issuer.key"
run "$ROOT/scripts/demo-mint-jwt.sh" 3600
run bao-kms-provider doctor --config "$CONFIG"
note "the original issuer is back: pin its key again"
cp -p "$DR/original-issuer.key" "$DEMO/issuer/issuer.key"
as_operator "$DEMO_BAO_ADDR" "$DEMO_BAO_CACERT" "$DEMO/openbao/root-token" \
	bao write "auth/$JWT_MOUNT/config" "jwt_validation_pubkeys=@$DEMO/issuer/issuer.pub.pem" bound_issuer=https://issuer.demo.invalid >/dev/null
"$ROOT/scripts/demo-mint-jwt.sh" >/dev/null

###############################################################################
step "5. A raft OpenBao for snapshots, set up by bao-kms-provider init"
RAFT="$DR/raft-a"
mkdir -p "$RAFT/data" "$RAFT/tls"
# One CA and one serving certificate for both raft servers (127.0.0.1).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=dr-ca -keyout "$DR/ca.key" -out "$DR/ca.pem" \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$DR/server.key" -out "$DR/server.csr" >/dev/null 2>&1
openssl x509 -req -in "$DR/server.csr" -CA "$DR/ca.pem" -CAkey "$DR/ca.key" -CAcreateserial -days 2 -out "$DR/server.pem" \
	-extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n') >/dev/null 2>&1
# raft_server <dir> <port>: start an OpenBao with raft storage in dir.
raft_server() {
	local dir="$1" port="$2"
	cat >"$dir/server.hcl" <<EOF
storage "raft" {
  path    = "$dir/data"
  node_id = "$(basename "$dir")"
}
listener "tcp" {
  address       = "127.0.0.1:$port"
  cluster_address = "127.0.0.1:$((port + 1))"
  tls_cert_file = "$DR/server.pem"
  tls_key_file  = "$DR/server.key"
}
api_addr      = "https://127.0.0.1:$port"
cluster_addr  = "https://127.0.0.1:$((port + 1))"
disable_mlock = true
ui            = false
EOF
	nohup bao server -config="$dir/server.hcl" >"$dir/openbao.log" 2>&1 </dev/null &
	echo $! >"$DR/$(basename "$dir").pid"
	local deadline=$((SECONDS + 30))
	until [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$DR/ca.pem" "https://127.0.0.1:$port/v1/sys/health" || true)" = 501 ]; do
		((SECONDS < deadline)) || { tail -n 20 "$dir/openbao.log"; die "raft OpenBao did not start"; }
		sleep 0.2
	done
}
# init_unseal <dir> <addr>: operator init (1 share), unseal; keys in files.
init_unseal() {
	BAO_ADDR="$2" BAO_CACERT="$DR/ca.pem" bao operator init -key-shares=1 -key-threshold=1 -format=json >"$1/init.json" || die "operator init"
	chmod 0600 "$1/init.json"
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$1/init.json" >"$1/root-token"
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$1/init.json" >"$1/unseal-key"
	chmod 0600 "$1/root-token" "$1/unseal-key"
	BAO_ADDR="$2" BAO_CACERT="$DR/ca.pem" bao operator unseal "$(cat "$1/unseal-key")" >/dev/null || die "unseal"
	wait_active "$2"
}
wait_active() {
	local deadline=$((SECONDS + 30))
	until [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$DR/ca.pem" "$1/v1/sys/health" || true)" = 200 ]; do
		((SECONDS < deadline)) || die "OpenBao at $1 did not become active"
		sleep 0.2
	done
}
PORT_A="$(free_port_pair)"
RAFT_A_ADDR="https://127.0.0.1:$PORT_A"
raft_server "$RAFT" "$PORT_A"
init_unseal "$RAFT" "$RAFT_A_ADDR"
echo "raft OpenBao A at $RAFT_A_ADDR: initialised and unsealed (root token and unseal key in files, not shown)"

RNODE="$DR/raft-node"
mkdir -p "$RNODE/run" "$RNODE/state" "$RNODE/credentials" "$RNODE/tls"
chmod 2750 "$RNODE/run"
chmod 0700 "$RNODE/state"
chmod 0750 "$RNODE/credentials"
cp "$DR/ca.pem" "$RNODE/tls/ca.pem"
RH="127.0.0.1:$(free_port)"
cat >"$RNODE/values.yaml" <<EOF
configVersion: v1alpha1
server:
  socketPath: $RNODE/run/kms.sock
  socketGroup: "$(id -g)"
  healthAddress: $RH
  metricsAddress: ""
openbao:
  address: $RAFT_A_ADDR
  caCertFile: $RNODE/tls/ca.pem
  tlsServerName: localhost
  instanceId: bao-dr-a
auth:
  method: token
  token:
    tokenFile: $RNODE/credentials/token
bootstrap:
  retryInterval: 250ms
state:
  path: $RNODE/state/key-registry.json
transit:
  mountPath: $MOUNT
  keyName: $KEY
  keyIdScope:
    providerName: $PROVIDER_NAME
    clusterId: workload-dr
    transitMountId: transit-dr-primary
EOF
export BAO_KMS_PROVIDER_ALLOWED_SOCKET_DIR="$RNODE/run"
run bao-kms-provider init --values "$RNODE/values.yaml" --out "$RNODE/out" --new-key
mkdir -m 0700 "$RNODE/handed-out"
printf '$ BAO_KMS_CREDENTIALS_OUT=<dir> ./openbao-setup.sh\n'
BAO_ADDR="$RAFT_A_ADDR" BAO_CACERT="$DR/ca.pem" BAO_TOKEN="$(cat "$RAFT/root-token")" BAO_KMS_CREDENTIALS_OUT="$RNODE/handed-out" \
	"$RNODE/out/openbao-setup.sh" 2>&1 | sed "s#$DEMO#<demo>#g"
install -m 0600 "$RNODE/handed-out/token" "$RNODE/credentials/token"
RCONFIG="$RNODE/out/config.yaml"
start_provider "$RCONFIG" "$DR/raft-node.pid" "$RNODE/provider.log"
show_status "$RH"
printf '$ kms-envelope seal <demo>/dr/raft-node/run/kms.sock %s <seed file> > <demo>/dr/secret-b.etcd\n' "$PROVIDER_NAME"
kms-envelope seal "$RNODE/run/kms.sock" "$PROVIDER_NAME" "$DR/secret-b.seed" >"$DR/secret-b.etcd" || die "seal failed"

###############################################################################
step "6. Backups: OpenBao raft snapshot, registry state, etcd"
note "etcd as kube-apiserver's store (plain HTTP on loopback in the drill); the sealed object goes in as kube-apiserver writes it"
ETCD="$DR/etcd"
mkdir -p "$ETCD"
ETCD_PORT="$(free_port)"
ETCD_PEER="$(free_port)"
start_etcd() {
	nohup etcd --name dr --data-dir "$ETCD/data" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-cluster "dr=http://127.0.0.1:$ETCD_PEER" \
		>"$ETCD/etcd.log" 2>&1 </dev/null &
	echo $! >"$DR/etcd.pid"
	local deadline=$((SECONDS + 30))
	until curl -sf "http://127.0.0.1:$ETCD_PORT/health" >/dev/null; do
		((SECONDS < deadline)) || { tail -n 20 "$ETCD/etcd.log"; die "etcd did not start"; }
		sleep 0.2
	done
}
stop_etcd() { kill "$(cat "$DR/etcd.pid")"; while kill -0 "$(cat "$DR/etcd.pid")" 2>/dev/null; do sleep 0.1; done; rm -f "$DR/etcd.pid"; }
ETCD_KEY="/registry/secrets/default/dr-secret-b"
etcd_put() { # key value(base64 already)
	curl -s "http://127.0.0.1:$ETCD_PORT/v3/kv/put" -d "{\"key\":\"$(printf %s "$1" | base64 -w0)\",\"value\":\"$2\"}" >/dev/null
}
etcd_get() { # key -> base64 value or nothing
	curl -s "http://127.0.0.1:$ETCD_PORT/v3/kv/range" -d "{\"key\":\"$(printf %s "$1" | base64 -w0)\"}" |
		python3 -c 'import json,sys; kvs=json.load(sys.stdin).get("kvs") or []; print(kvs[0]["value"] if kvs else "")'
}
start_etcd
printf '$ etcdctl put %s <sealed value>   # the drill: etcd v3 JSON gateway\n' "$ETCD_KEY"
etcd_put "$ETCD_KEY" "$(cat "$DR/secret-b.etcd")"
printf '$ etcdctl get %s --print-value-only | head -c 30\n' "$ETCD_KEY"
etcd_get "$ETCD_KEY" | base64 -d | head -c 30
echo
printf '$ BAO_ADDR=%s bao operator raft snapshot save <demo>/dr/openbao-a.snap\n' "$RAFT_A_ADDR"
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao operator raft snapshot save "$DR/openbao-a.snap" 2>&1
run ls -l "$DR/openbao-a.snap"
printf '$ BAO_ADDR=%s bao read -format=json transit/keys/%s | jq .data.keys\n' "$RAFT_A_ADDR" "$KEY"
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao read -format=json "$MOUNT/keys/$KEY" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["data"]["keys"]))'
RBACKUP="$DR/raft-node-backup"
mkdir -m 0700 "$RBACKUP"
must cp -p "$RNODE/state/key-registry.json" "$RNODE/state/key-registry.json.checkpoint" "$RNODE/state/key-registry.json.openbao-identity" "$RBACKUP/"
note "etcd backup: an offline copy of its data directory (the drill's etcd has no etcdctl; etcdctl snapshot save on a real control plane)"
stop_etcd
run cp -a "$ETCD/data" "$DR/etcd-backup"
start_etcd
note "Transit's own backup endpoint is closed for the provider's key profile (allow_plaintext_backup=false, exportable=false): the storage snapshot is the key backup"
printf '$ bao read transit/backup/%s\n' "$KEY"
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao read "$MOUNT/backup/$KEY" 2>&1 | sed "s#$DEMO#<demo>#g"

###############################################################################
step "7. Disaster: the Transit key is deleted and recreated with the same name, the object lost from etcd"
stop_provider "$DR/raft-node.pid"
printf '$ bao write %s/keys/%s/config deletion_allowed=true && bao delete %s/keys/%s\n' "$MOUNT" "$KEY" "$MOUNT" "$KEY"
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao write "$MOUNT/keys/$KEY/config" deletion_allowed=true >/dev/null
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao delete "$MOUNT/keys/$KEY" 2>&1
printf '$ bao write -f %s/keys/%s type=aes256-gcm96\n' "$MOUNT" "$KEY"
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao write -f "$MOUNT/keys/$KEY" type=aes256-gcm96 2>&1 | sed -n '1,3p'
printf '$ etcdctl del %s\n' "$ETCD_KEY"
curl -s "http://127.0.0.1:$ETCD_PORT/v3/kv/deleterange" -d "{\"key\":\"$(printf %s "$ETCD_KEY" | base64 -w0)\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("deleted"))'
note "the provider's checks see a new key lineage, not the pinned one:"
run bao-kms-provider verify-key --config "$RCONFIG"
note "repin accepts a moved OpenBao, never a new key lineage:"
run bao-kms-provider repin --config "$RCONFIG"
serve_refused "$RCONFIG"

###############################################################################
step "8. Restore etcd and OpenBao together (same OpenBao cluster)"
note "1-2. a compatible pair: the snapshot and the etcd copy taken together in step 6; OpenBao first"
printf '$ BAO_ADDR=%s bao operator raft snapshot restore -force <demo>/dr/openbao-a.snap\n' "$RAFT_A_ADDR"
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao operator raft snapshot restore -force "$DR/openbao-a.snap" 2>&1
wait_active "$RAFT_A_ADDR"
note "OpenBao unsealed and healthy, auth and policy in place:"
printf '$ bao status -format=json | jq {initialized, sealed, storage_type}\n'
BAO_ADDR="$RAFT_A_ADDR" BAO_CACERT="$DR/ca.pem" bao status -format=json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s.get(k) for k in ["initialized", "sealed", "storage_type"]}))'
printf '$ bao read -format=json auth/token/roles/openbao-kms-workload-dr | jq .data.allowed_policies\n'
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao read -format=json auth/token/roles/openbao-kms-workload-dr | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["data"]["allowed_policies"]))'
printf '$ bao policy read openbao-kms-workload-dr | diff - openbao-policy.hcl && echo policy unchanged\n'
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao policy read openbao-kms-workload-dr | diff - "$RNODE/out/openbao-policy.hcl" && echo "policy unchanged"
note "3. the versions the etcd copy needs exist with their original creation times:"
printf '$ bao read -format=json transit/keys/%s | jq .data.keys\n' "$KEY"
as_operator "$RAFT_A_ADDR" "$DR/ca.pem" "$RAFT/root-token" bao read -format=json "$MOUNT/keys/$KEY" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["data"]["keys"]))'
run bao-kms-provider key-snapshots --config "$RCONFIG"
run bao-kms-provider verify-key --config "$RCONFIG"
run bao-kms-provider doctor --config "$RCONFIG"
note "4. restore etcd"
stop_etcd
run rm -rf "$ETCD/data"
run cp -a "$DR/etcd-backup" "$ETCD/data"
start_etcd
note "5. start the plugin"
start_provider "$RCONFIG" "$DR/raft-node.pid" "$RNODE/provider.log"
show_status "$RH"
note "6-7. the API server's read (simulated: the value from etcd, the Decrypt kube-apiserver sends)"
printf '$ etcdctl get %s --print-value-only | kms-envelope open <demo>/dr/raft-node/run/kms.sock <seed file>\n' "$ETCD_KEY"
etcd_get "$ETCD_KEY" | kms-envelope open "$RNODE/run/kms.sock" "$DR/secret-b.seed" 2>&1

###############################################################################
step "9. Restore OpenBao into a new cluster, then repin"
RAFT_B="$DR/raft-b"
mkdir -p "$RAFT_B/data"
PORT_B="$(free_port_pair)"
RAFT_B_ADDR="https://127.0.0.1:$PORT_B"
raft_server "$RAFT_B" "$PORT_B"
init_unseal "$RAFT_B" "$RAFT_B_ADDR"
echo "raft OpenBao B (new cluster) at $RAFT_B_ADDR: initialised and unsealed"
printf '$ BAO_ADDR=%s bao operator raft snapshot restore -force <demo>/dr/openbao-a.snap\n' "$RAFT_B_ADDR"
as_operator "$RAFT_B_ADDR" "$DR/ca.pem" "$RAFT_B/root-token" bao operator raft snapshot restore -force "$DR/openbao-a.snap" 2>&1
# The restored storage is sealed with cluster A's keys: wait until B says so.
for _ in $(seq 50); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$DR/ca.pem" "$RAFT_B_ADDR/v1/sys/health" || true)" = 503 ] && break
	sleep 0.2
done
bao_status_b() {
	printf '$ bao status -format=json | jq {initialized, sealed, storage_type}\n'
	BAO_ADDR="$RAFT_B_ADDR" BAO_CACERT="$DR/ca.pem" bao status -format=json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s.get(k) for k in ["initialized", "sealed", "storage_type"]}))'
}
bao_status_b
note "the snapshot brought cluster A's keyring: unseal with cluster A's unseal key (cluster B's own key no longer fits)"
printf '$ bao operator unseal <cluster B unseal key>\n'
BAO_ADDR="$RAFT_B_ADDR" BAO_CACERT="$DR/ca.pem" bao operator unseal "$(cat "$RAFT_B/unseal-key")" 2>&1 | grep -E "^(Sealed|Error|\*)" | head -n 3
printf '$ bao operator unseal <cluster A unseal key>\n'
BAO_ADDR="$RAFT_B_ADDR" BAO_CACERT="$DR/ca.pem" bao operator unseal "$(cat "$RAFT/unseal-key")" 2>&1 | grep -E "^(Sealed|Error)" | head -n 3
wait_active "$RAFT_B_ADDR"
bao_status_b
note "cluster B serves cluster A's data, tokens included: the node's token still logs in"
stop_provider "$DR/raft-node.pid"
note "stop cluster A; point the node at cluster B (openbao.address is not identity-bearing)"
kill "$(cat "$DR/raft-a.pid")"; rm -f "$DR/raft-a.pid"
sed -i "s#$RAFT_A_ADDR#$RAFT_B_ADDR#" "$RCONFIG"
run grep -n address: "$RCONFIG"
run bao-kms-provider verify-key --config "$RCONFIG"
run bao-kms-provider doctor --config "$RCONFIG"
run bao-kms-provider repin --config "$RCONFIG"
HASH="$("$BIN" repin --config "$RCONFIG" --output json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("stateHash") or "")')"
if [ -n "$HASH" ]; then
	run bao-kms-provider repin --config "$RCONFIG" --apply --expected-state-hash "$HASH"
fi
run bao-kms-provider verify-key --config "$RCONFIG"
start_provider "$RCONFIG" "$DR/raft-node.pid" "$RNODE/provider.log"
show_status "$RH"
printf '$ etcdctl get %s --print-value-only | kms-envelope open <demo>/dr/raft-node/run/kms.sock <seed file>\n' "$ETCD_KEY"
etcd_get "$ETCD_KEY" | kms-envelope open "$RNODE/run/kms.sock" "$DR/secret-b.seed" 2>&1
stop_provider "$DR/raft-node.pid"

echo
echo "drill done; stopping what it started (the demo keeps running)"
