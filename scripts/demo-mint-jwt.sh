#!/usr/bin/env bash
# Mints the demo's identity JWT (RS256) with the demo issuer key, the way an
# external issuer would, and replaces the JWT file atomically. The provider
# reads the file at its next login; run this again to rotate the JWT.
#   scripts/demo-mint-jwt.sh [lifetime-seconds]   (default 86400)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# BAO_KMS_DEMO_DIR: where the demo lives (default <repo>/.demo).
DEMO="${BAO_KMS_DEMO_DIR:-$ROOT/.demo}"
ISSUER_DIR="$DEMO/issuer"
JWT_FILE="$DEMO/provider/credentials/identity.jwt"
LIFETIME="${1:-86400}"
ISSUER="https://issuer.demo.invalid"
AUDIENCE="openbao"
SUBJECT="system:openbao-kms:control-plane"

[ -f "$ISSUER_DIR/issuer.key" ] || { echo "demo-mint-jwt: run make demo first" >&2; exit 1; }

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

now="$(date +%s)"
header="$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)"
payload="$(printf '{"iss":"%s","aud":"%s","sub":"%s","iat":%d,"nbf":%d,"exp":%d}' \
	"$ISSUER" "$AUDIENCE" "$SUBJECT" "$now" "$now" "$((now + LIFETIME))" | b64url)"
signature="$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$ISSUER_DIR/issuer.key" -binary | b64url)"

tmp="$(mktemp "$JWT_FILE.XXXXXX")"
printf '%s.%s.%s\n' "$header" "$payload" "$signature" >"$tmp"
chmod 0640 "$tmp"
mv -f "$tmp" "$JWT_FILE"
echo "demo-mint-jwt: wrote $JWT_FILE (expires in ${LIFETIME}s)"
