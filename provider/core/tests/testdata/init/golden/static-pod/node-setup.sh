#!/bin/sh
# Node setup for bao-kms-provider (static-pod model), written by
# `bao-kms-provider init` 0.1.0-test.
# Identity fingerprint: cfg1.iWfCItBef04qDNcnEXME76HSYDWTVfhtoTlg2YQpdPg
#
# Run as root on each control-plane node, from this directory, phase by phase:
#   prepare                                    users/groups, directories, tmpfiles, config.yaml
#   install --ca F ...                         the OpenBao CA and the login credentials, atomically
#   check                                      config, verify-key, doctor as the provider's user
#   start                                      start the provider (within 1 h of a passed check)
set -eu

# Prefix for every host path this script writes, like DESTDIR (tests and
# image builds); empty on a node.
R=${NODE_SETUP_ROOT:-}

MODEL=static-pod
FINGERPRINT=cfg1.iWfCItBef04qDNcnEXME76HSYDWTVfhtoTlg2YQpdPg
CONFIG_PATH='/etc/openbao-kms/config.yaml'
CONFIG_DIR='/etc/openbao-kms'
CA_FILE='/etc/openbao-kms/tls/ca.crt'
SOCKET_DIR='/run/openbao-kms'
HEALTH_URL='http://127.0.0.1:8082/ready'
RUN_USER='65532'
RUN_GROUP='65532'
SOCKET_GROUP='1234'
EC_DIR='/etc/kubernetes/openbao-kms'
TMPFILES_CONF='/etc/tmpfiles.d/openbao-kms-static-pod.conf'
STATIC_POD_DIR=/etc/kubernetes/manifests
SERVICE=bao-kms-provider.service
STAMP="$R$CONFIG_DIR/.node-setup-check"
CHECK_VALID_SECONDS=3600
READY_TIMEOUT_SECONDS=${READY_TIMEOUT_SECONDS:-180}
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)

say() { printf '%s\n' "node-setup: $*"; }
die() { printf '%s\n' "node-setup: $*" >&2; exit "${2:-1}"; }
need_root() { [ "$(id -u)" -eq 0 ] || die "run $1 as root"; }

usage() {
    cat <<USAGE
bao-kms-provider node setup ($MODEL model)
identity fingerprint: $FINGERPRINT

phases, in order:
  $0 prepare
  $0 install --ca <OpenBao CA PEM> --credential <JWT for the configured subject>
  $0 check
  $0 start
USAGE
}

# Copies $1 to $2 with owner $3:$4 and mode $5: a temporary file in the
# target directory, then one rename, so readers never see a partial file.
place() {
    tmp=$(mktemp "$(dirname -- "$2")/.node-setup.XXXXXX")
    if ! { cat -- "$1" >"$tmp" && chown "$3:$4" "$tmp" && chmod "$5" "$tmp"; }; then
        rm -f -- "$tmp"
        die "cannot write $2"
    fi
    mv -f -- "$tmp" "$2"
    say "placed $2 ($3:$4 $5)"
}

ensure_dir() {
    install -d -o "$2" -g "$3" -m "$4" -- "$1"
    chown "$2:$3" "$1"
    chmod "$4" "$1"
    say "directory $1 ($2:$3 $4)"
}

prepare() {
    need_root prepare
    say "numeric owners: provider $RUN_USER:$RUN_GROUP, socket group $SOCKET_GROUP (no host accounts)"
    ensure_dir "$R"'/etc/openbao-kms' root "$RUN_GROUP" 0750
    ensure_dir "$R"'/etc/openbao-kms/tls' root root 0755
    ensure_dir "$R"'/var/lib/openbao-kms' "$RUN_USER" "$RUN_GROUP" 0750
    ensure_dir "$R"'/var/lib/openbao-kms/credentials' root "$RUN_GROUP" 0750
    ensure_dir "$R"'/var/lib/openbao-kms/state' "$RUN_USER" "$RUN_GROUP" 0750
    ensure_dir "$R"'/etc/kubernetes/openbao-kms' root root 0755
    mkdir -p -- "$(dirname -- "$R$TMPFILES_CONF")"
    printf '%s\n' "# bao-kms-provider socket directory (written by node-setup.sh)" \
        "d $SOCKET_DIR 2750 $RUN_USER $SOCKET_GROUP -" >"$R$TMPFILES_CONF.tmp"
    mv -f -- "$R$TMPFILES_CONF.tmp" "$R$TMPFILES_CONF"
    chmod 0644 "$R$TMPFILES_CONF"
    say "wrote $R$TMPFILES_CONF"
    if [ -z "$R" ] && command -v systemd-tmpfiles >/dev/null 2>&1; then
        systemd-tmpfiles --create "$TMPFILES_CONF"
    fi
    ensure_dir "$R$SOCKET_DIR" "$RUN_USER" "$SOCKET_GROUP" 2750
    place "$HERE/config.yaml" "$R$CONFIG_PATH" root "$RUN_GROUP" 0640
    place "$HERE/encryption-config-readers.yaml" "$R$EC_DIR/encryption-config-readers.yaml" root root 0600
    place "$HERE/encryption-config.yaml" "$R$EC_DIR/encryption-config.yaml" root root 0600
    say "prepared; next: $0 install --ca <file> and the credential flags (run $0 for them)"
}

install_files() {
    need_root install
    ca='' credential=''
    while [ $# -gt 0 ]; do
        case "$1" in
            --ca) [ $# -ge 2 ] || die "--ca needs a file" 2; ca=$2; shift 2 ;;
            --credential) [ $# -ge 2 ] || die "--credential needs a file" 2; credential=$2; shift 2 ;;
            *) die "install: unknown argument $1" 2 ;;
        esac
    done
    [ -n "$ca" ] && [ -n "$credential" ] || die "install needs --ca <file> and --credential <file>" 2
    [ -f "$credential" ] || die "--credential $credential is not a file" 2
    [ -f "$ca" ] || die "$ca is not a file" 2
    grep -q -- '-----BEGIN CERTIFICATE-----' "$ca" || die "$ca contains no PEM certificate" 2
    place "$ca" "$R$CA_FILE" root root 0644
    place "$credential" "$R"'/var/lib/openbao-kms/credentials/identity.jwt' root "$RUN_GROUP" 0640
    say "installed; next: $0 check"
}

as_service_user() {
    setpriv --reuid="$RUN_USER" --regid="$RUN_GROUP" --groups="$SOCKET_GROUP" -- "$@"
}

check() {
    need_root check
    bin=${BAO_KMS_PROVIDER_BIN:-$(command -v bao-kms-provider || true)}
    [ -n "$bin" ] || die "bao-kms-provider is not on PATH; set BAO_KMS_PROVIDER_BIN to the host binary"
    rm -f -- "$STAMP"
    failed=0
    for cmd in config verify-key doctor; do
        say "$cmd:"
        if out=$(as_service_user "$bin" "$cmd" --config "$R$CONFIG_PATH" 2>&1); then rc=0; else rc=$?; fi
        printf '%s\n' "$out"
        if [ "$rc" -ne 0 ]; then
            failed=1
        fi
        case "$out" in
            *'[fail]'*) failed=1 ;;
        esac
    done
    [ "$failed" -eq 0 ] || die "check failed; fix the [fail] lines above and run check again" 4
    printf '%s %s\n' "$(date +%s)" "$FINGERPRINT" >"$STAMP"
    chmod 0600 "$STAMP"
    say "check passed; start within 1 h: $0 start"
}

wait_ready() {
    deadline=$(( $(date +%s) + READY_TIMEOUT_SECONDS ))
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$HEALTH_URL" 2>/dev/null || true)
        if [ "$code" = 200 ]; then
            say "$HEALTH_URL answers 200: the provider is ready"
            return 0
        fi
        [ "$(date +%s)" -lt "$deadline" ] || die "$HEALTH_URL did not answer 200 within ${READY_TIMEOUT_SECONDS}s (last: ${code:-none})" 5
        sleep 2
    done
}

start() {
    need_root start
    command -v curl >/dev/null 2>&1 || die "start waits for /ready with curl; install curl first"
    [ -f "$STAMP" ] || die "no passed check on record; run $0 check first"
    read -r passed_at passed_fp <"$STAMP" || die "cannot read $STAMP; run $0 check again"
    [ "$passed_fp" = "$FINGERPRINT" ] || die "the last check was for another configuration; run $0 check again"
    age=$(( $(date +%s) - passed_at ))
    [ "$age" -ge 0 ] && [ "$age" -le "$CHECK_VALID_SECONDS" ] || die "the last passed check is older than 1 h; run $0 check again"
    [ -d "$R$STATIC_POD_DIR" ] || die "$R$STATIC_POD_DIR does not exist: is this a kubeadm control-plane node?"
    place "$HERE/bao-kms-provider.yaml" "$R$STATIC_POD_DIR/bao-kms-provider.yaml" root root 0600
    wait_ready
}

case "${1:-}" in
    "") usage ;;
    prepare) prepare ;;
    install) shift; install_files "$@" ;;
    check) check ;;
    start) start ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
