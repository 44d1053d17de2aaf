#!/bin/sh
# Step 10: preload the provider image into containerd's Kubernetes namespace,
# so the kubelet can start the static pod without pulling.
#
#   10-preload-image.sh ARCHIVE IMAGE_REF_FILE
#
# ARCHIVE is the OCI image archive of the static-pod bundle, IMAGE_REF_FILE
# its image-ref.txt (one line: <repository>@sha256:<digest>). The archive's
# index.json manifests[0].digest must equal that digest, and the manifest
# blob in the archive must hash to it, before anything is imported. The
# image is imported as <repository>@sha256:<digest> and must then be listed.
# Running it again when the image is present changes nothing.
#
# Environment:
#   CTR            ctr command (default: ctr; e.g. "ctr --address /run/containerd/containerd.sock")
#   CTR_NAMESPACE  containerd namespace (default: k8s.io, the one the kubelet uses)
set -eu

prog=10-preload-image
log() { printf '%s: %s\n' "$prog" "$*"; }
die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}

if [ "$#" -ne 2 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
	echo "usage: $prog ARCHIVE IMAGE_REF_FILE" >&2
	exit 2
fi
archive=$1
ref_file=$2
CTR=${CTR:-ctr}
CTR_NAMESPACE=${CTR_NAMESPACE:-k8s.io}

[ -f "$archive" ] || die "$archive: no such file (the OCI image archive of the static-pod bundle)"
[ -f "$ref_file" ] || die "$ref_file: no such file (image-ref.txt of the static-pod bundle)"

ref=$(sed -n '1{s/[[:space:]]*$//;p;}' "$ref_file")
case $ref in
*@sha256:*) ;;
*) die "$ref_file: '$ref' is not pinned by digest (want <repository>@sha256:<64 hex digits>)" ;;
esac
repo=${ref%@sha256:*}
want=${ref##*@}
hex=${want#sha256:}
printf '%s\n' "$hex" | grep -Eqx '[0-9a-f]{64}' || die "$ref_file: '$want' is not a sha256 digest"
[ -n "$repo" ] || die "$ref_file: '$ref' has no repository"

# A member of the archive, with or without a leading ./
member() {
	tar -xOf "$archive" "$1" 2>/dev/null || tar -xOf "$archive" "./$1" 2>/dev/null
}

index=$(member index.json) || die "$archive: no index.json; not an OCI image archive"
got=$(printf '%s' "$index" | tr -d ' \t\r\n' | sed -n 's/.*"manifests":\[//p' |
	grep -Eo '"digest":"sha256:[0-9a-f]{64}"' | head -n 1 | sed 's/^"digest":"//; s/"$//') || true
[ -n "$got" ] || die "$archive: index.json has no manifests[0].digest"
[ "$got" = "$want" ] || die "$archive: manifest digest $got does not match $ref_file ($want); nothing imported"
blob=$(member "blobs/sha256/$hex" | sha256sum | cut -d ' ' -f 1)
[ "$blob" = "$hex" ] || die "$archive: blobs/sha256/$hex is missing or does not hash to $want; nothing imported"
log "archive manifest digest $want matches $ref_file"

listed() {
	# shellcheck disable=SC2086 # CTR may carry flags
	$CTR -n "$CTR_NAMESPACE" images ls -q | grep -Fqx "$ref"
}

if listed; then
	log "$ref already present in containerd namespace $CTR_NAMESPACE; nothing to do"
	exit 0
fi
# shellcheck disable=SC2086
$CTR -n "$CTR_NAMESPACE" images import --base-name "$repo" --digests "$archive" ||
	die "ctr images import failed for $archive"
listed || die "$ref is not listed in containerd namespace $CTR_NAMESPACE after the import"
log "imported $ref into containerd namespace $CTR_NAMESPACE"
