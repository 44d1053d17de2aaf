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
#   4. The jwt auth mount and role the provider logs in with, bound to
#      that policy only.
#
# The JWT auth mount needs the issuer's verification keys once. Give one of
#   BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE  PEM public key(s) of the issuer
#   BAO_KMS_JWKS_URL                     the issuer's JWKS URL
#                                        (BAO_KMS_JWKS_CA_FILE: its CA, optional)
# or configure auth/k8s-workload-a-jwt/config yourself before running this.
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

# 4. JWT auth: mount, issuer keys, role.
AUTH_MOUNT='k8s-workload-a-jwt'
JWT_ROLE='kms-workload-a'
JWT_ISSUER='https://issuer.example.internal'
JWT_AUDIENCES='openbao'
JWT_SUBJECT='system:node:cp'
auth_type=$("$BAO" read -field=type "sys/auth/$AUTH_MOUNT" 2>/dev/null || true)
case "$auth_type" in
    jwt) say "jwt auth at auth/$AUTH_MOUNT exists" ;;
    "")
        "$BAO" auth enable -path="$AUTH_MOUNT" jwt >/dev/null
        say "enabled jwt auth at auth/$AUTH_MOUNT"
        ;;
    *) die "auth/$AUTH_MOUNT is a $auth_type auth mount, not jwt" ;;
esac
if [ -n "${BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE:-}" ]; then
    [ -f "$BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE" ] || die "BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE is not a file"
    "$BAO" write "auth/$AUTH_MOUNT/config" "jwt_validation_pubkeys=@$BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE" bound_issuer="$JWT_ISSUER" >/dev/null
    say "configured auth/$AUTH_MOUNT with the issuer's public keys"
elif [ -n "${BAO_KMS_JWKS_URL:-}" ]; then
    if [ -n "${BAO_KMS_JWKS_CA_FILE:-}" ]; then
        "$BAO" write "auth/$AUTH_MOUNT/config" jwks_url="$BAO_KMS_JWKS_URL" "jwks_ca_pem=@$BAO_KMS_JWKS_CA_FILE" bound_issuer="$JWT_ISSUER" >/dev/null
    else
        "$BAO" write "auth/$AUTH_MOUNT/config" jwks_url="$BAO_KMS_JWKS_URL" bound_issuer="$JWT_ISSUER" >/dev/null
    fi
    say "configured auth/$AUTH_MOUNT with the issuer's JWKS URL"
else
    "$BAO" read "auth/$AUTH_MOUNT/config" >/dev/null 2>&1 \
        || die "auth/$AUTH_MOUNT has no issuer keys; set BAO_KMS_JWT_VALIDATION_PUBKEYS_FILE or BAO_KMS_JWKS_URL"
    say "auth/$AUTH_MOUNT is already configured"
fi
"$BAO" write "auth/$AUTH_MOUNT/role/$JWT_ROLE" \
    role_type=jwt \
    bound_audiences="$JWT_AUDIENCES" \
    bound_subject="$JWT_SUBJECT" \
    user_claim=sub \
    token_ttl=30m \
    token_max_ttl=1h \
    token_no_default_policy=true \
    token_policies="$POLICY_NAME" >/dev/null
say "wrote role auth/$AUTH_MOUNT/role/$JWT_ROLE (policy $POLICY_NAME, token TTL 30m, max 1h)"
say "done; next on each control-plane node: node-setup.sh prepare"
