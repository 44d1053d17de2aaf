#!/bin/sh
# OpenBao setup for bao-kms-provider, written by `bao-kms-provider init` 0.1.0-test.
# Identity fingerprint: cfg1.iWfCItBef04qDNcnEXME76HSYDWTVfhtoTlg2YQpdPg
#
# Run once by an OpenBao operator, from this directory's copy, with the
# operator's own session: BAO_ADDR (and BAO_CACERT) set, and a token in
# BAO_TOKEN or the bao token helper. No token is ever passed on a command
# line. Safe to run again: every step checks before it changes anything.
#
#   1. Transit at transit (enabled when absent; refused when another
#      engine is mounted there), with disable_upsert=true.
#   2. The key k8s-workload-a-etcd: aes256-gcm96, not exportable, no plaintext
#      backup (created when absent; an existing key with another profile is refused).
#   3. The policy openbao-kms-workload-a from openbao-policy.hcl.
#   4. The token auth mount and role the provider logs in with, bound to
#      that policy only.
#
# The node's token are written, mode 0600, into the directory
#   BAO_KMS_CREDENTIALS_OUT  (optional; never printed)
# when it is set and does not hold them yet; copy them to the node for
# node-setup.sh install, then delete them.
set -eu

BAO=${BAO_BIN:-bao}
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)

TRANSIT_MOUNT='transit'
KEY_NAME='k8s-workload-a-etcd'
POLICY_NAME='openbao-kms-workload-a'
OPENBAO_NAMESPACE=''

say() { printf '%s\n' "openbao-setup: $*"; }
die() { printf '%s\n' "openbao-setup: $*" >&2; exit 1; }

[ -n "${BAO_ADDR:-}" ] || die "set BAO_ADDR (and BAO_CACERT) to the OpenBao server first"
command -v "$BAO" >/dev/null 2>&1 || die "the bao CLI ($BAO) is not on PATH; set BAO_BIN"
[ -f "$HERE/openbao-policy.hcl" ] || die "openbao-policy.hcl is missing next to this script"
if [ -n "$OPENBAO_NAMESPACE" ]; then
    BAO_NAMESPACE=$OPENBAO_NAMESPACE
    export BAO_NAMESPACE
fi

# 1. Transit mount.
mount_type=$("$BAO" read -field=type "sys/mounts/$TRANSIT_MOUNT" 2>/dev/null || true)
case "$mount_type" in
    transit) say "transit mount $TRANSIT_MOUNT exists" ;;
    "")
        "$BAO" secrets enable -path="$TRANSIT_MOUNT" transit >/dev/null
        say "enabled transit at $TRANSIT_MOUNT"
        ;;
    *) die "$TRANSIT_MOUNT is a $mount_type mount, not transit; choose another transit.mountPath" ;;
esac
"$BAO" write "$TRANSIT_MOUNT/config/keys" disable_upsert=true >/dev/null
say "disable_upsert=true on $TRANSIT_MOUNT"

# 2. The key, with the safe profile only.
key_type=$("$BAO" read -field=type "$TRANSIT_MOUNT/keys/$KEY_NAME" 2>/dev/null || true)
if [ -z "$key_type" ]; then
    "$BAO" write "$TRANSIT_MOUNT/keys/$KEY_NAME" type=aes256-gcm96 exportable=false allow_plaintext_backup=false >/dev/null
    say "created key $KEY_NAME (aes256-gcm96)"
else
    [ "$key_type" = aes256-gcm96 ] || die "key $KEY_NAME exists with type $key_type; the provider needs aes256-gcm96"
    for field in exportable allow_plaintext_backup derived deletion_allowed; do
        value=$("$BAO" read -field="$field" "$TRANSIT_MOUNT/keys/$KEY_NAME")
        [ "$value" = false ] || die "key $KEY_NAME has $field=$value; the provider refuses it (recreate under a new name and lineage)"
    done
    say "key $KEY_NAME exists with the safe profile"
fi

# 3. Policy.
"$BAO" policy write "$POLICY_NAME" "$HERE/openbao-policy.hcl" >/dev/null
say "wrote policy $POLICY_NAME"

# 4. Token auth (development): a token role and a periodic orphan token.
TOKEN_ROLE='openbao-kms-workload-a'
"$BAO" write "auth/token/roles/$TOKEN_ROLE" \
    allowed_policies="$POLICY_NAME" \
    disallowed_policies=default \
    orphan=true \
    renewable=true \
    token_period=30m \
    token_no_default_policy=true >/dev/null
say "wrote token role auth/token/roles/$TOKEN_ROLE (policy $POLICY_NAME, period 30m, renewed by the provider)"
if [ -n "${BAO_KMS_CREDENTIALS_OUT:-}" ]; then
    [ -d "$BAO_KMS_CREDENTIALS_OUT" ] || die "BAO_KMS_CREDENTIALS_OUT is not a directory"
    write_secret() {
        name=$1
        shift
        target="$BAO_KMS_CREDENTIALS_OUT/$name"
        if [ -e "$target" ]; then
            say "$target exists; not replaced"
            return 0
        fi
        if ! (umask 077 && "$@" >"$target.tmp"); then
            rm -f -- "$target.tmp"
            die "cannot write $target"
        fi
        mv -f -- "$target.tmp" "$target"
        say "wrote $target (mode 0600)"
    }
    write_secret token "$BAO" write -field=token "auth/token/create/$TOKEN_ROLE" policies="$POLICY_NAME" no_default_policy=true
else
    say "for the node: bao write -field=token auth/token/create/$TOKEN_ROLE policies=$POLICY_NAME no_default_policy=true (or set BAO_KMS_CREDENTIALS_OUT)"
fi
say "done; next on each control-plane node: node-setup.sh prepare"
